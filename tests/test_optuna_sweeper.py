"""nn-runner's Optuna sweeper (hydra/sweeper=nn_optuna): its search-space syntax against hydra-optuna-sweeper's,
its sampler and pruner settings, its refusals through the real CLI, and real searches (basic and joblib launchers)
against real SQLite stores: Optuna's study and MLflow's runs."""

import json
import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import NN_RUN, runs_of
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from hydra_plugins.nn_runner_optuna_sweeper import _search, _search_space
from runner.sweep.optuna_settings import (
    SettingsError,
    make_pruner,
    make_sampler,
    open_storage,
    storage_url,
    study_name,
)
from runner.tracking import record

TINY = ["train.iterations=20", "train.log_every=10"]

# What hydra-optuna-sweeper 1.3 makes of each expression (its tests, plugins/hydra_optuna_sweeper/tests), in Optuna's
# current classes: UniformDistribution(a, b) -> FloatDistribution(a, b); LogUniformDistribution -> log=True;
# IntUniformDistribution -> IntDistribution; IntLogUniformDistribution -> IntDistribution(log=True);
# DiscreteUniformDistribution(a, b, q) -> FloatDistribution(a, b, step=q)
HYDRAS_MAPPING = [
    ("key=choice(1,2)", CategoricalDistribution([1, 2])),
    ("key=choice(true, false)", CategoricalDistribution([True, False])),
    ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
    ("key=shuffle(range(1,3))", CategoricalDistribution([1, 2])),  # Hydra's: the same set, in shuffled order
    ("key=range(1,3)", IntDistribution(1, 3)),
    ("key=range(1,10,3)", IntDistribution(1, 10, step=3)),
    ("key=interval(1, 5)", FloatDistribution(1, 5)),
    ("key=int(interval(1, 5))", IntDistribution(1, 5)),
    ("key=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True)),
    ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
    ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 5.5, step=1)),
    ("key=1,2,3", CategoricalDistribution([1, 2, 3])),
    ("key=choice([2],[4])", CategoricalDistribution(["[2]", "[4]"])),  # lists as their text, as Hydra's
    ("key=5", None),  # a fixed value
]


@pytest.mark.parametrize("expression, expected", HYDRAS_MAPPING, ids=[e for e, _ in HYDRAS_MAPPING])
def test_each_search_space_form_is_the_distribution_hydras_sweeper_makes_of_it(expression, expected):
    (override,) = OverridesParser.create().parse_overrides([expression])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecated distribution, no FutureWarning
        assert _search_space.distribution(override) == expected


def test_the_command_line_wins_over_params_and_a_trial_is_overrides_hydra_reads_back():
    space = _search_space.search_space(
        _search_space.params_arguments({"train.lr": "interval(0.1, 1)", "model.hidden": "choice([2],[4])"})
        + ["train.lr=tag(log, interval(0.01, 10))", "dataset.name=a\\,b,'x y'", "seed=3"])
    assert space.order == ["model.hidden", "train.lr", "dataset.name", "seed"]
    assert space.distributions["train.lr"] == FloatDistribution(0.01, 10, log=True)
    assert space.fixed == {"seed": "seed=3"}  # a fixed override goes to every job as it was given
    overrides = space.overrides({"model.hidden": "[4]", "train.lr": 0.1 + 0.2, "dataset.name": "a,b"})
    assert overrides == ["model.hidden=[4]", "train.lr=0.30000000000000004", "dataset.name='a,b'", "seed=3"]
    parsed = OverridesParser.create().parse_overrides(overrides)
    assert [o.value() for o in parsed] == [[4], 0.1 + 0.2, "a,b", 3]  # every bit of the float; a,b is no sweep


def test_the_grid_enumerates_a_discrete_space_and_refuses_a_continuous_one():
    space = _search_space.search_space(["a=choice(x,y)", "b=range(1,5,2)", "c=range(0.5,1.5,step=0.5)"])
    assert _search_space.grid(space) == {"a": ["x", "y"], "b": [1, 3, 5], "c": [0.5, 1.0, 1.5]}
    settings = {"direction": "minimize", "n_trials": 100, "n_jobs": 1, "max_failure_rate": 0.0, "params": None,
                "sampler": {"name": "grid", "seed": 1}, "pruner": {"name": "none"}}
    _, sampler, _, n_trials = _search.prepare(settings, ["a=choice(x,y)", "b=range(1,5,2)"])
    assert isinstance(sampler, optuna.samplers.GridSampler) and n_trials == 6  # each point once
    with pytest.raises(SettingsError, match=r"^d is searched over a continuous interval, which "):
        _search_space.grid(_search_space.search_space(["d=interval(0,1)"]))


@pytest.mark.parametrize("settings, cls, attributes", [
    ({"name": "tpe", "seed": 1, "n_startup_trials": 3, "n_ei_candidates": 5}, optuna.samplers.TPESampler,
     {"_n_startup_trials": 3, "_n_ei_candidates": 5}),
    ({"name": "random", "seed": 1}, optuna.samplers.RandomSampler, {}),
    ({"name": "cmaes", "seed": 1, "n_startup_trials": 2, "popsize": 6}, optuna.samplers.CmaEsSampler,
     {"_n_startup_trials": 2, "_popsize": 6}),
    ({"name": "qmc", "seed": 1, "qmc_type": "halton", "scramble": True}, optuna.samplers.QMCSampler,
     {"_qmc_type": "halton", "_scramble": True}),
    ({"name": "tpe", "seed": None, "multivariate": None}, optuna.samplers.TPESampler, {}),  # null: Optuna's default
])
def test_sampler_settings_build_the_sampler_with_them(settings, cls, attributes):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated argument (TPE's consider_prior and the like)
        warnings.simplefilter("error", DeprecationWarning)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # QMC is experimental
        sampler = make_sampler(settings)
    assert type(sampler) is cls
    assert {name: getattr(sampler, name) for name in attributes} == attributes


@pytest.mark.parametrize("settings, cls, attributes", [
    ({"name": "none"}, optuna.pruners.NopPruner, {}),
    ({"name": "median", "n_startup_trials": 2, "n_warmup_steps": 10}, optuna.pruners.MedianPruner,
     {"_n_startup_trials": 2, "_n_warmup_steps": 10}),
    ({"name": "percentile", "percentile": 25.0}, optuna.pruners.PercentilePruner, {"_percentile": 25.0}),
    ({"name": "successive_halving", "min_resource": 10, "reduction_factor": 3},
     optuna.pruners.SuccessiveHalvingPruner, {"_min_resource": 10, "_reduction_factor": 3}),
    ({"name": "hyperband", "min_resource": 10, "max_resource": 100}, optuna.pruners.HyperbandPruner,
     {"_min_resource": 10, "_max_resource": 100}),
])
def test_pruner_settings_build_the_pruner_with_them(settings, cls, attributes):
    pruner = make_pruner(settings)
    assert type(pruner) is cls
    assert {name: getattr(pruner, name) for name in attributes} == attributes


@pytest.mark.parametrize("build, settings, message", [
    (make_sampler, {"name": "bayes"},
     "hydra.sweeper.sampler.name=bayes is not allowed: must be one of tpe, random, grid, cmaes, qmc"),
    (make_sampler, {"name": "random", "n_startup_trials": 5}, "hydra.sweeper.sampler.n_startup_trials=5 is not "
     "allowed with hydra.sweeper.sampler.name=random: random takes seed"),
    (make_sampler, {"name": "qmc", "qmc_type": "lattice"},
     "hydra.sweeper.sampler.qmc_type=lattice is not allowed: must be one of sobol, halton"),
    (make_sampler, {"name": "tpe", "seed": -1}, "hydra.sweeper.sampler.seed=-1 is not allowed: must be >= 0"),
    (make_pruner, {"name": "percentile", "percentile": 150.0}, "hydra.sweeper.pruner.percentile=150.0 is not "
     "allowed: Percentile must be between 0 and 100 inclusive"),
    (make_pruner, {"name": "hyperband", "reduction_factor": 1},
     "hydra.sweeper.pruner.reduction_factor=1 is not allowed: must be >= 2"),
    (make_pruner, {"name": "none", "n_warmup_steps": 5},
     "hydra.sweeper.pruner.n_warmup_steps=5 is not allowed with hydra.sweeper.pruner.name=none: none takes no settings"),
])
def test_a_bad_setting_is_one_line_naming_key_value_and_what_is_allowed(build, settings, message):
    with pytest.raises(SettingsError) as refused:
        build(settings)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)  # Optuna's words may follow


def test_the_storage_is_the_sweep_folders_sqlite_file_unless_named_and_never_holds_a_password(tmp_path):
    assert storage_url({"storage": None}, "multirun/a", cwd=tmp_path) == f"sqlite:///{tmp_path}/multirun/a/optuna.db"
    assert storage_url({"storage": "postgresql://optuna@db/s"}, "x") == "postgresql://optuna@db/s"
    assert study_name({"study_name": None}, "multirun/a") == "multirun/a"
    assert study_name({"study_name": "lr"}, "multirun/a") == "lr"
    with pytest.raises(SettingsError, match=r"^hydra.sweeper.storage=optuna.db is not allowed: must be an Optuna RDB"):
        storage_url({"storage": "optuna.db"}, "x")


def test_a_trial_its_job_marked_pruned_is_told_pruned_with_its_last_reported_value(tmp_path):
    """The pruning contract: the job opens its trial (runner/sweep/pruning.py), reports, sets pruned_at_step, returns
    a value; the sweeper reads the attribute once the job returned and tells Optuna the trial was PRUNED."""
    from hydra.core.utils import JobReturn, JobStatus

    from runner.sweep.optuna_private import existing_trial

    sweeper = {"storage": None, "study_name": None, "pruner": {"name": "median", "n_startup_trials": 1}}
    (tmp_path / "sweep").mkdir()  # the sweep folder, which the sweeper makes
    study = optuna.create_study(storage=open_storage(storage_url(sweeper, "sweep", cwd=tmp_path)),
                                study_name=study_name(sweeper, "sweep"), pruner=make_pruner(sweeper["pruner"]))
    trials = [study.ask({"x": FloatDistribution(0, 1)}) for _ in range(3)]
    jobs = [existing_trial(open_storage(storage_url(sweeper, "sweep", cwd=tmp_path)), study_name(sweeper, "sweep"),
                           number, make_pruner(sweeper["pruner"]))[0] for number in (0, 1)]  # as a job opens it
    assert [job.number for job in jobs] == [0, 1] and jobs[1].params == trials[1].params  # each job's own trial
    jobs[0].report(0.5, step=10)
    study.tell(trials[0], 0.5)
    jobs[1].report(0.7, step=10)  # worse than the median of the finished trials at step 10
    assert jobs[1].should_prune()  # the search's pruner, in the job
    jobs[1].set_user_attr(record.PRUNED_AT_TAG, 10)

    attrs = _search.trial_attrs(study, trials[1:])  # what the sweeper reads once the jobs returned
    returned = [JobReturn(_return_value=0.6, status=JobStatus.COMPLETED),
                JobReturn(_return_value=0.3, status=JobStatus.COMPLETED)]
    outcomes = [_search.outcome(job, attrs[t.number]) for t, job in zip(trials[1:], returned)]
    assert outcomes == [(TrialState.PRUNED, None), (TrialState.COMPLETE, 0.3)]
    for trial, (state, value) in zip(trials[1:], outcomes):
        _search.tell(study, trial, value, state)
    assert [(t.state, t.value) for t in study.trials] == [
        (TrialState.COMPLETE, 0.5), (TrialState.PRUNED, 0.7), (TrialState.COMPLETE, 0.3)]
    failed = JobReturn(_return_value=ValueError("no"), status=JobStatus.FAILED)
    assert _search.outcome(failed, {}) == (TrialState.FAIL, None)
    assert _search.outcome(JobReturn(_return_value=float("nan"), status=JobStatus.COMPLETED), {}) == (
        TrialState.FAIL, None)


def nn_run_m(cwd, *args):
    return subprocess.run([*NN_RUN, "-m", "hydra/sweeper=nn_optuna", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args, message", [
    (["hydra.sweeper.sampler.name=bayes"],
     "hydra.sweeper.sampler.name=bayes is not allowed: must be one of tpe, random, grid, cmaes, qmc"),
    (["train.lr=tag(log,interval(-1,1))"],
     "train.lr=tag(log,interval(-1,1)) is not allowed: tag(log, ...) needs a lower bound > 0, not -1.0"),
    (["hydra.sweeper.storage=postgresql://optuna:secret@db/s"],
     "hydra.sweeper.storage='postgresql://***@db/s' is not allowed: a password in it would be written into Hydra's "
     "files; give it as the database's client reads it (PostgreSQL: PGPASSWORD or ~/.pgpass), and use "
     "hydra.sweeper.storage='postgresql://db/s'"),
], ids=["sampler", "search space", "storage password"])
def test_a_bad_value_stops_the_search_in_one_line_before_any_run_or_folder(tmp_path, args, message):
    done = nn_run_m(tmp_path, "train.lr=interval(0.1,1)", *args, "tracking.uri=sqlite:///store.db", *TINY)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"nn-run: the sweep cannot start: {message}"]
    assert "secret" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no store (so no parent run), no sweep folder


def search(tmp_path, client, uri, experiment, *args):
    """A 4-trial search over lr and activation, with TPE past its 2 random startup trials; its parent, its
    children by trial number, its sweep folder and its study's trials."""
    done = nn_run_m(tmp_path, "hydra.sweeper.n_trials=4", "hydra.sweeper.sampler.seed=7",
                    "hydra.sweeper.sampler.n_startup_trials=2", "train.lr=tag(log,interval(0.1,10))",
                    "model.activation=choice(sigmoid,tanh)", f"tracking.uri={uri}", f"tracking.experiment={experiment}",
                    *TINY, *args)
    assert done.returncode == 0, done.stderr
    runs = runs_of(client, experiment)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {int(r.data.tags[record.TRIAL_NUMBER_TAG]): r for r in runs if r is not parent}
    assert len(runs) == 5 and all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children.values())
    sweep_dir = Path(parent.data.tags[record.SWEEP_DIR_TAG])
    study = optuna.load_study(storage=f"sqlite:///{sweep_dir}/optuna.db", study_name=None)
    return parent, children, sweep_dir, study.trials


@pytest.mark.slow
def test_a_seeded_search_gives_the_same_trials_bit_for_bit_on_the_basic_and_the_joblib_launcher(
        tmp_path, client, tracking_uri, experiment):
    """Two trials asked at a time (hydra.sweeper.n_jobs=2): one after the other in the sweep's process, then in two
    joblib workers at once; the sampler sees the same asks and tells, so the searches are the same."""
    first, second = tmp_path / "basic", tmp_path / "joblib"
    first.mkdir(), second.mkdir()
    parent, children, sweep_dir, trials = search(first, client, tracking_uri, f"{experiment}-basic",
                                                 "hydra.sweeper.n_jobs=2")
    in_workers, by_trial, joblib_dir, again = search(second, client, tracking_uri, f"{experiment}-joblib",
                                                     "hydra.sweeper.n_jobs=2", "hydra/launcher=joblib",
                                                     "hydra.launcher.n_jobs=2")
    assert [(t.number, t.params, t.value, t.state) for t in trials] == [
        (t.number, t.params, t.value, t.state) for t in again]
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 4 and len({t.params["train.lr"] for t in trials}) == 4
    assert in_workers.data.tags[record.LAUNCHER_TAG] == "joblib" and parent.data.tags[record.LAUNCHER_TAG] == "basic"

    for top, runs, folder in ((parent, children, sweep_dir), (in_workers, by_trial, joblib_dir)):
        assert top.info.status == "FINISHED" and top.data.tags[record.SWEEPER_TAG] == "nn_optuna"
        assert json.loads(top.data.tags[record.SWEPT_KEYS_TAG]) == ["train.lr", "model.activation"]
        assert sorted(runs) == [0, 1, 2, 3]  # one child per trial, tagged with its number
        for trial in trials:  # its params; its final error is the trial's value; its job number is the trial's
            child = runs[trial.number]
            assert float(child.data.params["train.lr"]) == trial.params["train.lr"]
            assert child.data.params["model.activation"] == trial.params["model.activation"]
            assert child.data.metrics[record.final_metric(record.ERROR_METRIC)] == trial.value
            assert child.data.tags[record.HYDRA_OUTPUT_DIR_TAG] == str(folder / str(trial.number))
        best = min(trials, key=lambda t: t.value)
        results = yaml.safe_load((folder / "optimization_results.yaml").read_text())
        assert results == {"name": "optuna", "best_params": best.params, "best_value": best.value,
                           "best_trial": best.number}


def test_the_sweeper_is_a_hydra_plugin_whose_scan_imports_no_optuna():
    code = ("import sys; from hydra.core.plugins import Plugins; from hydra.plugins.sweeper import Sweeper; "
            "names = {p.__name__ for p in Plugins.instance().discover(Sweeper)}; "
            "print('NnOptunaSweeper' in names, 'optuna' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["True", "False"], done.stderr


@pytest.mark.slow
def test_the_search_stops_once_more_than_max_failure_rate_of_its_trials_failed(tmp_path, client, tracking_uri,
                                                                                experiment):
    # every trial is refused (lr must be > 0): 1 of 3 failed is not more than 0.5 of 3; 2 of 3 is
    done = nn_run_m(tmp_path, "hydra.sweeper.n_trials=3", "hydra.sweeper.max_failure_rate=0.5", "train.lr=choice(-1)",
                    f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}", *TINY)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == ("nn-run: the sweep stopped: ConfigError: train.lr=-1.0 is not allowed: "
                                            "must be a finite number > 0")
    (sweep_dir,) = tmp_path.glob("multirun/*/*")
    trials = optuna.load_study(storage=f"sqlite:///{sweep_dir}/optuna.db", study_name=None).trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    (parent,) = runs_of(client, experiment)  # the refused jobs have no run; the parent names them
    assert parent.info.status == "FAILED" and parent.data.metrics[record.JOBS_REJECTED_METRIC] == 2
    assert not (sweep_dir / "optimization_results.yaml").exists()


@pytest.mark.slow
def test_a_named_study_in_a_named_storage_is_continued_by_the_next_search(tmp_path, client, tracking_uri,
                                                                           experiment):
    storage = f"sqlite:///{tmp_path}/studies.db"
    for _ in range(2):
        done = nn_run_m(tmp_path, "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage={storage}",
                        "hydra.sweeper.study_name=lr", "hydra.sweeper.sampler.seed=1", "train.lr=interval(0.1,4)",
                        f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}", *TINY)
        assert done.returncode == 0, done.stderr
    trials = optuna.load_study(storage=storage, study_name="lr").trials
    assert [(t.number, t.state) for t in trials] == [(0, TrialState.COMPLETE), (1, TrialState.COMPLETE)]
    children = [r for r in runs_of(client, experiment) if "mlflow.parentRunId" in r.data.tags]
    # the second search's trial is number 1, and so is its job (its folder, its tag)
    assert sorted((r.data.tags[record.TRIAL_NUMBER_TAG], Path(r.data.tags[record.HYDRA_OUTPUT_DIR_TAG]).name)
                  for r in children) == [("0", "0"), ("1", "1")]
    assert not list(tmp_path.glob("multirun/*/*/optuna.db"))  # the named storage, not the sweep folder's file

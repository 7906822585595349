"""A search run by worker jobs (hydra.sweeper.workers=N) sharing one study: real `nn-run -m` processes, submitit's
local executor (real processes, real pickling of the worker loop), a real MLflow SQLite store, Optuna's SQLite study.
The same on a real Slurm, with a worker preempted (USR2): tests/test_search_workers_slurm.py."""

import subprocess

import optuna
import pytest
from conftest import NN_RUN, runs_of
from optuna.trial import TrialState

from hydra_plugins.nn_runner_optuna_sweeper._search import OWNER_ATTR
from hydra_plugins.nn_runner_optuna_sweeper._workers import LAUNCH_KEY, WORKER_KEY
from runner.tracking import record

# uneven trials on the seed table: a few hundred to several thousand iterations
UNEVEN = ["train.iterations=choice(300,1000,3000,6000)", "train.log_every=300", "train.lr=tag(log,interval(0.1,10))"]


def nn_run_m(cwd, *args, timeout=300):
    return subprocess.run([*NN_RUN, "-m", "hydra/sweeper=nn_optuna", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_child_per_trial(client, experiment, trials):
    """One parent FINISHED; each trial exactly one FINISHED child run under it, with the trial's params and value."""
    runs = runs_of(client, experiment)
    (parent,) = [r for r in runs if record.SWEEP_ID_TAG in r.data.tags]
    children = [r for r in runs if r is not parent]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == len(trials)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert all(r.info.status == "FINISHED" for r in children)
    by_number = {int(r.data.tags[record.TRIAL_NUMBER_TAG]): r for r in children}
    assert len(children) == len(by_number) == len(trials) and sorted(by_number) == [t.number for t in trials]
    for trial in trials:
        run = by_number[trial.number]
        assert run.data.params["train.iterations"] == str(trial.params["train.iterations"])
        assert float(run.data.params["train.lr"]) == trial.params["train.lr"]
        assert run.data.metrics[record.final_metric(record.ERROR_METRIC)] == trial.value
    return parent, by_number


@pytest.mark.slow
def test_three_submitit_local_workers_fill_the_study_with_one_child_run_per_trial(tmp_path, tracking_uri,
                                                                                  experiment, client):
    done = nn_run_m(tmp_path, "hydra/launcher=submitit_local", "hydra.sweeper.workers=3", "hydra.sweeper.n_trials=7",
                    "hydra.sweeper.sampler.name=random", "hydra.sweeper.sampler.seed=5", "hydra.sweep.dir=search",
                    f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}", *UNEVEN)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = optuna.load_study(storage=f"sqlite:///{tmp_path / 'search' / 'optuna.db'}", study_name="search").trials
    assert [t.number for t in trials] == list(range(7)) and {t.state for t in trials} == {TrialState.COMPLETE}
    owners = [t.system_attrs[OWNER_ATTR] for t in trials]
    assert len({o[LAUNCH_KEY] for o in owners}) == 1 and {o[WORKER_KEY] for o in owners} <= {0, 1, 2}
    assert len({(o[WORKER_KEY], o["pid"]) for o in owners}) == len({o[WORKER_KEY] for o in owners})  # a process each
    parent, children = assert_one_child_per_trial(client, experiment, trials)
    # each trial in its own job folder (hydra.job.num = its number); the workers in theirs
    assert {run.data.tags[record.HYDRA_OUTPUT_DIR_TAG] for run in children.values()} == {
        str(tmp_path / "search" / str(n)) for n in range(7)}
    assert sorted(p.name for p in (tmp_path / "search" / "workers").iterdir()) == ["0", "1", "2"]
    # three submitit jobs, one array; the worker lines in their logs
    logs = "".join(p.read_text() for p in (tmp_path / "search" / ".submitit").glob("*/*_log.out"))
    assert sorted(int(line.split(" trials, ")[0].rsplit(": ", 1)[1]) for line in logs.splitlines()
                  if " trials, the study holds 7" in line) == sorted(
        sum(1 for o in owners if o[WORKER_KEY] == w) for w in range(3))
    best = min(trials, key=lambda t: t.value)
    assert (tmp_path / "search" / "optimization_results.yaml").read_text().count(f"best_trial: {best.number}") == 1


@pytest.mark.parametrize("args, message", [
    (["hydra/launcher=joblib", "hydra.sweeper.workers=-1"],
     "hydra.sweeper.workers=-1 is not allowed: must be null or 0 (batches of n_jobs) or the number of worker jobs (>= 1)"),
    (["hydra.sweeper.workers=2"],
     "hydra.sweeper.workers=2 is not allowed with hydra/launcher=basic: workers run as jobs at the same time, on "
     "submitit_local, submitit_slurm, joblib"),
    (["hydra/launcher=batched", "hydra.sweeper.workers=2"],
     "hydra.sweeper.workers=2 is not allowed with hydra/launcher=batched: workers run as jobs at the same time, on "
     "submitit_local, submitit_slurm, joblib"),
], ids=["negative", "basic", "batched"])
def test_a_bad_workers_value_stops_the_search_in_one_line_before_any_run_or_folder(tmp_path, args, message):
    done = nn_run_m(tmp_path, "train.lr=interval(0.1,1)", *args, "tracking.uri=sqlite:///store.db",
                    "train.iterations=20")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"nn-run: the sweep cannot start: {message}"]
    assert list(tmp_path.iterdir()) == []  # no store (so no parent run), no sweep folder

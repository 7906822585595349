"""Sweeps through the real CLI (`nn-run -m`) and Hydra's real launchers, against real SQLite stores.

Every sweep is one parent run with one child run per job; the parent ends FINISHED only when
every child finished, and carries the counts.
"""

import getpass
import json
import math
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import NN_RUN, compose_config, interrupt_after, runs_of

from runner.data.datasets import load_dataset
from runner.nn.network import init_weights, layer_sizes
from runner.nn.training import train
from runner.sweep.callback import SWEEP_FILE
from runner.tracking import record, run_owner

TINY = ["train.iterations=20", "train.log_every=10"]  # three error points per run: steps 0, 10, 20
ENDLESS = ["train.iterations=100000000", "train.log_every=20000"]  # runs until interrupted


def nn_run_m(cwd, uri, experiment, *args, timeout=300, env=None):
    """`nn-run -m ARGS` in a subprocess, logging to `uri`/`experiment`; `env` adds environment variables."""
    command = [*NN_RUN, "-m", *args, f"tracking.uri={uri}", f"tracking.experiment={experiment}"]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=None if env is None else {**os.environ, **env})


def sweep_of(client, experiment):
    """(parent, children) of the one sweep logged in `experiment`."""
    runs = runs_of(client, experiment)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, [r.info.run_name for r in parents]
    (parent,) = parents
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == len(runs) - 1  # nothing else in the experiment
    return parent, children


def final_error(client, run):
    history = sorted(client.get_metric_history(run.info.run_id, record.ERROR_METRIC), key=lambda m: m.step)
    return history[-1].value


def test_grid_sweep_is_one_parent_with_a_child_per_job(tmp_path, tracking_uri, experiment, client):
    args = ["train.lr=0.5,2", "model.hidden=[3],[5]", *TINY]
    done = nn_run_m(tmp_path, tracking_uri, experiment, *args)
    assert done.returncode == 0, done.stderr
    parent, children = sweep_of(client, experiment)

    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "sweep over train.lr, model.hidden"
    tags = parent.data.tags
    assert json.loads(tags[record.SWEPT_KEYS_TAG]) == ["train.lr", "model.hidden"]
    assert json.loads(tags[record.OVERRIDES_TAG]) == [*args, f"tracking.uri={tracking_uri}",
                                                      f"tracking.experiment={experiment}"]
    assert tags["launcher"] == "basic" and tags["sweeper"] == "basic"
    sweep_dir = Path(tags[record.SWEEP_DIR_TAG])
    assert sweep_dir.is_relative_to(tmp_path)  # Hydra's multirun folder, beside the user
    written = json.loads((sweep_dir / SWEEP_FILE).read_text())
    assert written == {"sweep_id": tags[record.SWEEP_ID_TAG], "experiment_id": parent.info.experiment_id,
                       "parent_run_id": parent.info.run_id}

    # MLflow's context tags ("Created by", "Source"): the command that started the sweep, on every run of it
    context = ("mlflow.user", "mlflow.source.name", "mlflow.source.type")
    assert tags["mlflow.user"] == getpass.getuser() and tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"].endswith("runner/__main__.py")  # python -m runner, as NN_RUN starts it
    assert all([c.data.tags[key] for key in context] == [tags[key] for key in context] for c in children)
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"

    assert len(children) == 4
    assert {(c.data.params["train.lr"], c.data.params["model.hidden"]) for c in children} == {
        ("0.5", "[3]"), ("0.5", "[5]"), ("2.0", "[3]"), ("2.0", "[5]")}
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.info.experiment_id == parent.info.experiment_id
        assert child.data.params["train.iterations"] == "20" and child.data.params["seed"] == "1"
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, record.ERROR_METRIC))
        assert steps == [0, 10, 20]
        files = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {record.PREDICTIONS_FILE, record.CONFIG_FILE, record.OVERRIDES_FILE, record.WEIGHTS_DIR} <= files
        # the same content as a single run: the weights of this config, trained here independently
        lr, hidden = float(child.data.params["train.lr"]), json.loads(child.data.params["model.hidden"])
        data = load_dataset("seed")
        initial = init_weights(layer_sizes(3, hidden, 1), np.random.RandomState(1))
        expected = train(initial, data.X, data.y, iterations=20, log_every=10, lr=lr)
        assert child.data.tags[record.WEIGHTS_HASH_TAG] == record.weights_sha256(expected.weights)
        assert final_error(client, child) == expected.errors[-1]

    errors = [final_error(client, c) for c in children]
    assert parent.data.metrics == {record.CHILDREN_FINISHED_METRIC: 4, record.CHILDREN_FAILED_METRIC: 0,
                                   record.JOBS_REJECTED_METRIC: 0, record.JOBS_NOT_RUN_METRIC: 0,
                                   record.BEST_ERROR_METRIC: min(errors)}
    # the ranking is printed and logged to the parent when the sweep ends
    assert "4 runs ranked by final error" in done.stdout
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {record.COMPARISON_FILE,
                                                                           record.COMPARISON_PLOT}


@pytest.mark.slow
def test_jobs_in_joblib_workers_carry_the_sweep_commands_context(tmp_path, tracking_uri, experiment, client):
    """A worker's own script (loky's) is not what the UI should show as the child's source: the sweep's command is."""
    done = nn_run_m(tmp_path, tracking_uri, experiment, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                    "seed=1,2", *TINY, "tracking.log_model=false")
    assert done.returncode == 0, done.stderr
    parent, children = sweep_of(client, experiment)
    context = ("mlflow.user", "mlflow.source.name", "mlflow.source.type")
    assert parent.data.tags["mlflow.source.name"].endswith("runner/__main__.py")
    assert len(children) == 2
    assert all([c.data.tags[key] for key in context] == [parent.data.tags[key] for key in context] for c in children)
    assert parent.data.tags[run_owner.PID_TAG] not in {c.data.tags[run_owner.PID_TAG] for c in children}  # workers


@pytest.mark.slow
def test_parallel_sweep_on_a_fresh_store_keeps_every_run_in_its_experiment(tmp_path, experiment):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/fresh.db"  # no tables yet: the sweep's parent process creates them
    done = nn_run_m(tmp_path, uri, experiment, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                    "seed=range(1,9)", *TINY)
    assert done.returncode == 0, done.stderr
    client = MlflowClient(uri)
    parent, children = sweep_of(client, experiment)
    assert parent.data.tags["launcher"] == "joblib"
    assert sorted(int(c.data.params["seed"]) for c in children) == list(range(1, 9))
    assert [c.info.status for c in children] == ["FINISHED"] * 8
    assert parent.info.status == "FINISHED" and parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == 8
    everywhere = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(everywhere) == 9  # none in "Default" or anywhere else


def test_rejected_job_has_no_run_and_fails_the_parent_with_the_count(tmp_path, tracking_uri, experiment, client):
    done = nn_run_m(tmp_path, tracking_uri, experiment, "train.lr=0.5,-1,2", *TINY)
    assert done.returncode != 0  # Hydra's sweeper re-raises the failed job's error once the batch is done
    assert "train.lr=-1.0 is not allowed: must be a finite number > 0" in done.stderr
    parent, children = sweep_of(client, experiment)
    assert sorted(c.data.params["train.lr"] for c in children) == ["0.5", "2.0"]  # the others went on
    assert [c.info.status for c in children] == ["FINISHED"] * 2
    assert parent.info.status == "FAILED"
    assert parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == 2
    assert parent.data.metrics[record.CHILDREN_FAILED_METRIC] == 0
    assert parent.data.metrics[record.JOBS_REJECTED_METRIC] == 1
    assert parent.data.tags[f"{record.REJECTED_TAG_PREFIX}1"] == (  # job 1, named as its run would have been
        "train.iterations=20,train.log_every=10,train.lr=-1: train.lr=-1.0 is not allowed: must be a finite number > 0")


def test_job_that_fails_in_training_is_failed_and_the_others_finish(tmp_path, tracking_uri, experiment, client):
    # relu with a step of 1e300 overflows the weights to inf/NaN in the first update: DivergenceError
    done = nn_run_m(tmp_path, tracking_uri, experiment, "model.activation=relu", "train.lr=0.5,1,2,1e300", *TINY)
    assert done.returncode != 0
    parent, children = sweep_of(client, experiment)
    by_lr = {float(c.data.params["train.lr"]): c for c in children}
    assert sorted(by_lr) == [0.5, 1.0, 2.0, 1e300]
    diverged = by_lr.pop(1e300)
    assert diverged.info.status == "FAILED" and diverged.data.tags["error"]
    history = client.get_metric_history(diverged.info.run_id, record.ERROR_METRIC)
    assert [m.step for m in history if math.isfinite(m.value)][:1] == [0]  # the points taken before it failed
    assert [c.info.status for c in by_lr.values()] == ["FINISHED"] * 3
    assert parent.info.status == "FAILED"
    assert parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == 3
    assert parent.data.metrics[record.CHILDREN_FAILED_METRIC] == 1


def test_ctrl_c_kills_the_running_child_and_the_parent(tmp_path, tracking_uri, experiment, client):
    returncode, _ = interrupt_after([*NN_RUN, "-m", "seed=1,2", *ENDLESS, f"tracking.uri={tracking_uri}",
                                     f"tracking.experiment={experiment}"], tmp_path, "step 20000: error")
    assert returncode == 130
    parent, children = sweep_of(client, experiment)
    (child,) = children  # the second job never started
    assert child.info.status == "KILLED" and child.data.params["seed"] == "1"
    assert parent.info.status == "KILLED"
    assert parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == 0
    assert parent.data.metrics[record.CHILDREN_FAILED_METRIC] == 1


def test_sigterm_before_any_job_has_a_run_ends_the_parent_killed(tmp_path, tracking_uri, experiment, client):
    # the signal lands as the first job starts: before or just after its run exists, the sweep was
    # stopped, not failed (before, the parent ended FAILED when no child had been KILLED)
    returncode, rest = interrupt_after([*NN_RUN, "-m", "seed=1,2", *ENDLESS, f"tracking.uri={tracking_uri}",
                                        f"tracking.experiment={experiment}"], tmp_path, "Launching 2 jobs locally",
                                       signal.SIGTERM)
    assert returncode == 130 and "nn-run: interrupted" in rest
    parent, children = sweep_of(client, experiment)
    assert parent.info.status == "KILLED"
    assert [c.info.status for c in children] in ([], ["KILLED"])
    assert parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == 0


@pytest.mark.slow
def test_optuna_search_minimises_the_final_error_with_a_child_per_trial(tmp_path, tracking_uri, experiment, client):
    done = nn_run_m(tmp_path, tracking_uri, experiment, "hydra/sweeper=nn_optuna", "hydra.sweeper.n_trials=4",
                    "hydra.sweeper.sampler.seed=1", "train.lr=interval(0.1,4)", *TINY)
    assert done.returncode == 0, done.stderr
    parent, children = sweep_of(client, experiment)
    assert parent.info.status == "FINISHED" and parent.data.tags["sweeper"] == "nn_optuna"
    assert json.loads(parent.data.tags[record.SWEPT_KEYS_TAG]) == ["train.lr"]
    lrs = [float(c.data.params["train.lr"]) for c in children]
    assert len(children) == 4 and len(set(lrs)) == 4 and all(0.1 <= lr <= 4 for lr in lrs)
    # what Optuna minimised is what the runs logged as their final error
    results = yaml.safe_load((Path(parent.data.tags[record.SWEEP_DIR_TAG]) / "optimization_results.yaml").read_text())
    errors = {float(c.data.params["train.lr"]): final_error(client, c) for c in children}
    assert results["best_value"] == min(errors.values())
    assert errors[results["best_params"]["train.lr"]] == results["best_value"]


@pytest.mark.slow
def test_submitit_local_runs_the_jobs_in_their_own_processes(tmp_path, tracking_uri, experiment, client):
    done = nn_run_m(tmp_path, tracking_uri, experiment, "hydra/launcher=submitit_local", "seed=1,2", *TINY)
    assert done.returncode == 0, done.stderr
    parent, children = sweep_of(client, experiment)
    assert parent.info.status == "FINISHED" and parent.data.tags["launcher"] == "submitit_local"
    assert sorted(c.data.params["seed"] for c in children) == ["1", "2"]
    assert [c.info.status for c in children] == ["FINISHED"] * 2
    job_logs = list((Path(parent.data.tags[record.SWEEP_DIR_TAG]) / ".submitit").rglob("*_log.out"))
    assert len(job_logs) == 2  # submitit ran each job as its own process and kept its log


def test_sweeping_the_store_or_experiment_is_refused_before_any_run(tmp_path):
    done = subprocess.run([*NN_RUN, "-m", "tracking.experiment=a,b", "tracking.uri=sqlite:///store.db", *TINY],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip() == ("nn-run: the sweep cannot start: tracking.experiment=a,b is not allowed: "
                                   "one sweep logs to one store and one experiment")
    assert not (tmp_path / "store.db").exists()


def test_the_launcher_check_builds_hydras_own_basic_launcher_and_names_an_unknown_one():
    """hydra-core 1.3.7+ refuses the basic launcher's class (hydra._internal) in hydra.utils.instantiate."""
    from omegaconf import OmegaConf

    from runner.config import ConfigError
    from runner.sweep.callback import _check_launcher

    _check_launcher(OmegaConf.create({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}))
    with pytest.raises(ConfigError, match=r"^hydra.launcher._target_=no.such.Launcher is not an installed Hydra "
                                          r"launcher; installed: .*hydra_plugins.hydra_joblib_launcher"):
        _check_launcher(OmegaConf.create({"_target_": "no.such.Launcher"}))


def test_without_the_sweep_callback_jobs_refuse_to_log(tmp_path):
    command = [*NN_RUN, "-m", "seed=1,2", "~hydra.callbacks.sweep_tracking", "tracking.uri=sqlite:///store.db", *TINY]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert "the sweep callback runner.sweep.callback.SweepTracking must be registered under hydra.callbacks" in done.stderr
    assert not (tmp_path / "store.db").exists()  # no run anywhere, not even a store


EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
NAMES = sorted(p.stem for p in EXPERIMENTS.glob("*.yaml"))


def test_experiments_are_listed_by_help():
    assert {"seed", "lr_sweep", "hidden_sweep", "seed_robustness", "optuna_search"} <= set(NAMES)
    done = subprocess.run([*NN_RUN, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    listed = next(line for line in done.stdout.splitlines() if line.startswith("experiment: "))
    assert listed.removeprefix("experiment: ").split(", ") == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_experiment_files_say_their_question_and_comment_every_line(name):
    lines = (EXPERIMENTS / f"{name}.yaml").read_text().splitlines()
    assert lines[0] == "# @package _global_" and lines[1].startswith("# Question: ")
    for line in lines[2:]:
        if line.strip() and not line.lstrip().startswith("#"):
            assert " # " in line, f"{name}.yaml: no comment on {line!r}"


def test_seed_experiment_is_the_default_config():
    assert compose_config("experiment=seed") == compose_config()


@pytest.mark.slow
def test_the_optuna_search_preset_scores_trials_on_the_validation_split_and_prunes(tmp_path, tracking_uri, experiment,
                                                                                   client):
    # experiments/optuna_search.yaml as shipped, fewer trials: its median pruner waits for 5 completed trials
    done = nn_run_m(tmp_path, tracking_uri, experiment, "experiment=optuna_search", "hydra.sweeper.n_trials=12")
    assert done.returncode == 0, done.stderr
    parent, children = sweep_of(client, experiment)
    assert parent.data.tags[record.OBJECTIVE_TAG] == "val_error" and len(children) == 12
    pruned = [c for c in children if record.PRUNED_AT_TAG in c.data.tags]
    assert 0 < len(pruned) < 12 and parent.data.metrics[record.TRIALS_PRUNED_METRIC] == len(pruned)
    for child in pruned:  # stopped before the last step, its points up to the pruning step
        step = int(child.data.tags[record.PRUNED_AT_TAG])
        assert 500 <= step < 2000
        assert max(m.step for m in client.get_metric_history(child.info.run_id, "val_error")) == step
    completed = [c for c in children if c not in pruned]
    best = min(completed, key=lambda c: c.data.metrics["final_val_error"])
    results = yaml.safe_load((next(tmp_path.glob("multirun/*/*/optimization_results.yaml"))).read_text())
    assert results["best_value"] == best.data.metrics["final_val_error"]
    assert f"best by val_error: run {best.info.run_id}" in done.stdout + done.stderr


@pytest.mark.parametrize("name, key, values", [
    ("lr_sweep", "train.lr", "0.1,0.3,1,3,10,30"),
    ("hidden_sweep", "model.hidden", "[2],[4],[8],[16],[4,4]"),
    ("seed_robustness", "seed", "range(1,21)"),
])
def test_sweep_experiments_define_their_sweep(name, key, values):
    from hydra import compose, initialize_config_dir

    from runner.config import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=[f"experiment={name}"], return_hydra_config=True)
    assert dict(cfg.hydra.sweeper.params) == {key: values}


@pytest.mark.slow
def test_named_sweep_runs_from_any_working_directory(tmp_path, tracking_uri, experiment, client):
    done = nn_run_m(tmp_path, tracking_uri, experiment, "experiment=lr_sweep", *TINY)
    assert done.returncode == 0, done.stderr
    parent, children = sweep_of(client, experiment)
    assert parent.info.run_name == "lr_sweep: sweep over train.lr"
    assert sorted(float(c.data.params["train.lr"]) for c in children) == [0.1, 0.3, 1, 3, 10, 30]
    assert {c.data.params["train.iterations"] for c in children} == {"20"}  # the command line wins

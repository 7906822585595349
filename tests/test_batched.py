"""Batched sweeps: K networks trained as stacked arrays, against runner.nn.training.train as the oracle,
and the batched Hydra launcher (hydra/launcher=batched) through the real CLI and a real SQLite store.

A batched child run must be the run its config gives alone: the same weights (np.array_equal),
metric values, predictions, params and weights hash.
"""

import functools
import gc
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import NN_RUN, compose_config, runs_of
from test_sweeps import ENDLESS, TINY, nn_run_m, sweep_of

from runner.data.datasets import load_dataset
from runner.job import run_job
from runner.nn.network import init_weights, layer_sizes
from runner.nn.stacked import train_stacked
from runner.nn.training import DivergenceError, train
from runner.sweep.batches import plan_batches
from runner.tracking import record


def same_training(batched, alone):
    """Every bit of two TrainResults: weights, last output, logged steps and scores."""
    return (all(np.array_equal(a, b) for a, b in zip(batched.weights, alone.weights))
            and len(batched.weights) == len(alone.weights)
            and np.array_equal(batched.last_output, alone.last_output)
            and batched.steps == alone.steps and batched.history == alone.history)


def check_stacked(data, hidden, seeds, lrs, iterations, log_every, activation="sigmoid", output="sigmoid",
                  init="uniform"):
    """Train the networks stacked, then each alone; returns the diverged indices after checking the others."""
    sizes = layer_sizes(data.X.shape[1], hidden, data.y.shape[1])
    initials = [init_weights(sizes, np.random.RandomState(seed), init) for seed in seeds]
    test = {"X_test": data.X_test, "y_test": data.y_test, "classify": data.classes is not None}
    results, diverged = train_stacked(initials, data.X, data.y, lrs=lrs, iterations=iterations,
                                      log_every=log_every, hidden_activation=activation, output_activation=output,
                                      **test)
    assert len(results) == len(seeds)
    for n, (initial, lr) in enumerate(zip(initials, lrs)):
        if n in diverged:
            continue
        alone = train(initial, data.X, data.y, iterations=iterations, log_every=log_every, lr=lr,
                      hidden_activation=activation, output_activation=output, **test)
        assert same_training(results[n], alone), f"network {n} (seed {seeds[n]}, lr {lr}) differs"
    return diverged


@pytest.mark.slow
def test_seed_sweep_of_the_seed_network_is_bitwise_each_network_alone():
    diverged = check_stacked(load_dataset("seed"), [4], seeds=range(1, 9), lrs=[1.0] * 8, iterations=60000,
                             log_every=10000)
    assert diverged == []


def test_learning_rates_and_seeds_mixed_are_bitwise_each_network_alone():
    lrs = [0.1, 0.5, 1.0, 2.0, 3.0, 10.0, 30.0, 1.0]
    assert check_stacked(load_dataset("seed"), [4], range(8), lrs, iterations=3000, log_every=1000) == []


@pytest.mark.parametrize("hidden, activation", [([4, 3], "tanh"), ([5, 4, 3], "relu"), ([], "sigmoid")])
def test_deeper_and_shallower_networks_are_bitwise_each_network_alone(hidden, activation):
    data = load_dataset("xor")
    assert check_stacked(data, hidden, range(6), [0.5, 1.0, 2.0] * 2, 500, 100, activation) == []


def test_test_split_scores_and_softmax_are_bitwise_each_network_alone():
    # iris: a held-out split (test_error, test_accuracy), three classes, softmax with cross-entropy
    data = load_dataset("iris", test_fraction=0.2, scale="standard")
    assert check_stacked(data, [8], range(5), [0.05, 0.01, 0.05, 0.02, 0.05], 300, 100, output="softmax",
                         init="xavier") == []


def test_a_diverging_network_is_reported_and_leaves_the_others_intact():
    data = load_dataset("seed")
    diverged = check_stacked(data, [4], [1, 1, 1, 1], [0.5, 1.0, 2.0, 1e300], 20, 10, activation="relu")
    assert diverged == [3]
    with pytest.raises(DivergenceError):  # the oracle agrees that this one diverges alone
        train(init_weights([3, 4, 1], np.random.RandomState(1)), data.X, data.y, iterations=20, log_every=10,
              lr=1e300, hidden_activation="relu")


def test_plan_groups_only_jobs_that_differ_in_seed_and_learning_rate():
    configs = [compose_config(*overrides) for overrides in [
        ["seed=1"], ["seed=2", "train.lr=0.5"], ["model.hidden=[8]"], ["seed=3"],  # 0, 1, 3 share a batch
        ["model.hidden=[8]", "seed=5"],  # with 2
        ["train.batch_size=2"], ["train.batch_size=2", "seed=2"],  # mini-batches: never batched
        ["train.iterations=10"],  # a different budget: alone
        ["train.lr=-1"],  # rejected: runs (and fails) alone
        ["dataset=xor", "seed=7"], ["dataset=xor"],  # another data set
    ]]
    assert plan_batches(configs, max_batch=1024) == [[0, 1, 3], [2, 4], [9, 10]]
    assert plan_batches(configs, max_batch=2) == [[0, 1], [2, 4], [9, 10]]  # [3] is left alone


def test_a_batch_key_reads_past_the_hydra_node():
    """The launcher plans from the job configs as Hydra composes them for a sweep, `hydra` node included."""
    from hydra import compose, initialize_config_dir

    from runner.config import CONFIG_DIR
    from runner.sweep.batches import batch_key

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        full = compose(config_name="config", overrides=["seed=2", "model.hidden=[8]"], return_hydra_config=True)
    task = compose_config("seed=1", "train.lr=0.5", "model.hidden=[8]")  # another seed and rate: the same batch
    assert "hydra" in full and "hydra" not in task
    assert batch_key(full) == batch_key(task) is not None
    assert batch_key(full) != batch_key(compose_config("model.hidden=[16]"))


def logged(client, run, folder):
    """(params, {metric: [(step, value)]}, tags, weights, predictions.csv text) of a run, from MLflow."""
    run_id = run.info.run_id
    metrics = {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
               for key in run.data.metrics}
    path = client.download_artifacts(run_id, "", str(folder))
    predictions = Path(path, record.PREDICTIONS_FILE).read_text()
    return run.data.params, metrics, run.data.tags, record.read_weights(path), predictions


def single_run(tracking_uri, experiment, overrides):
    """The run of this config alone (runner.job.run_job, as nn-run would), logged to `experiment`."""
    overrides = [*overrides, f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"]
    return run_job(compose_config(*overrides), overrides, run_name="alone").run_id


def job_overrides(child):
    """The job's own overrides, without where it was logged."""
    return [o for o in json.loads(child.data.tags[record.OVERRIDES_TAG]) if not o.startswith("tracking.")]


def assert_children_are_their_single_runs(client, tracking_uri, experiment, children, tmp_path):
    for n, child in enumerate(children):
        alone = client.get_run(single_run(tracking_uri, f"{experiment}-alone", job_overrides(child)))
        params, metrics, tags, weights, predictions = logged(client, child, tmp_path / f"batched{n}")
        params_1, metrics_1, tags_1, weights_1, predictions_1 = logged(client, alone, tmp_path / f"alone{n}")
        assert len(weights) == len(weights_1) >= 2
        assert all(np.array_equal(a, b) for a, b in zip(weights, weights_1))
        assert metrics == metrics_1 and len(metrics[record.ERROR_METRIC]) == 3
        assert predictions == predictions_1
        assert tags[record.WEIGHTS_HASH_TAG] == tags_1[record.WEIGHTS_HASH_TAG] == record.weights_sha256(weights)
        unlogged = {"tracking.experiment"}  # the single runs went to another experiment
        assert {k: v for k, v in params.items() if k not in unlogged} == {
            k: v for k, v in params_1.items() if k not in unlogged}
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert artifacts == {a.path for a in client.list_artifacts(alone.info.run_id)}


@pytest.mark.parametrize("n_jobs", [1, 2])  # in the sweep's process; in two forked worker processes
def test_batched_sweep_of_seeds_and_learning_rates_logs_each_child_as_its_single_run(
        tmp_path, tracking_uri, experiment, client, n_jobs):
    temp = tmp_path / "temp"  # the sweep's temporary files: none may be left behind, by any worker
    temp.mkdir()
    done = nn_run_m(tmp_path, tracking_uri, experiment, "hydra/launcher=batched", f"hydra.launcher.n_jobs={n_jobs}",
                    "seed=1,2,3", "train.lr=0.5,1", *TINY, env={"TMPDIR": str(temp)})
    assert done.returncode == 0, done.stderr
    assert list(temp.iterdir()) == []
    assert "Training 6 networks together: jobs #0, #1, #2, #3, #4, #5" in done.stdout  # one batch, no fallback
    assert ("Running the jobs in 2 processes" in done.stdout) == (n_jobs == 2)
    assert done.stdout.count("(batched)") == 6
    parent, children = sweep_of(client, experiment)
    assert parent.info.status == "FINISHED" and parent.data.tags["launcher"] == "batched"
    assert parent.info.run_name == "sweep over seed, train.lr"
    assert parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == 6
    assert parent.data.metrics[record.CHILDREN_FAILED_METRIC] == 0
    assert sorted((c.data.params["seed"], c.data.params["train.lr"]) for c in children) == [
        (s, lr) for s in "123" for lr in ("0.5", "1.0")]
    assert all(c.info.status == "FINISHED" and c.info.experiment_id == parent.info.experiment_id for c in children)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    # Hydra's per-job machinery is unchanged: each job has its folder and .hydra files
    sweep_dir = Path(parent.data.tags[record.SWEEP_DIR_TAG])
    for job in range(6):
        assert {p.name for p in (sweep_dir / str(job) / ".hydra").iterdir()} == {
            "config.yaml", "hydra.yaml", "overrides.yaml"}
    assert_children_are_their_single_runs(client, tracking_uri, experiment, children, tmp_path)


def test_mixed_shapes_split_into_batches_and_a_lone_job_runs_as_usual(tmp_path, tracking_uri, experiment, client):
    args = ("hydra/launcher=batched", f"hydra.sweep.dir={tmp_path / 'sweep'}", "model.hidden=[3],[5]", "seed=1,2",
            "train.batch_size=0,2", *TINY)
    done = nn_run_m(tmp_path, tracking_uri, experiment, *args)
    assert done.returncode == 0, done.stderr
    # jobs: hidden [3] and [5], seeds 1 and 2, full batch and batches of 2; the full-batch jobs of
    # one shape share a batch, the mini-batch ones run alone
    batches = [line for line in done.stdout.splitlines() if "networks together" in line]
    assert len(batches) == 2 and all("Training 2 networks together" in line for line in batches)
    lone = [line for line in done.stdout.splitlines() if "train.batch_size=2" in line and " : " in line]
    assert len(lone) == 4 and not any("(batched)" in line for line in lone)
    assert done.stdout.count("(batched)") == 4
    parent, children = sweep_of(client, experiment)
    assert parent.info.status == "FINISHED" and len(children) == 8
    assert all(c.info.status == "FINISHED" for c in children)
    assert_children_are_their_single_runs(client, tracking_uri, experiment,
                                          [c for c in children if c.data.params["train.batch_size"] == "0"][:2],
                                          tmp_path)

    # the same sweep again into its folder keeps every child, batched ones too (what a requeued Slurm share does,
    # tests/test_batched_slurm.py): their FINISHED notes take them out of their batch
    assert all(json.loads((tmp_path / "sweep" / str(n) / "checkpoint.json").read_text())["status"] == "FINISHED"
               for n in range(8))
    again = nn_run_m(tmp_path, tracking_uri, experiment, *args)
    assert again.returncode == 0, again.stderr
    assert "(batched)" not in again.stdout and again.stdout.count("finished before: kept as it is") == 8
    parent, kept = sweep_of(client, experiment)
    assert parent.info.status == "FINISHED" and parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == 8
    assert sorted((c.info.run_id, c.info.end_time) for c in kept) == sorted(
        (c.info.run_id, c.info.end_time) for c in children)


def test_a_diverging_network_fails_only_its_own_child_with_the_single_runs_error(
        tmp_path, tracking_uri, experiment, client):
    # two worker processes: the failed job's error comes back to the sweep's process pickled
    done = nn_run_m(tmp_path, tracking_uri, experiment, "hydra/launcher=batched", "hydra.launcher.n_jobs=2",
                    "model.activation=relu", "train.lr=0.5,1,2,1e300", *TINY)
    assert done.returncode != 0  # Hydra's sweeper re-raises the failed job's error, as with any launcher
    assert "training diverged at step" in done.stderr
    assert "Training 4 networks together" in done.stdout and done.stdout.count("(batched)") == 3
    parent, children = sweep_of(client, experiment)
    by_lr = {float(c.data.params["train.lr"]): c for c in children}
    diverged = by_lr.pop(1e300)
    assert diverged.info.status == "FAILED"
    with pytest.raises(DivergenceError):
        single_run(tracking_uri, f"{experiment}-alone", ["model.activation=relu", "train.lr=1e300", *TINY])
    (alone,) = runs_of(client, f"{experiment}-alone")
    assert alone.info.status == "FAILED"
    assert diverged.data.tags["error"] == alone.data.tags["error"]
    assert diverged.data.tags["error"].startswith("DivergenceError: training diverged at step ")
    history = client.get_metric_history(diverged.info.run_id, record.ERROR_METRIC)
    assert [m.step for m in history if math.isfinite(m.value)][:1] == [0]
    assert [c.info.status for c in by_lr.values()] == ["FINISHED"] * 3
    assert parent.info.status == "FAILED"
    assert parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == 3
    assert parent.data.metrics[record.CHILDREN_FAILED_METRIC] == 1
    assert_children_are_their_single_runs(client, tracking_uri, experiment, list(by_lr.values())[:1], tmp_path)


@pytest.mark.slow
def test_optuna_search_on_the_batched_launcher(tmp_path, tracking_uri, experiment, client):
    import yaml

    done = nn_run_m(tmp_path, tracking_uri, experiment, "hydra/sweeper=nn_optuna", "hydra/launcher=batched",
                    "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2", "hydra.sweeper.sampler.seed=1",
                    "train.lr=interval(0.1,4)", *TINY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Training 2 networks together") == 2  # each batch of two trials trains at once
    parent, children = sweep_of(client, experiment)
    assert parent.info.status == "FINISHED" and parent.data.tags["sweeper"] == "nn_optuna" and len(children) == 4
    results = yaml.safe_load((Path(parent.data.tags[record.SWEEP_DIR_TAG]) / "optimization_results.yaml").read_text())
    errors = {float(c.data.params["train.lr"]): c.data.metrics[record.final_metric(record.ERROR_METRIC)]
              for c in children}
    assert results["best_value"] == min(errors.values())


def test_the_launcher_is_installed_as_a_hydra_plugin():
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    names = {plugin.__name__ for plugin in Plugins.instance().discover(Launcher)}
    assert "BatchedLauncher" in names
    assert not os.path.exists(Path(__file__).resolve().parent.parent / "hydra_plugins" / "__init__.py")


def test_each_process_gets_a_part_of_every_batch_and_a_turn_of_the_lone_jobs():
    from runner.sweep.batches import share_out

    batches = [[0, 1, 3, 6, 7], [2, 4], [9, 10]]
    shares = share_out(batches, 12, 2)
    assert shares == [([[0, 1, 3], [2], [9]], [0, 1, 2, 3, 5, 9, 11]),
                      ([[6, 7], [4], [10]], [4, 6, 7, 8, 10])]
    for workers in (1, 2, 3, 5, 16):
        shares = share_out(batches, 12, workers)
        assert sorted(j for _, jobs in shares for j in jobs) == list(range(12))  # every job once
        for batch in batches:  # each batch cut into parts, in order, no part empty
            parts = [part for share_parts, _ in shares for part in share_parts if part[0] in batch]
            assert [j for part in parts for j in part] == batch and all(parts)
        assert all(set(j for part in parts for j in part) <= set(jobs) for parts, jobs in shares)
    assert share_out(batches, 12, 1) == [(batches, list(range(12)))]


def test_jobs_run_in_forked_workers_and_come_back_in_order():
    from hydra_plugins.nn_runner_batched_launcher.forked_jobs import (
        run_in_workers,
        workers_for,
    )

    calls = [functools.partial(_squares_and_pid, k) for k in range(3)]
    results = run_in_workers(calls, after_fork=_note_fork)
    # each call's results, one by one as it emitted them (call k emits k + 1), in call order
    assert [[square for square, _, _ in emitted] for emitted in results] == [[0], [0, 1], [0, 1, 4]]
    pids = [{pid for _, pid, _ in emitted} for emitted in results]
    assert all(len(p) == 1 for p in pids) and len(set.union(*pids)) == 3  # one process per call
    assert os.getpid() not in set.union(*pids)
    assert all(forked_here for emitted in results for _, _, forked_here in emitted)  # after_fork ran first
    assert run_in_workers(calls[1:2]) == [[(0, os.getpid(), False), (1, os.getpid(), False)]]  # one call: here
    with pytest.raises(ZeroDivisionError):  # a call's error is raised in the caller, after what it emitted
        run_in_workers([functools.partial(_squares_and_pid, 1), functools.partial(_emit_then_fail, 1, 0)])
    cpus = len(os.sched_getaffinity(0))
    assert (workers_for(-1, 100), workers_for(-1, 1), workers_for(3, 2), workers_for(1, 50)) == (
        min(cpus, 100), 1, 2, 1)


def test_workers_start_with_the_sweeps_heap_frozen():
    from hydra_plugins.nn_runner_batched_launcher.forked_jobs import run_in_workers

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    # the parent's long-lived objects are out of the collector's full passes in every worker, and after
    assert [[count > 0] for count, in run_in_workers([_emit_freeze_count] * 2)] == [[True], [True]]
    assert gc.get_freeze_count() > 0


def _emit_freeze_count(emit):
    emit(gc.get_freeze_count())


_FORKED = []


def _note_fork():
    _FORKED.append(os.getpid())


def _squares_and_pid(k, emit):
    for n in range(k + 1):
        emit((n * n, os.getpid(), _FORKED == [os.getpid()]))


def _emit_then_fail(a, b, emit):
    emit(a)
    emit(divmod(a, b))


@pytest.mark.parametrize("setting, rule", [
    ("n_jobs=0", "must be >= 1, or -1 for one per CPU (with an executor: one job per max_batch jobs)"),
    ("max_batch=0", "must be >= 1"),
    ("executor=pbs", "must be null (forked processes here) or one of submitit's local, slurm")])
def test_a_bad_launcher_setting_stops_the_sweep_before_any_run(tmp_path, tracking_uri, experiment, client,
                                                                setting, rule):
    done = nn_run_m(tmp_path, tracking_uri, experiment, "hydra/launcher=batched", f"hydra.launcher.{setting}",
                    "seed=1,2", *TINY)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"nn-run: the sweep cannot start: hydra.launcher.{setting} is not allowed: {rule}")
    assert runs_of(client, experiment) == []


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_an_interrupted_sweep_ends_every_workers_run_killed_and_leaves_no_process(
        tmp_path, tracking_uri, experiment, client, stop):
    import signal
    import subprocess

    # mini-batch jobs train alone, in two workers. A terminal's Ctrl-C reaches the whole process
    # group; `kill` (or a scheduler) sends SIGTERM to the sweep's process only.
    command = [*NN_RUN, "-m", "hydra/launcher=batched", "hydra.launcher.n_jobs=2", "seed=1,2,3", "train.batch_size=2",
               *ENDLESS, f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    points = 0
    for line in proc.stdout:
        points += "step 20000:" in line
        if points == 2:  # both workers are training
            break
    if stop == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        rest = proc.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the test fails; its processes must not outlive it
        raise
    assert proc.returncode == 130
    assert "nn-run: interrupted" in rest and "Traceback" not in rest
    with pytest.raises(ProcessLookupError):  # no worker left behind
        os.killpg(proc.pid, 0)
    parent, children = sweep_of(client, experiment)
    assert parent.info.status == "KILLED"
    assert sorted(c.info.status for c in children) == ["KILLED", "KILLED"]
    for child in children:  # the points taken before the interruption are kept
        steps = [m.step for m in client.get_metric_history(child.info.run_id, record.ERROR_METRIC)]
        assert {0, 20000} <= set(steps)

"""A search (hydra/sweeper=nn_optuna) killed with SIGKILL mid-trial, then run again with the same command into the
same sweep folder: real processes, a real signal, a real MLflow SQLite store and Optuna's SQLite study."""

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from conftest import NN_RUN, compose_config, runs_of
from optuna.trial import TrialState
from servers import study_storage  # noqa: F401 (fixture)

from hydra_plugins.nn_runner_optuna_sweeper._search import LOST_ATTR
from runner.job import load_data
from runner.nn.network import init_weights, layer_sizes
from runner.nn.training import shuffle_rng, train
from runner.tracking import record

TRIAL = ["dataset=iris", "train.iterations=30000", "train.log_every=3000", "tracking.log_model=false"]


def killed_then_run_again(tmp_path, uri, experiment, marker_after, *args, between=None):
    """Start the search, SIGKILL it once trial `marker_after[0]` has printed a line with `marker_after[1]`, call
    `between()`, start it again; return (the runs before the second start, its CompletedProcess)."""
    cmd = [*NN_RUN, "-m", "hydra/sweeper=nn_optuna", "hydra.sweep.dir=the_search", f"tracking.uri={uri}",
           f"tracking.experiment={experiment}", *TRIAL, *args]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    number, marker = marker_after
    started = False
    try:
        for line in proc.stdout:
            started = started or f"#{number} : " in line
            if started and marker in line:
                break
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    proc.stdout.close()
    before = {r.info.run_id: r for r in runs_of(client_of(uri), experiment)}
    if between is not None:
        between()
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    return before, again


def client_of(uri):
    from mlflow import MlflowClient

    return MlflowClient(uri)


def study_trials(tmp_path, storage=None):
    url = storage or f"sqlite:///{tmp_path / 'the_search' / 'optuna.db'}"
    return optuna.load_study(storage=url, study_name="the_search").trials


def whole_training(child):
    """The training of the child's config in one go, never stopped."""
    cfg = compose_config(*TRIAL, f"train.lr={child.data.params['train.lr']}")
    data = load_data(cfg.dataset)
    sizes = layer_sizes(data.X.shape[1], cfg.model.hidden, data.y.shape[1])
    return train(init_weights(sizes, np.random.RandomState(cfg.seed), cfg.model.init), data.X, data.y,
                 iterations=cfg.train.iterations, log_every=cfg.train.log_every, lr=cfg.train.lr,
                 hidden_activation=cfg.model.activation, output_activation=cfg.model.output,
                 batch_size=cfg.train.batch_size, rng=shuffle_rng(cfg.seed), X_test=data.X_test, y_test=data.y_test,
                 classify=data.classes is not None)


@pytest.mark.slow
def test_a_search_killed_mid_trial_continues_its_study_and_parent_and_resumes_the_trial(tmp_path, tracking_uri,
                                                                                       experiment, client,
                                                                                       study_storage):
    storage = [f"hydra.sweeper.storage={study_storage}"] if study_storage else []
    before, again = killed_then_run_again(
        tmp_path, tracking_uri, experiment, (8, "step 9000: error"), *storage, "hydra.sweeper.n_trials=20",
        "hydra.sweeper.sampler.seed=3", "hydra.sweeper.pruner.name=median", "train.checkpoint_every=0.01",
        "train.lr=tag(log,interval(0.01,1))")
    assert again.returncode == 0, again.stderr[-3000:]
    (parent,) = [r for r in before.values() if record.SWEEP_ID_TAG in r.data.tags]
    killed = [r for r in before.values() if r.info.status == "RUNNING" and r is not parent]
    assert len(killed) == 1
    number = int(killed[0].data.tags[record.TRIAL_NUMBER_TAG])  # the 9th trial, or a later one if it was pruned
    assert 8 <= number < 20
    assert parent.info.status == "RUNNING"  # its process was killed: nothing ended it

    trials = study_trials(tmp_path, study_storage)
    assert [t.number for t in trials] == list(range(20))
    # the sampler, seeded again past the trials held, did not draw the first trials' points again
    assert len({t.params["train.lr"] for t in trials}) == 20
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}  # none RUNNING, none lost
    after = {r.info.run_id: r for r in runs_of(client, experiment)}
    assert len(after) == 21 and set(before) <= set(after)  # one parent, 20 children: the earlier ones among them
    assert after[parent.info.run_id].info.status == "FINISHED" and all(
        r.info.status == "FINISHED" for r in after.values())
    children = {int(r.data.tags[record.TRIAL_NUMBER_TAG]): r for r in after.values() if r.info.run_id
                != parent.info.run_id}
    assert sorted(children) == list(range(20))
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children.values())
    for run in before.values():  # the trials that ended before the kill: untouched
        if run.info.status == "FINISHED" and run is not parent:
            now = after[run.info.run_id]
            assert now.info.end_time == run.info.end_time and record.RESUMED_AT_TAG not in now.data.tags

    resumed = children[number]
    assert resumed.info.run_id == killed[0].info.run_id  # the same child run, continued from its checkpoint
    (step,) = json.loads(resumed.data.tags[record.RESUMED_AT_TAG])
    assert 3000 <= step < 30000
    whole = whole_training(resumed)
    points = sorted((m.step, m.value) for m in client.get_metric_history(resumed.info.run_id, record.ERROR_METRIC))
    end = int(resumed.data.tags.get(record.PRUNED_AT_TAG, 30000))
    assert points == [(s, e) for s, e in zip(whole.steps, whole.errors) if s <= end]  # bit for bit
    if end == 30000:
        assert resumed.data.tags[record.WEIGHTS_HASH_TAG] == record.weights_sha256(whole.weights)
    # its trial holds one value a step (none reported twice), the points its run logged
    assert sorted(trials[number].intermediate_values.items()) == points
    for trial in trials:
        run = children[trial.number]
        assert float(run.data.params["train.lr"]) == trial.params["train.lr"]
        if trial.state == TrialState.COMPLETE:
            assert run.data.metrics[record.final_metric(record.ERROR_METRIC)] == trial.value
        else:
            assert int(run.data.tags[record.PRUNED_AT_TAG]) == max(trial.intermediate_values)
    best = min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    results = yaml.safe_load((tmp_path / "the_search" / "optimization_results.yaml").read_text())
    assert results == {"name": "optuna", "best_params": best.params, "best_value": best.value,
                       "best_trial": best.number}
    assert f"continued: {number} trials kept, 1 resumed, 0 lost" in again.stdout + again.stderr


@pytest.mark.slow
def test_a_trial_killed_before_its_first_checkpoint_is_failed_in_the_study_and_its_child_run(
        tmp_path, tracking_uri, experiment, client):
    """A job checkpoints at its first safe point: the window before it (composing, opening the run) is too short
    to hit with a signal, so the killed trial's checkpoint files are removed before the search runs again."""

    def no_checkpoint():
        for name in ("checkpoint.json", "checkpoint.npz"):
            (tmp_path / "the_search" / "1" / name).unlink()

    before, again = killed_then_run_again(
        tmp_path, tracking_uri, experiment, (1, "step 3000: error"), "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.seed=3", "train.lr=tag(log,interval(0.01,1))", between=no_checkpoint)
    assert again.returncode == 0, again.stderr[-3000:]
    (killed,) = [r for r in before.values() if r.info.status == "RUNNING" and record.SWEEP_ID_TAG not in r.data.tags]
    trials = study_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    reason = trials[1].user_attrs[LOST_ATTR]
    assert reason.startswith("the search's process (pid ") and reason.endswith(
        "ended during this trial, before its job wrote a checkpoint to resume from")
    after = {r.info.run_id: r for r in runs_of(client, experiment)}
    assert len(after) == 4  # one parent, a child per trial: the lost one not run again
    lost = after[killed.info.run_id]
    assert lost.info.status == "FAILED" and lost.data.tags["error"] == reason
    assert not [r for r in after.values() if r.info.status == "RUNNING"]
    (parent,) = [r for r in after.values() if record.SWEEP_ID_TAG in r.data.tags]  # a child failed: so did it
    assert parent.info.status == "FAILED" and parent.data.metrics[record.CHILDREN_FAILED_METRIC] == 1
    assert [t.number for t in trials if t.state == TrialState.COMPLETE] == [0, 2]
    assert Path(tmp_path, "the_search", "optimization_results.yaml").exists()


@pytest.mark.slow
def test_a_search_stopped_by_ctrl_c_leaves_its_trial_running_and_run_again_resumes_it(tmp_path, tracking_uri,
                                                                                      experiment, client):
    from conftest import interrupt_after

    cmd = [*NN_RUN, "-m", "hydra/sweeper=nn_optuna", "hydra.sweep.dir=the_search", f"tracking.uri={tracking_uri}",
           f"tracking.experiment={experiment}", *TRIAL, "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=3",
           "train.lr=tag(log,interval(0.01,1))"]
    code, _ = interrupt_after(cmd, tmp_path, "step 9000: error")  # in trial 0
    assert code == 130
    (stopped,) = [r for r in runs_of(client, experiment) if r.info.status == "KILLED" and
                  record.SWEEP_ID_TAG not in r.data.tags]
    assert [t.state for t in study_trials(tmp_path)] == [TrialState.RUNNING]  # for the search run again
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = study_trials(tmp_path)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    runs = {r.info.run_id: r for r in runs_of(client, experiment)}
    assert len(runs) == 4 and all(r.info.status == "FINISHED" for r in runs.values())
    resumed = runs[stopped.info.run_id]
    assert resumed.data.tags[record.TRIAL_NUMBER_TAG] == "0" and json.loads(resumed.data.tags[record.RESUMED_AT_TAG])
    whole = whole_training(resumed)
    assert resumed.data.tags[record.WEIGHTS_HASH_TAG] == record.weights_sha256(whole.weights)
    assert trials[0].value == whole.errors[-1]

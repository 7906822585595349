"""Checkpoints and resume: a run stopped and continued ends bit-identical to the run done in one go.

The oracle is the same training done without stopping, in this process. Resuming goes through
the real files (runner/checkpoint.py), the real CLI (`nn-run`, Ctrl-C, `nn-run resume`) and a
real SQLite store.
"""

import json
import os
import signal
import subprocess

import numpy as np
import pytest
from conftest import NN_RUN, compose_config, runs_of

from runner import checkpoint
from runner.job import initial_weights, load_data
from runner.nn.training import shuffle_rng, train
from runner.tracking import record


class StopAt:
    """Checkpoints at the first safe point at or after `step`, into `folder`, through runner.checkpoint's files."""

    def __init__(self, folder, step):
        self.saver = checkpoint.Checkpointer(folder, "run", "sha", every_seconds=1e9)
        self.step, self.saved = step, None
        self._pending = True

    def due(self):
        return self._pending

    def save(self, state):
        if state.step >= self.step:
            self.saver.save(state)
            self._pending = False
            raise KeyboardInterrupt  # the stop


def training(cfg, data, **options):
    return train(initial_weights(cfg, data), data.X, data.y, iterations=cfg.train.iterations,
                 log_every=cfg.train.log_every, lr=cfg.train.lr, hidden_activation=cfg.model.activation,
                 output_activation=cfg.model.output, batch_size=cfg.train.batch_size, rng=shuffle_rng(cfg.seed),
                 X_test=data.X_test, y_test=data.y_test, classify=data.classes is not None, **options)


@pytest.mark.parametrize("overrides", [
    ["train.iterations=3000", "train.log_every=500"],
    ["dataset=iris", "train.batch_size=16", "train.lr=0.05", "train.iterations=700", "train.log_every=100"],
    ["dataset=moons", "model.output=softmax", "model.activation=tanh", "train.batch_size=7", "train.lr=0.1",
     "train.iterations=500", "train.log_every=50"],
], ids=["full batch", "mini-batches with a test split", "softmax mini-batches"])
@pytest.mark.parametrize("where", [0.001, 0.37, 0.9])
def test_stopped_and_resumed_training_is_the_training_done_in_one_go(tmp_path, overrides, where):
    cfg = compose_config(*overrides)
    data = load_data(cfg.dataset)
    whole = training(cfg, data)
    with pytest.raises(KeyboardInterrupt):
        training(cfg, data, checkpoints=StopAt(str(tmp_path), max(1, int(where * cfg.train.iterations))))
    meta = checkpoint.read_meta(str(tmp_path))
    state = checkpoint.load_state(str(tmp_path), meta)
    assert 0 < state.step and state.steps == [s for s in whole.steps if s < state.step]
    resumed = training(cfg, data, resume=state)
    assert all(np.array_equal(a, b) for a, b in zip(resumed.weights, whole.weights))
    assert resumed.steps == whole.steps and resumed.history == whole.history
    if whole.last_output is not None:
        assert np.array_equal(resumed.last_output, whole.last_output)


def nn_run(cwd, *args):
    return subprocess.run([*NN_RUN, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def points(client, run_id, key=record.ERROR_METRIC):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.mark.slow
@pytest.mark.parametrize("how", [[], ["train.batch_size=2"]], ids=["full batch", "mini-batches"])
def test_ctrl_c_then_nn_run_resume_continues_the_same_run_bit_for_bit(tmp_path, tracking_uri, experiment, client,
                                                                      how):
    from conftest import interrupt_after

    # long enough that Ctrl-C, sent when step 100000 is printed, lands mid-training (~5x that still to go)
    common = ["train.iterations=600000", "train.log_every=100000", *how, f"tracking.uri={tracking_uri}",
              f"tracking.experiment={experiment}"]
    code, _ = interrupt_after([*NN_RUN, *common], tmp_path, "step 100000: error")
    assert code == 130
    (stopped,) = runs_of(client, experiment)
    assert stopped.info.status == "KILLED"
    run_id = stopped.info.run_id
    folder = stopped.data.tags[record.HYDRA_OUTPUT_DIR_TAG]
    step = checkpoint.read_meta(folder)["step"]
    assert 100000 <= step < 600000

    done = nn_run(tmp_path, "resume", run_id, "--tracking-uri", tracking_uri)
    assert done.returncode == 0, done.stderr
    assert f"MLflow run {run_id} resumes at step {step} from its checkpoint in {folder}" in done.stdout.splitlines()
    assert done.stderr == ""  # as nn-run: progress and results on stdout, bare
    (resumed,) = runs_of(client, experiment)  # the same run, no second one
    assert resumed.info.run_id == run_id and resumed.info.status == "FINISHED"
    assert json.loads(resumed.data.tags[record.RESUMED_AT_TAG]) == [step]
    assert checkpoint.read_meta(folder)["status"] == checkpoint.FINISHED

    cfg = compose_config(*common)
    whole = training(cfg, load_data(cfg.dataset))
    assert resumed.data.tags[record.WEIGHTS_HASH_TAG] == record.weights_sha256(whole.weights)
    assert points(client, run_id) == list(zip(whole.steps, whole.errors))  # each step once, every bit

    again = nn_run(tmp_path, "resume", run_id, "--tracking-uri", tracking_uri)
    assert again.returncode == 2 and again.stderr.strip() == f"nn-run: run {run_id} finished: there is nothing to resume"


@pytest.fixture(params=["sqlite", "server"])
def store_elsewhere(request, tmp_path_factory):
    """(folder a run is started in, the tracking.uri it is started with, the URI that finds it from anywhere)."""
    folder = tmp_path_factory.mktemp("started-here")
    if request.param == "sqlite":  # nn-run's default: a relative path, meaning the folder it was started in
        yield folder, "sqlite:///mlflow.db", f"sqlite:///{folder}/mlflow.db"
        return
    from servers import mlflow_server

    with mlflow_server(f"sqlite:///{folder}/server.db", folder) as (url, _):
        yield folder, url, url


@pytest.mark.slow
def test_a_stopped_run_resumes_from_another_folder_and_leaves_nothing_there(tmp_path, store_elsewhere):
    from conftest import interrupt_after
    from mlflow import MlflowClient

    started_in, uri, found_at = store_elsewhere
    common = ["train.iterations=400000", "train.log_every=20000", "train.checkpoint_every=0.2"]
    code, _ = interrupt_after([*NN_RUN, *common, f"tracking.uri={uri}"], started_in, "step 20000: error")
    assert code == 130
    client = MlflowClient(found_at)
    (stopped,) = runs_of(client, "nn-runner")
    assert stopped.info.status == "KILLED"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    done = nn_run(elsewhere, "resume", stopped.info.run_id, "--tracking-uri", found_at)
    assert done.returncode == 0, done.stderr
    assert list(elsewhere.iterdir()) == []  # no store, no lock, no outputs/
    assert done.stdout.startswith(f"MLflow run {stopped.info.run_id} resumes at step ") and done.stderr == ""
    (resumed,) = runs_of(client, "nn-runner")  # the same run, finished
    assert resumed.info.run_id == stopped.info.run_id and resumed.info.status == "FINISHED"
    cfg = compose_config(*common)
    whole = training(cfg, load_data(cfg.dataset))
    assert resumed.data.tags[record.WEIGHTS_HASH_TAG] == record.weights_sha256(whole.weights)
    assert points(client, stopped.info.run_id) == list(zip(whole.steps, whole.errors))


def test_resume_refuses_with_one_line_and_creates_nothing(tmp_path, tracking_uri, experiment, client):
    from conftest import interrupt_after

    data = tmp_path / "data.csv"
    data.write_text("a,b,label\n" + "".join(f"{i % 3},{i % 5},{i % 2}\n" for i in range(40)))
    common = ["dataset=csv", "dataset.path=data.csv", "train.iterations=100000000", "train.log_every=20000",
              f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"]
    code, _ = interrupt_after([*NN_RUN, *common], tmp_path, "step 20000: error")
    assert code == 130
    (run,) = runs_of(client, experiment)
    run_id, folder = run.info.run_id, run.data.tags[record.HYDRA_OUTPUT_DIR_TAG]
    meta = checkpoint.read_meta(folder)

    def refused(expected):
        done = nn_run(tmp_path, "resume", run_id, "--tracking-uri", tracking_uri)
        assert done.returncode == 2 and done.stderr.strip() == f"nn-run: {expected}"
        assert [r.info.run_id for r in runs_of(client, experiment)] == [run_id]
        assert client.get_run(run_id).info.status == "KILLED"  # untouched

    data.write_text(data.read_text() + "1,1,1\n")
    refused(f"dataset.path='data.csv' has changed since run {run_id}: sha256 "
            f"{record.file_sha256(data)}, recorded {run.data.tags[record.DATASET_SHA256_TAG]}: "
            "the run cannot be resumed")
    # a checkpoint made with another config than the one the run's overrides compose to now
    (tmp_path / folder / checkpoint.STATE_FILE).write_text(json.dumps({**meta, "config_sha256": "0" * 64}))
    refused(f"the config of run {run_id} has changed since its checkpoint (the configs in "
            f"{__import__('runner.config').config.CONFIG_DIR} compose to another config for its overrides): "
            "it cannot be resumed")
    (tmp_path / folder / checkpoint.STATE_FILE).unlink()
    refused(f"run {run_id} has no checkpoint to resume from (looked in {folder})")
    done = nn_run(tmp_path, "resume", "0" * 32, "--tracking-uri", tracking_uri)
    assert done.returncode == 2 and done.stderr.strip().startswith("nn-run: no run '00000000")


def test_a_checkpoint_costs_little(tmp_path):
    """What a checkpoint of the default network writes: two small files, replaced atomically."""
    cfg = compose_config()
    data = load_data(cfg.dataset)
    saver = checkpoint.Checkpointer(str(tmp_path), "run", "sha", every_seconds=0.0)
    result = train(initial_weights(cfg, data), data.X, data.y, iterations=3000, log_every=1000, checkpoints=saver)
    assert saver.saves >= 3000 // 256  # every safe point: each divergence check of a 4-row table
    state = checkpoint.load_state(str(tmp_path), checkpoint.read_meta(str(tmp_path)))
    assert {p.name for p in tmp_path.iterdir()} == {checkpoint.ARRAYS_FILE, checkpoint.STATE_FILE}
    assert state.step < 3000 and result.steps[:len(state.steps)] == state.steps


def test_a_time_limit_signal_after_training_waits_for_the_recording_and_is_dropped(tmp_path):
    """submitit's SIGUSR2 handler requeues the job and exits: after training, that would throw the recording away."""
    handed = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: handed.append(signum))  # submitit's stand-in
    try:
        saver = checkpoint.Checkpointer(str(tmp_path), "run", "sha", every_seconds=1e9)
        with saver:
            pass  # training, to its end
        os.kill(os.getpid(), signal.SIGUSR2)  # while the run is recorded
        assert handed == [] and saver.release() is True
        os.kill(os.getpid(), signal.SIGUSR2)  # the handler has it again
        assert handed == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_signal_the_process_was_started_ignoring_stays_ignored_while_training(tmp_path):
    """A script's `nn-run ... &` starts with SIGINT ignored, so that Ctrl-C in the script's terminal spares it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        saver = checkpoint.Checkpointer(str(tmp_path), "run", "sha", every_seconds=1e9)
        with saver:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            assert saver.stopped_by is None
            os.kill(os.getpid(), signal.SIGTERM)  # not ignored: noted, for the next safe point
            assert saver.stopped_by == signal.SIGTERM
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_signal_after_training_goes_to_a_handler_that_only_notes_it(tmp_path):
    """A batched share notes SIGUSR2 and hands it on between its jobs: one that came while a job was recorded
    must reach it, or the share runs on past its time limit."""
    from runner.held_signal import HeldSignal

    handed = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: handed.append(signum))  # submitit's stand-in
    try:
        with HeldSignal() as held:
            saver = checkpoint.Checkpointer(str(tmp_path), "run", "sha", every_seconds=1e9)
            with saver:
                pass  # training, to its end
            os.kill(os.getpid(), signal.SIGUSR2)  # while the run is recorded
            assert not held.pending and saver.release() is True and held.pending and handed == []
            with pytest.raises(KeyboardInterrupt):  # the stand-in does not exit as submitit's does
                held.hand_over()
        assert handed == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_held_signal_noted_before_training_stops_it_at_the_first_safe_point_with_a_checkpoint(tmp_path):
    """A search's worker holds SIGUSR2 between its trials: one that came while the next trial was asked and its run
    opened must stop that trial's training at once, checkpointed, not after the whole trial (past the time limit),
    and resuming it gives the training done in one go."""
    from runner.held_signal import HeldSignal

    cfg = compose_config("train.iterations=3000", "train.log_every=500")
    data = load_data(cfg.dataset)
    whole = training(cfg, data)
    handed = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: handed.append(signum))  # submitit's stand-in
    try:
        with HeldSignal() as held:
            os.kill(os.getpid(), signal.SIGUSR2)  # between two trials
            assert held.pending and handed == []
            saver = checkpoint.Checkpointer(str(tmp_path), "run", "sha", every_seconds=1e9)
            with pytest.raises(KeyboardInterrupt), saver:
                training(cfg, data, checkpoints=saver)
            assert handed == [] and held.pending  # noted again, for the worker to hand on
            with pytest.raises(KeyboardInterrupt):  # the stand-in does not exit as submitit's does
                held.hand_over()
        assert handed == [signal.SIGUSR2] and signal.getsignal(signal.SIGUSR2) is not held
    finally:
        signal.signal(signal.SIGUSR2, previous)
    meta = checkpoint.read_meta(str(tmp_path))
    assert meta["status"] == checkpoint.RUNNING and meta["step"] == 0  # the first safe point: before iteration 0
    resumed = training(cfg, data, resume=checkpoint.load_state(str(tmp_path), meta))
    assert all(np.array_equal(a, b) for a, b in zip(resumed.weights, whole.weights))
    assert resumed.steps == whole.steps and resumed.history == whole.history


@pytest.mark.slow
def test_an_interrupted_sweep_continued_into_its_folder_keeps_its_finished_runs_and_resumes_the_stopped_one(
        tmp_path, tracking_uri, experiment, client):
    sweep = ["-m", "seed=1,2,3,4,5,6", "train.iterations=300000", "train.log_every=100000",
             "hydra.sweep.dir=the_sweep", "tracking.log_model=false", f"tracking.uri={tracking_uri}",
             f"tracking.experiment={experiment}"]
    proc = subprocess.Popen([*NN_RUN, *sweep], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    fourth_started = False
    for line in proc.stdout:
        fourth_started = fourth_started or "#3 : seed=4" in line
        if fourth_started and "step 100000: error" in line:  # the 4th job is mid-training
            break
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    before = {r.info.run_id: r for r in runs_of(client, experiment)}
    (parent,) = [r for r in before.values() if record.SWEEP_ID_TAG in r.data.tags]
    children = [r for r in before.values() if r is not parent]
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 3 + ["KILLED"]
    assert parent.info.status == "KILLED"

    done = nn_run(tmp_path, *sweep)
    assert done.returncode == 0, done.stderr
    after = {r.info.run_id: r for r in runs_of(client, experiment)}
    assert set(before) <= set(after) and len(after) == 7  # one parent, six children: two new, none again
    assert after[parent.info.run_id].info.status == "FINISHED"
    for child in children:
        now = after[child.info.run_id]
        assert now.info.status == "FINISHED"
        if child.info.status == "FINISHED":  # kept as it was
            assert now.info.end_time == child.info.end_time and record.RESUMED_AT_TAG not in now.data.tags
        else:
            (step,) = json.loads(now.data.tags[record.RESUMED_AT_TAG])
            assert step >= 100000
            cfg = compose_config(f"seed={child.data.params['seed']}", "train.iterations=300000",
                                 "train.log_every=100000")
            whole = training(cfg, load_data(cfg.dataset))
            assert now.data.tags[record.WEIGHTS_HASH_TAG] == record.weights_sha256(whole.weights)
            assert points(client, now.info.run_id) == list(zip(whole.steps, whole.errors))
    assert sorted(int(r.data.params["seed"]) for r in after.values() if r.info.run_id != parent.info.run_id) == [
        1, 2, 3, 4, 5, 6]
    assert os.path.isdir(tmp_path / "the_sweep")


def test_a_config_fingerprint_is_the_tasks_keys_with_or_without_a_sweep_jobs_hydra_node():
    """The fingerprint a batched share compares (its job config, `hydra` node included) is the one its
    job wrote (the task's config): sha256 of the resolved task keys as sorted JSON, tracking.uri left out."""
    import hashlib

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from runner.config import CONFIG_DIR

    overrides = ["seed=3", "train.lr=0.5", "model.hidden=[8]", "tracking.uri=sqlite:///elsewhere.db"]
    task = compose_config(*overrides)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        job = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    plain = OmegaConf.to_container(task, resolve=True)  # the oracle: the formula written out
    del plain["tracking"]["uri"]
    expected = hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()
    assert "hydra" in job and "hydra" not in task
    assert checkpoint.config_sha256(task) == checkpoint.config_sha256(job) == expected
    assert checkpoint.config_sha256(compose_config("seed=4", *overrides[1:])) != expected

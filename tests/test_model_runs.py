"""Model and training options through run_job and nn-run against a real SQLite store: metrics, failures, bad values."""

import numpy as np
import pytest

from conftest import NN_RUN, compose_config, runs_of
from oracles import forward
from runner import record
from runner.datasets import DATASETS, Dataset
from runner.job import run_job
from runner.network import init_weights, layer_sizes
from runner.training import DivergenceError, shuffle_rng, train
from toy_data import blobs, noisy_labels


def run_with(tracking_uri, experiment, *overrides):
    overrides = [f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}", *overrides]
    return run_job(compose_config(*overrides), overrides, run_name="test-run")


def three_blobs():
    """Three overlapping Gaussian classes, 45 training and 15 test rows, class names kept."""
    X, y = blobs(per_class=20, spread=1.2, interleave=True)
    return Dataset("blobs3", X[:45], y[:45], X[45:], y[45:], classes=["a", "b", "c"])


def noisy():
    """Random labels nothing can fit: with relu, softmax and lr 10 the weights blow up."""
    return Dataset("noisy", *noisy_labels(), classes=["a", "b", "c"])


@pytest.fixture
def datasets(monkeypatch):
    """Register the two test data sets under their names, for this test only."""
    for loader in (three_blobs, noisy):
        monkeypatch.setitem(DATASETS, loader().name, loader)


def history(client, run_id, name):
    return sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)


def test_classification_run_logs_test_and_accuracy_scores_and_finals(tracking_uri, experiment, client, datasets,
                                                                      tmp_path):
    result = run_with(tracking_uri, experiment, "dataset.name=blobs3", "model.output=softmax", "model.init=xavier",
                      "model.activation=tanh", "model.hidden=[6]", "train.lr=0.05", "train.batch_size=10",
                      "train.iterations=200", "train.log_every=50", "seed=3")
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["model.output"] == "softmax" and run.data.params["model.init"] == "xavier"
    assert run.data.params["train.batch_size"] == "10"
    names = (record.ERROR_METRIC, record.TEST_ERROR_METRIC, record.TRAIN_ACCURACY_METRIC, record.TEST_ACCURACY_METRIC)
    for name in names:
        points = history(client, result.run_id, name)
        assert [m.step for m in points] == [0, 50, 100, 150, 200]
        (final,) = client.get_metric_history(result.run_id, record.final_metric(name))
        assert final.value == points[-1].value == result.final_metrics[record.final_metric(name)]

    # the final figures are those of the logged weights, computed plainly
    weights = record.read_weights(client.download_artifacts(result.run_id, "", str(tmp_path)))
    data = three_blobs()
    for X, y, error, accuracy in ((data.X, data.y, "error", "train_accuracy"),
                                  (data.X_test, data.y_test, "test_error", "test_accuracy")):
        out = forward(weights, X, "tanh", "softmax")[-1]
        assert result.final_metrics[record.final_metric(error)] == pytest.approx(np.mean(np.abs(y - out)), abs=1e-14)
        assert result.final_metrics[record.final_metric(accuracy)] == np.mean(out.argmax(1) == y.argmax(1))
    assert result.final_metrics["final_test_accuracy"] >= 0.8  # it learned something

    # the job shuffles with the generator derived from `seed` and initialises with model.init
    direct = train(init_weights(layer_sizes(3, [6], 3), np.random.RandomState(3), "xavier"), data.X, data.y,
                   iterations=200, log_every=50, lr=0.05, hidden_activation="tanh", output_activation="softmax",
                   batch_size=10, rng=shuffle_rng(3))
    assert all(np.array_equal(a, b) for a, b in zip(weights, direct.weights))


def test_default_run_logs_final_error_and_no_test_scores(tracking_uri, experiment, client):
    result = run_with(tracking_uri, experiment, "train.iterations=30", "train.log_every=10")
    points = history(client, result.run_id, record.ERROR_METRIC)
    (final,) = client.get_metric_history(result.run_id, record.final_metric(record.ERROR_METRIC))
    assert final.value == points[-1].value == result.final_error and final.step == 30
    metrics = client.get_run(result.run_id).data.metrics
    assert record.TEST_ERROR_METRIC not in metrics and record.final_metric(record.TEST_ERROR_METRIC) not in metrics


def test_divergence_marks_the_run_failed_with_step_and_layer(tracking_uri, experiment, client, datasets):
    with pytest.raises(DivergenceError) as raised:
        run_with(tracking_uri, experiment, "dataset.name=noisy", "model.activation=relu", "model.output=softmax",
                 "model.init=he", "model.hidden=[8]", "train.lr=10", "train.iterations=5000", "train.log_every=10")
    step = raised.value.step
    (run,) = runs_of(client, experiment)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == f"DivergenceError: {raised.value}"
    assert f"diverged at step {step}: " in run.data.tags["error"] and "weights of layer" in run.data.tags["error"]
    points = history(client, run.info.run_id, record.ERROR_METRIC)
    assert [m.step for m in points] == list(range(0, step + 1, 10))  # kept, and none after the failure
    assert all(np.isfinite(m.value) for m in points)
    assert not any(name.startswith(record.FINAL_PREFIX) for name in run.data.metrics)
    assert record.WEIGHTS_HASH_TAG not in run.data.tags


@pytest.mark.parametrize("override, key", [
    ("model.hidden=[0]", "model.hidden"),
    ("model.output=linear", "model.output"),
    ("model.output=tanh", "model.output"),
    ("model.init=normal", "model.init"),
    ("train.batch_size=-1", "train.batch_size"),
    ("train.batch_size=5", "train.batch_size"),  # the seed table has 4 rows
    ("model.output=softmax", "model.output"),  # ... and one target column
])
def test_bad_model_and_training_values_are_rejected_before_any_run(tracking_uri, experiment, client, override, key):
    from runner.config import ConfigError

    with pytest.raises(ConfigError) as raised:
        run_with(tracking_uri, experiment, override)
    message = str(raised.value)
    assert message.startswith(f"{key}=") and "\n" not in message
    assert override.split("=", 1)[1].strip("[]") in message
    assert runs_of(client, experiment) == []


def test_cli_divergence_is_one_line_exit_1_and_a_failed_run(tmp_path, client, tracking_uri, experiment):
    """A real diverging config on the shipped seed table: relu and an absurd learning rate."""
    import subprocess

    done = subprocess.run([*NN_RUN, "model.activation=relu", "model.hidden=[8,8]", "train.lr=1e200",
                           "train.iterations=100", "train.log_every=10", f"tracking.uri={tracking_uri}",
                           f"tracking.experiment={experiment}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("nn-run: training diverged at step 1: its update made the weights of layer 2 ")
    assert "Traceback" not in done.stderr
    (run,) = runs_of(client, experiment)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "DivergenceError: " + last[len("nn-run: "):]

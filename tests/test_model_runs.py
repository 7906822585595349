"""Model and training options through run_job and nn-run against a real SQLite store: metrics, failures, bad values."""

import numpy as np
import pytest
from conftest import NN_RUN, compose_config, runs_of
from oracles import forward

from runner.job import load_data, run_job
from runner.nn.network import init_weights, layer_sizes
from runner.nn.training import DivergenceError, shuffle_rng, train
from runner.tracking import record


def run_with(tracking_uri, experiment, *overrides):
    overrides = [f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}", *overrides]
    return run_job(compose_config(*overrides), overrides, run_name="test-run")


BLOBS = ["dataset=blobs", "dataset.n_samples=90", "dataset.noise=2.5"]  # 3 overlapping classes, 20% held out
# relu and softmax with lr 1 on standardised iris: the summed gradient of 120 rows overflows within ~100 steps
DIVERGING = ["dataset=iris", "model.activation=relu", "model.output=softmax", "model.init=he", "model.hidden=[16]",
             "train.lr=1", "train.iterations=1000", "train.log_every=10"]


def history(client, run_id, name):
    return sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)


def test_classification_run_logs_test_and_accuracy_scores_and_finals(tracking_uri, experiment, client, tmp_path):
    result = run_with(tracking_uri, experiment, *BLOBS, "model.output=softmax", "model.init=xavier",
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
    data = load_data(compose_config(*BLOBS).dataset)
    assert data.classes is not None and data.X_test is not None
    for X, y, error, accuracy in ((data.X, data.y, "error", "train_accuracy"),
                                  (data.X_test, data.y_test, "test_error", "test_accuracy")):
        out = forward(weights, X, "tanh", "softmax")[-1]
        assert result.final_metrics[record.final_metric(error)] == pytest.approx(np.mean(np.abs(y - out)), abs=1e-14)
        assert result.final_metrics[record.final_metric(accuracy)] == np.mean(out.argmax(1) == y.argmax(1))
    assert result.final_metrics["final_test_accuracy"] > 0.5  # three classes: chance is 1/3

    # the job shuffles with the generator derived from `seed` and initialises with model.init
    direct = train(init_weights(layer_sizes(data.X.shape[1], [6], 3), np.random.RandomState(3), "xavier"), data.X, data.y,
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


def test_divergence_marks_the_run_failed_with_step_and_layer(tracking_uri, experiment, client):
    with pytest.raises(DivergenceError) as raised:
        run_with(tracking_uri, experiment, *DIVERGING)
    step = raised.value.step
    assert 10 < step < 1000
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
    import re
    import subprocess

    done = subprocess.run([*NN_RUN, *DIVERGING, f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"nn-run: training diverged at step \d+: its update made the weights of layers? [\d, ]+ "
                        r"(nan|inf); try a smaller learning rate", last), last
    assert "Traceback" not in done.stderr
    (run,) = runs_of(client, experiment)
    assert run.info.status == "FAILED" and run.data.tags["error"] == "DivergenceError: " + last[len("nn-run: "):]

"""A job end to end against a real SQLite MLflow store: what one run records."""

import json
import os

import mlflow.pyfunc
import numpy as np
import pytest
import yaml
from conftest import compose_config, runs_of
from seed_program import X, Y, seed_program

from runner.job import run_job
from runner.nn.training import mean_abs
from runner.tracking import record


def run_with(tracking_uri, experiment, *overrides):
    overrides = [f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}", *overrides]
    cfg = compose_config(*overrides)
    return run_job(cfg, overrides, run_name="test-run"), cfg


@pytest.fixture(scope="module")
def seed_oracle():
    return seed_program()


def test_default_run_records_the_seed_program(tracking_uri, experiment, client, seed_oracle, tmp_path):
    syn0, syn1, seed_errors, seed_l2 = seed_oracle
    result, _ = run_with(tracking_uri, experiment)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "test-run"

    params = run.data.params
    assert params["seed"] == "1" and params["dataset.name"] == "seed"
    assert params["model.hidden"] == "[4]" and params["model.activation"] == "sigmoid"
    assert params["train.iterations"] == "60000" and params["train.lr"] == "1.0"
    assert params["train.log_every"] == "10000"

    history = sorted(client.get_metric_history(result.run_id, record.ERROR_METRIC), key=lambda m: m.step)
    assert [m.step for m in history] == [0, 10000, 20000, 30000, 40000, 50000, 60000]
    assert [m.value for m in history][:-1] == [float(e) for e in seed_errors]
    assert history[-1].value == mean_abs(Y - _predict(syn0, syn1))

    folder = client.download_artifacts(result.run_id, "", str(tmp_path))
    weights = record.read_weights(folder)
    assert len(weights) == 2
    assert np.array_equal(weights[0], syn0) and np.array_equal(weights[1], syn1)
    assert run.data.tags[record.WEIGHTS_HASH_TAG] == record.weights_sha256([syn0, syn1]) == result.weights_sha256

    path = os.path.join(folder, record.PREDICTIONS_FILE)
    assert open(path).readline().strip() == "x0,x1,x2,target,prediction,last_iteration_output"
    rows = np.loadtxt(path, delimiter=",", skiprows=1)
    assert np.array_equal(rows[:, :3], X) and np.array_equal(rows[:, 3:4], Y)
    # predictions: the final weights' outputs, what the logged model returns (printed with repr: every bit)
    assert np.array_equal(rows[:, 4:5], _predict(syn0, syn1))
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/{record.MODEL_NAME}")
    assert np.array_equal(model.predict(X.astype(float)), rows[:, 4:5])
    assert not np.array_equal(rows[:, 4:5], seed_l2)  # one update apart
    assert np.array_equal(rows[:, 5:6], seed_l2)  # what the seed prints: its last iteration's output

    logged = yaml.safe_load(open(os.path.join(folder, record.CONFIG_FILE)))
    assert logged["train"] == {"iterations": 60000, "lr": 1.0, "log_every": 10000, "batch_size": 0,
                               "checkpoint_every": 60.0}
    assert yaml.safe_load(open(os.path.join(folder, record.OVERRIDES_FILE))) == [
        f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"]


def _predict(syn0, syn1):
    from runner.nn.network import predict

    return predict([syn0, syn1], X)


def test_tags_record_code_and_versions(tracking_uri, experiment, client):
    import subprocess

    import mlflow
    import numpy

    result, _ = run_with(tracking_uri, experiment, "train.iterations=10", "train.log_every=5")
    tags = client.get_run(result.run_id).data.tags
    head = subprocess.run(["git", "-C", os.path.dirname(record.__file__), "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    assert tags["git_commit"] == head and tags["mlflow.source.git.commit"] == head
    assert tags["git_dirty"] in ("true", "false")
    assert tags["numpy_version"] == numpy.__version__ and tags["mlflow_version"] == mlflow.__version__
    assert tags["hydra_core_version"] and tags["python_version"].count(".") == 2
    assert json.loads(tags["overrides"])[-2:] == ["train.iterations=10", "train.log_every=5"]


def test_overrides_change_what_is_logged(tracking_uri, experiment, client, tmp_path):
    result, _ = run_with(tracking_uri, experiment, "model.hidden=[5,3]", "model.activation=tanh",
                         "train.lr=0.5", "train.iterations=250", "train.log_every=100", "seed=7")
    run = client.get_run(result.run_id)
    assert run.data.params["model.hidden"] == "[5, 3]"
    assert run.data.params["model.activation"] == "tanh"
    assert run.data.params["train.lr"] == "0.5" and run.data.params["seed"] == "7"
    steps = sorted(m.step for m in client.get_metric_history(result.run_id, record.ERROR_METRIC))
    assert steps == [0, 100, 200, 250]
    weights = record.read_weights(client.download_artifacts(result.run_id, "weights", str(tmp_path)).rsplit("/weights", 1)[0])
    assert [w.shape for w in weights] == [(3, 5), (5, 3), (3, 1)]


@pytest.mark.parametrize("override, key", [
    ("train.iterations=0", "train.iterations"),
    ("train.log_every=0", "train.log_every"),
    ("train.lr=0", "train.lr"),
    ("train.lr=-1", "train.lr"),
    ("train.lr=inf", "train.lr"),
    ("model.hidden=[4,0]", "model.hidden"),
    ("model.activation=softsign", "model.activation"),
    ("dataset.name=nope", "dataset.name"),
])
def test_bad_values_are_rejected_before_any_run(tracking_uri, experiment, client, override, key):
    from runner.config import ConfigError

    with pytest.raises(ConfigError) as raised:
        run_with(tracking_uri, experiment, override)
    message = str(raised.value)
    assert message.startswith(f"{key}=") and "\n" not in message
    assert override.split("=", 1)[1].strip("[]").split(",")[0] in message  # the bad value is named
    assert runs_of(client, experiment) == []

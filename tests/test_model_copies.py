"""tracking.ModelCopies, the batched sweep's way to log its models (saved once, copied per run),
against MLflow's own Model.log as the oracle: every run must end with the same record."""

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from seed_program import X as SEED_X

from runner.job import MODEL_CODE_FILE
from runner.nn.network import predict
from runner.tracking import record
from runner.tracking.client import ModelCopies, tracked_run
from runner.tracking.model_export import log_network_model

X = SEED_X.astype(np.float64)
MODEL_SECTION = {"hidden": [4], "activation": "sigmoid", "output": "sigmoid", "init": "uniform"}
STEP = 300
VOLATILE = ("artifact_path", "model_id", "model_uuid", "run_id", "utc_time_created")  # differ between any two models


def log_network(uri, experiment, weights, copies, flush_first=False):
    """A run like a job's: params, metric points, the weights as files, then the model; returns its id.

    `flush_first` writes the params and points before the model (as a run that trains does now and then).
    """
    predictions = predict(weights, X)
    with tracked_run(uri, experiment, "net") as run:
        run.log_params({"seed": "1", "model.hidden": "[4]"}, defer=True)
        for step in (0, 100, STEP):
            run.log_metric(record.ERROR_METRIC, step, 0.5 / (step + 1))
        run.log_metric(record.final_metric(record.ERROR_METRIC), STEP, 0.25)
        if flush_first:
            run.flush()
        with tempfile.TemporaryDirectory() as folder:
            record.write_weights(folder, weights)
            log_network_model(run, MODEL_CODE_FILE, folder, len(weights), X, predictions, MODEL_SECTION, step=STEP,
                              copies=copies)
    return run.run_id


def model_record(client, run_id):
    """(run params, [output step], LoggedModel, its metric links, {file: bytes}, MLmodel dict) of a run's model."""
    run = client.get_run(run_id)
    (output,) = run.outputs.model_outputs
    model = client.get_logged_model(output.model_id)
    folder = Path(model.artifact_location.removeprefix("file://"))
    files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    mlmodel = yaml.safe_load(files.pop("MLmodel"))
    links = sorted((m.key, m.value, m.step, m.timestamp) for m in model.metrics or [])
    return run.data.params, output.step, model, links, files, mlmodel


def weights_of(seed):
    rng = np.random.RandomState(seed)
    return [2 * rng.random_sample((3, 4)) - 1, 2 * rng.random_sample((4, 1)) - 1]


def test_each_copy_is_the_record_model_log_makes(tracking_uri, experiment, client):
    copies = ModelCopies()  # shared by both networks, as by the jobs of one batch
    for seed in (1, 2):
        weights = weights_of(seed)
        alone = model_record(client, log_network(tracking_uri, experiment, weights, copies=None))
        copied = model_record(client, log_network(tracking_uri, experiment, weights, copies=copies))
        (params, step, model, links, files, mlmodel), (params_1, step_1, model_1, links_1, files_1, mlmodel_1) = (
            copied, alone)
        # Model.log logs the model config as params: the run's model.* params, each key once (no model/hidden)
        assert params == params_1 == {"seed": "1", "model.hidden": "[4]", "model.activation": "sigmoid",
                                      "model.output": "sigmoid", "model.init": "uniform"}
        assert step == step_1 == STEP
        assert (model.name, model.status, model.model_type, model.tags, model.params) == (
            model_1.name, model_1.status, model_1.model_type, model_1.tags, model_1.params)
        assert model.status.name == "READY" and model.params["seed"] == "1"
        assert [link[:3] for link in links] == [link[:3] for link in links_1] != []
        assert files.keys() == files_1.keys() and files == files_1  # code, weights, examples, environments
        for key in VOLATILE:
            mlmodel.pop(key), mlmodel_1.pop(key)
        sources = mlmodel["flavors"]["python_function"]["artifacts"]
        sources_1 = mlmodel_1["flavors"]["python_function"]["artifacts"]
        assert {k: v["path"] for k, v in sources.items()} == {k: v["path"] for k, v in sources_1.items()}
        for source in (sources, sources_1):  # where each run's weight files were written from
            for value in source.values():
                value.pop("uri")
        assert mlmodel == mlmodel_1
        assert mlmodel["model_size_bytes"] > 0 and mlmodel["signature"]


def test_a_copy_links_points_written_before_it_as_model_log_does(tracking_uri, experiment, client):
    copies = ModelCopies()
    weights = weights_of(6)
    log_network(tracking_uri, experiment, weights_of(7), copies=copies)  # the model is saved by an earlier run
    alone = model_record(client, log_network(tracking_uri, experiment, weights, None, flush_first=True))
    copied = model_record(client, log_network(tracking_uri, experiment, weights, copies, flush_first=True))
    (params, step, model, links, files, _), (params_1, step_1, model_1, links_1, files_1, _) = copied, alone
    assert params == params_1 and step == step_1 == STEP and model.params == model_1.params
    assert [link[:3] for link in links] == [link[:3] for link in links_1] == [
        (record.ERROR_METRIC, 0.5 / (STEP + 1), STEP), (record.final_metric(record.ERROR_METRIC), 0.25, STEP)]
    assert files == files_1


def test_copies_carry_their_own_weights_and_predict_with_them(tracking_uri, experiment, client, tmp_path):
    import mlflow.pyfunc

    copies = ModelCopies()
    for seed in (3, 4, 5):
        weights = weights_of(seed)
        run_id = log_network(tracking_uri, experiment, weights, copies=copies)
        *_, files, _ = model_record(client, run_id)
        with tempfile.TemporaryDirectory() as folder:
            for k, w in enumerate(weights):
                path = Path(folder, f"{k}.npy")
                path.write_bytes(files[f"artifacts/{record.weight_file(k).rsplit('/', 1)[1]}"])
                assert np.array_equal(np.load(path), w)
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/{record.MODEL_NAME}")
        new = np.array([[0.5, 0.25, 1.0], [-1.0, 2.0, 1.0]])
        assert np.array_equal(model.predict(new), predict(weights, new))


def test_a_failed_copy_leaves_its_model_failed_not_pending(tracking_uri, experiment, client):
    copies = ModelCopies()
    log_network(tracking_uri, experiment, weights_of(1), copies=copies)  # saves the model once
    with pytest.raises(FileNotFoundError):
        with tracked_run(tracking_uri, experiment, "broken") as run:
            run.log_metric(record.ERROR_METRIC, STEP, 0.5)
            copies.log(run, record.MODEL_NAME, None, artifacts={"layer_0": os.path.join("/nonexistent", "w.npy")},
                       code_paths=[], model_config={"model": MODEL_SECTION}, input_example=X, output_example=X,
                       pip_requirements=[], step=STEP)
    (output,) = client.get_run(run.run_id).outputs.model_outputs
    assert client.get_logged_model(output.model_id).status.name == "FAILED"
    assert client.get_run(run.run_id).info.status == "FAILED"


def test_releasing_a_batch_removes_the_saved_model(tracking_uri, experiment):
    from runner.job import release_batch

    shared = {"model": ModelCopies()}
    log_network(tracking_uri, experiment, weights_of(1), copies=shared["model"])
    saved = Path(shared["model"]._folder.name)
    assert (saved / "python_env.yaml").exists()
    release_batch(shared)
    assert not saved.exists() and shared == {}
    release_batch(shared)  # nothing left to release: no error

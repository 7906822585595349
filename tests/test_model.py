"""The MLflow model of a run: models from code, loaded with mlflow.pyfunc and served over HTTP."""

import json
import modulefinder
import os
import subprocess
import sys
import tempfile
import urllib.request

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config
from oracles import forward
from seed_program import X as SEED_X
from servers import model_server

from runner.job import MODEL_CODE_FILE, run_job
from runner.nn.network import predict
from runner.pyfunc_model import predict_arguments
from runner.tracking import record
from runner.tracking.model_export import PACKAGE_DIR, code_modules, pip_requirements

X = SEED_X.astype(np.float64)  # the signature takes float64, as the runner's data sets are

# inputs the network never saw: the model must compute, not look up
NEW_INPUTS = np.array([[0.5, 0.25, 1.0], [-1.0, 2.0, 1.0], [0.1, 0.9, 0.0]])


def trained_run(tracking_uri, experiment, *overrides):
    overrides = [f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}",
                 "train.iterations=300", "train.log_every=100", *overrides]
    return run_job(compose_config(*overrides), overrides, run_name="model-test").run_id


def logged_weights(client, run_id, folder):
    return record.read_weights(client.download_artifacts(run_id, record.WEIGHTS_DIR, str(folder)).rsplit("/", 1)[0])


@pytest.mark.parametrize("overrides, hidden_activation", [
    ((), "sigmoid"),
    (("model.hidden=[5,3]", "model.activation=tanh"), "tanh"),
    (("model.hidden=[6]", "model.activation=relu", "seed=3"), "relu"),
])
def test_pyfunc_model_predicts_what_the_runner_predicts(tracking_uri, experiment, client, tmp_path, overrides,
                                                        hidden_activation):
    import mlflow

    run_id = trained_run(tracking_uri, experiment, *overrides)
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/{record.MODEL_NAME}")
    weights = logged_weights(client, run_id, tmp_path)
    for inputs in (X, NEW_INPUTS):
        expected = predict(weights, inputs, hidden_activation)
        assert np.array_equal(model.predict(inputs), expected)  # the runner's own forward pass, bit for bit
        assert np.allclose(model.predict(inputs), forward(weights, inputs, hidden_activation)[-1], rtol=1e-12)
        assert np.array_equal(model.predict(pd.DataFrame(inputs)), expected)  # a data frame works too


def test_model_of_a_scaled_multiclass_dataset_follows_its_hidden_and_output_activations(tracking_uri, experiment,
                                                                                          client, tmp_path):
    """iris: 4 standardised features plus the bias column in (as predictions.csv has them), softmax out."""
    import mlflow

    run_id = trained_run(tracking_uri, experiment, "dataset=iris", "model.hidden=[6]", "model.activation=tanh",
                         "model.output=softmax", "train.lr=0.01")
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/{record.MODEL_NAME}")
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, 5)
    assert model.metadata.get_output_schema().inputs[0].shape == (-1, 3)
    rows = np.loadtxt(client.download_artifacts(run_id, record.PREDICTIONS_FILE, str(tmp_path)), delimiter=",",
                      skiprows=1)
    inputs = np.ascontiguousarray(rows[:, :5])
    weights = logged_weights(client, run_id, tmp_path / "w")
    predicted = model.predict(inputs)
    assert predicted.shape == (len(inputs), 3)
    assert np.array_equal(predicted, predict(weights, inputs, "tanh", "softmax"))
    assert np.allclose(predicted, forward(weights, inputs, "tanh", "softmax")[-1], rtol=1e-12)
    assert np.allclose(predicted.sum(axis=1), 1.0)
    assert not np.allclose(predicted, predict(weights, inputs, "tanh", "sigmoid"))  # the output key mattered


def test_a_config_without_an_output_key_keeps_predicts_default():
    """A model logged before model.output existed still loads: the missing key means predict's default."""
    assert predict_arguments({"hidden": [4], "activation": "relu"}) == {"hidden_activation": "relu"}
    assert predict_arguments({"activation": "tanh", "output": "softmax", "init": "he"}) == {
        "hidden_activation": "tanh", "output_activation": "softmax"}


def test_model_is_code_and_npy_files_with_signature_example_and_pinned_requirements(tracking_uri, experiment,
                                                                                   client, tmp_path):
    import mlflow
    import yaml

    run_id = trained_run(tracking_uri, experiment, "model.hidden=[4,2]")
    mlflow.set_tracking_uri(tracking_uri)
    folder = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{record.MODEL_NAME}", dst_path=str(tmp_path))
    files = {os.path.relpath(os.path.join(root, name), folder) for root, _, names in os.walk(folder) for name in names}
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))]  # nothing that runs on load
    assert {"artifacts/layer_0.npy", "artifacts/layer_1.npy", "artifacts/layer_2.npy", "pyfunc_model.py",
            "code/runner/nn/network.py", "code/runner/nn/activations.py"} <= files
    # the code is what pyfunc_model.py imports of the runner, nothing else (the package has 45 files)
    assert {f for f in files if f.startswith("code/")} == {f"code/{module}" for module in imported_runner_modules()}

    mlmodel = yaml.safe_load(open(os.path.join(folder, "MLmodel")))
    flavor = mlmodel["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"  # models from code, no pickled object
    # the model's config is the run's model.* params, which MLflow logs as params again: each key once, same text
    assert flavor["config"] == {"model.hidden": "[4, 2]", "model.activation": "sigmoid", "model.output": "sigmoid",
                                "model.init": "uniform"}
    params = client.get_run(run_id).data.params
    assert {key: params[key] for key in flavor["config"]} == flavor["config"]
    assert not [key for key in params if "/" in key]
    assert mlmodel["run_id"] == run_id
    tensor = {"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 3]}}
    assert json.loads(mlmodel["signature"]["inputs"]) == [tensor]
    tensor["tensor-spec"]["shape"] = [-1, 1]
    assert json.loads(mlmodel["signature"]["outputs"]) == [tensor]
    assert json.load(open(os.path.join(folder, "input_example.json"))) == X[:5].tolist()
    assert json.load(open(os.path.join(folder, "serving_input_example.json"))) == {"inputs": X[:5].tolist()}
    requirements = open(os.path.join(folder, "requirements.txt")).read().split()
    assert requirements == pip_requirements() == [f"mlflow=={mlflow.__version__}", f"numpy=={np.__version__}"]

    weights = logged_weights(client, run_id, tmp_path / "run")
    model_weights = [np.load(os.path.join(folder, "artifacts", f"layer_{k}.npy"), allow_pickle=False) for k in range(3)]
    assert all(np.array_equal(a, b) for a, b in zip(model_weights, weights))
    # the points at step = iterations (the final weights') are the model's own metrics in MLflow
    (logged,) = client.search_logged_models([client.get_run(run_id).info.experiment_id],
                                            filter_string=f"source_run_id = '{run_id}'")
    assert sorted((m.key, m.step) for m in logged.metrics) == [
        (record.ERROR_METRIC, 300), (record.final_metric(record.ERROR_METRIC), 300)]


def imported_runner_modules(script=MODEL_CODE_FILE, package_dir=PACKAGE_DIR):
    """The oracle: the package's modules that Python's own modulefinder finds `script` importing."""
    finder = modulefinder.ModuleFinder(path=[str(package_dir.parent)])  # the package's modules, not the world's
    finder.run_script(str(script))
    return {os.path.relpath(module.__file__, package_dir.parent) for name, module in finder.modules.items()
            if name.split(".")[0] == package_dir.name}


def test_the_models_code_is_every_module_its_file_imports_through_any_import_form(tmp_path):
    package = tmp_path / "pkg"
    files = {"__init__.py": "", "a/__init__.py": "import json\n", "a/b.py": "from pkg.c import d\n",
             "c/__init__.py": "", "c/d.py": "def f():\n    import pkg.e  # imported only when called\n",
             "e.py": "import os\n", "unused.py": "", "c/unused.py": ""}
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    script = tmp_path / "model.py"
    script.write_text("import numpy\nimport pkg.a.b\n")
    expected = {"pkg/__init__.py", "pkg/a/__init__.py", "pkg/a/b.py", "pkg/c/__init__.py", "pkg/c/d.py", "pkg/e.py"}
    assert set(code_modules(script, package)) == imported_runner_modules(script, package) == expected
    assert set(code_modules(MODEL_CODE_FILE)) == imported_runner_modules() >= {"runner/nn/network.py"}


def test_log_model_false_logs_no_model(tracking_uri, experiment, client):
    run_id = trained_run(tracking_uri, experiment, "tracking.log_model=false")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.search_logged_models([run.info.experiment_id]) == []
    assert {f.path for f in client.list_artifacts(run_id)} >= {record.WEIGHTS_DIR, record.PREDICTIONS_FILE}


def test_loaded_model_runs_the_code_it_carries(tracking_uri, experiment, client, tmp_path):
    """A fresh process that loads the model imports runner from the model's own code folder."""
    run_id = trained_run(tracking_uri, experiment)
    script = ("import json, sys, mlflow, numpy\n"
              f"model = mlflow.pyfunc.load_model('runs:/{run_id}/{record.MODEL_NAME}', dst_path=sys.argv[1])\n"
              "import runner.nn.network\n"
              "print(runner.nn.network.__file__)\n"
              "print(json.dumps(model.predict(numpy.array([[1.0, 0.0, 1.0]])).tolist()))\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "loaded")], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "MLFLOW_TRACKING_URI": tracking_uri})
    assert done.returncode == 0, done.stderr
    module_file, prediction = done.stdout.strip().splitlines()[-2:]
    assert module_file.startswith(str(tmp_path / "loaded")) and module_file.endswith("/code/runner/nn/network.py")
    weights = logged_weights(client, run_id, tmp_path / "run")
    assert json.loads(prediction) == predict(weights, [[1.0, 0.0, 1.0]]).tolist()


@pytest.mark.slow
def test_served_model_answers_invocations_with_the_runners_predictions(tracking_uri, experiment, client, tmp_path):
    run_id = trained_run(tracking_uri, experiment, "model.hidden=[5,3]", "model.activation=tanh")
    weights = logged_weights(client, run_id, tmp_path)
    integers = [[0, 1, 1], [1, 1, 1]]  # JSON numbers without a fraction: converted to the signature's float64
    with tempfile.TemporaryDirectory() as folder, model_server(f"runs:/{run_id}/model", tracking_uri, folder) as url:
        for body, inputs in (({"inputs": NEW_INPUTS.tolist()}, NEW_INPUTS),
                             ({"dataframe_split": {"columns": ["x0", "x1", "x2"], "data": NEW_INPUTS.tolist()}},
                              NEW_INPUTS),
                             ({"inputs": integers}, np.array(integers, dtype=np.float64))):
            request = urllib.request.Request(f"{url}/invocations", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                answer = json.load(response)
            assert np.array_equal(np.array(answer["predictions"]), predict(weights, inputs, "tanh"))

"""The trained network as an MLflow model, runs:/RUN_ID/model: loadable with mlflow.pyfunc, servable.

The model is runner/pyfunc_model.py (models from code) plus the weight files; the runner package
travels with it as code, so a machine that serves it needs only numpy and mlflow.
"""

import os
from pathlib import Path

from runner.tracking import record
from runner.tracking.provenance import package_version

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the runner package: it travels with the model as code
EXAMPLE_ROWS = 5  # input example: the first rows of the training inputs


def pip_requirements():
    """What the model needs to load, pinned to what trained it (given, so MLflow need not infer them)."""
    return [f"mlflow=={package_version('mlflow')}", f"numpy=={package_version('numpy')}"]


def log_network_model(run, code_file, weights_folder, n_weights, X, predictions, model_section, step, copies=None):
    """Log the weight files written by record.write_weights in weights_folder as the run's MLflow model.

    `code_file` is the model's Python file (runner/pyfunc_model.py, which MLflow runs to load it).
    `model_section` is the `model` part of the run's config (the model reads its activations);
    `predictions` give the signature its output shape; the model is linked to the metrics at `step`.
    `copies` (a tracking.ModelCopies) logs a copy of a model saved once for a batch of such runs.
    """
    artifacts = {record.model_weight_artifact(k): os.path.join(weights_folder, record.weight_file(k))
                 for k in range(n_weights)}
    return run.log_code_model(record.MODEL_NAME, code_file, artifacts=artifacts, code_paths=[str(PACKAGE_DIR)],
                              model_config={"model": model_section}, input_example=X[:EXAMPLE_ROWS],
                              output_example=predictions[:EXAMPLE_ROWS], pip_requirements=pip_requirements(),
                              step=step, copies=copies)

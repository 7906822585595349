"""Where the MLflow UI shows a store's runs, and the command that serves a local store's UI. No MLflow here."""

import os
import shutil
import sys
from pathlib import Path

from runner.tracking.uri import is_server, redact

UI_HOST, UI_PORT = "127.0.0.1", 5000  # where `mlflow ui` serves a local store's UI: loopback only


def mlflow_executable():
    """How to call the `mlflow` command installed beside this Python: `mlflow` if PATH finds it."""
    beside = Path(sys.executable).parent / "mlflow"
    found = shutil.which("mlflow")
    if not beside.exists() or (found and Path(found).resolve() == beside.resolve()):
        return "mlflow"
    relative = os.path.relpath(beside)
    return relative if not relative.startswith("..") else str(beside)


def ui_command(uri):
    """The shell command that serves the MLflow UI for a local store, on loopback (None for a tracking server,
    which serves its own UI)."""
    if is_server(uri):
        return None
    return f"{mlflow_executable()} ui --backend-store-uri {uri} --host {UI_HOST} --port {UI_PORT}"


# MLflow 3's UI opens on its GenAI layout unless told otherwise (its toggle, or this query parameter)
TRAINING_LAYOUT = "workflowType=machine_learning"


def runs_page(uri, experiment_id):
    """Where the UI lists an experiment's runs, in its model-training layout, and the command that serves it."""
    page = f"#/experiments/{experiment_id}/runs?{TRAINING_LAYOUT}"
    if is_server(uri):
        return f"{redact(uri).rstrip('/')}/{page}"
    return f"http://{UI_HOST}:{UI_PORT}/{page} (serve it with: {ui_command(uri)})"

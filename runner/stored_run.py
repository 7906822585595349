"""Read a logged run back from MLflow: the run, its metric histories and its artifacts.

Knows nothing of the network: artifacts are downloaded as files for the caller to read.
"""

import os

from runner.tracking import mlflow  # runner.tracking sets the telemetry default before importing mlflow
from mlflow.exceptions import MlflowException  # noqa: E402

SQLITE_PREFIX = "sqlite:///"


class NotInStore(LookupError):
    """No such store, run or artifact at the tracking URI; the message is one line for the user."""


def open_store(uri):
    """An MlflowClient on an existing store; a SQLite URI naming no file raises NotInStore
    (opening it would create an empty store as a side effect of a failed look-up)."""
    if uri.startswith(SQLITE_PREFIX):
        path = uri[len(SQLITE_PREFIX):].split("?", 1)[0]  # without query parameters
        if path and not os.path.isfile(path):
            raise NotInStore(f"no MLflow store at {uri} (no file {path!r})")
    return mlflow.MlflowClient(tracking_uri=uri)


def get_run(client, run_id, uri):
    """The run with this id; NotInStore when the store has none."""
    try:
        return client.get_run(run_id)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise NotInStore(f"no run {run_id!r} in the MLflow store at {uri}") from None
        raise


def experiment_name(client, run):
    return client.get_experiment(run.info.experiment_id).name


def download_artifacts(client, run_id, folder):
    """Every artifact of the run, under `folder`; returns the local root. NotInStore when it has none."""
    try:
        if not client.list_artifacts(run_id):  # downloading nothing would only log a line of its own
            raise NotInStore(f"run {run_id} has no artifacts: they are gone, or it was not logged by nn-run")
        return client.download_artifacts(run_id, "", folder)
    except (MlflowException, OSError) as error:
        raise NotInStore(f"cannot download the artifacts of run {run_id}: {str(error).splitlines()[0]}") from None


def metric_histories(client, run):
    """{metric key: [(step, value), ...]} with every logged point, in step (then time) order."""
    histories = {}
    for key in run.data.metrics:
        points = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp))
        histories[key] = [(m.step, m.value) for m in points]
    return histories


def find_run_by_tag(client, experiment, key, value):
    """Id of the newest run of `experiment` whose tag `key` equals `value`, or None."""
    found = client.get_experiment_by_name(experiment)
    if found is None or "'" in value:  # a quote cannot be written inside the filter's string literal
        return None
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`{key}` = '{value}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None

"""A sweep's runs as nn-compare reads them, and its comparison's files logged to the parent run.

On a SQLite store whose tables MLflow's plain reads know (mlflow_private.open_sqlite), with plain
SQL and file copies: no MLflow import (~2 s), and only the tags, params and latest metrics asked
for (10,000 children of 43 tags and 22 params each are 650,000 rows otherwise). On any other
store (a tracking server; a SQLite store at another schema revision), through MLflow's client
(runner/tracking/client.py). Both give runs with MLflow's Run attributes (info, data.params,
data.tags, data.metrics).
"""

from dataclasses import dataclass, field

from runner.tracking import mlflow_private
from runner.tracking.store_lock import sqlite_path


@dataclass
class RunInfo:
    """The fields of MLflow's RunInfo a comparison reads."""

    run_id: str
    run_name: str | None
    experiment_id: str
    user_id: str | None
    status: str
    start_time: int | None
    end_time: int | None
    lifecycle_stage: str
    artifact_uri: str


@dataclass
class RunData:
    """{key: value} of a run's params, tags and latest metric values (only those read)."""

    params: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


@dataclass
class Run:
    """A run read with plain SQL, shaped as MLflow's Run."""

    info: RunInfo
    data: RunData


def _run(found):
    info, params, tags, metrics = found
    return Run(RunInfo(**info), RunData(params, tags, metrics))


def log_artifact(uri, run, path, action):
    """Put the local file `path` among the artifacts of `run` (an MLflow Run or ours): a file copy where its artifact
    root is a local folder, as MLflow's client writes there; else MLflow's client uploads it (a tracking server's
    proxied artifacts, a bucket), and a refusal is ServerRefused naming `action`."""
    folder = mlflow_private.local_artifact_folder(run.info.artifact_uri)
    if folder is not None:
        mlflow_private.write_local_artifact(folder, path)
        return
    from runner.tracking import client  # MLflow (~2 s)

    with client.refusals(uri, None, action):
        client.log_artifact(uri, run.info.run_id, path)


def open_sweep_store(uri):
    """The store at `uri` as nn-compare reads it: a SqliteSweepStore where plain reads can, else a ClientSweepStore.
    The caller has checked the store exists (uri.check_store); close() it once read."""
    path = sqlite_path(uri)
    connection = mlflow_private.open_sqlite(path) if path not in (None, ":memory:") else None
    return ClientSweepStore(uri) if connection is None else SqliteSweepStore(uri, connection)


class SqliteSweepStore:
    """A SQLite store read with plain SQL in one read transaction (which holds writers off: close() it soon)."""

    def __init__(self, uri, connection):
        self.uri, self._connection = uri, connection

    def close(self):
        """End the read transaction; the store's writers may write again."""
        self._connection.close()

    def get_run(self, run_id):
        """The run `run_id` (every tag, param and latest metric), None if the store has none."""
        found = mlflow_private.sqlite_run(self._connection, run_id)
        return None if found is None else _run(found)

    def latest_run_with_tag(self, experiment, tag):
        """The most recently started run of the experiment named `experiment` that has tag `tag`; None if none."""
        found = mlflow_private.sqlite_latest_run_with_tag(self._connection, experiment, tag)
        return None if found is None else _run(found)

    def child_runs(self, parent, tags=None, params=None, metrics=None):
        """The runs whose parent is the run `parent`, oldest first, with only the `tags`, `params` and `metrics`
        keys named (None: all)."""
        return [_run(found) for found in mlflow_private.sqlite_child_runs(
            self._connection, parent.info.experiment_id, parent.info.run_id, tags, params, metrics)]

    def metric_histories(self, parent, run_ids, key):
        """{run id: [(step, value)] of metric `key`, by step} for each of `run_ids`, children of run `parent`."""
        found = mlflow_private.sqlite_child_histories(self._connection, parent.info.experiment_id,
                                                      parent.info.run_id, key)
        return {run_id: found.get(run_id, []) for run_id in run_ids}


class ClientSweepStore:
    """A store read and written through MLflow's client (runner/tracking/client.py)."""

    def __init__(self, uri):
        from runner.tracking import client  # MLflow (~2 s): only for a store the plain reads do not know

        self.uri, self._client = uri, client

    def close(self):
        pass

    def get_run(self, run_id):
        try:
            return self._client.get_run(self.uri, run_id)
        except self._client.MlflowException:
            return None

    def latest_run_with_tag(self, experiment, tag):
        return self._client.latest_run_with_tag(self.uri, experiment, tag)

    def child_runs(self, parent, tags=None, params=None, metrics=None):
        return self._client.child_runs(self.uri, parent)

    def metric_histories(self, parent, run_ids, key):
        return self._client.metric_histories(self.uri, run_ids, key)

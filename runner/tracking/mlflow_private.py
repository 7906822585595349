"""Every MLflow name this project uses that MLflow does not document as public, in one place.

Each is used only where no public API does the job; tests/test_private_names.py pins the
behaviour relied on, so an MLflow upgrade that changes one fails there, with the reason.
"""

import os
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlsplit

# MLflow's own names are imported where used: the plain SQLite reads at the end need no MLflow (nn-compare answers
# without its ~2 s import)


def validate_serving_input(model_path, serving_input):
    """The check Model.log makes of a saved model's serving input example (raises if the model rejects it).

    Needed by tracking.client.ModelCopies, which saves one model for many runs instead of calling Model.log.
    """
    # MLflow (~2 s to import): on use, so that the plain SQLite reads below need none of it
    from mlflow.models.utils import _validate_serving_input

    return _validate_serving_input(model_path, serving_input)


def context_tags():
    """MLflow's context tags, as mlflow.start_run and Model.log resolve them: the user, the source's name and
    type, the git commit of the source's checkout, a Databricks context's, MLFLOW_RUN_CONTEXT's (applied last),
    and those of installed context-provider plugins. MLflow documents the plugins, not this resolution."""
    # MLflow (~2 s to import): on use, so that the plain SQLite reads below need none of it
    from mlflow.tracking.context import registry

    return registry.resolve_tags()


def sqlalchemy_engines():
    """The SQLAlchemy engines MLflow keeps for this process, one per database URI (a forked process must not
    share its parent's connections: tracking.client.forget_inherited_connections)."""
    # MLflow (~2 s to import): on use, so that the plain SQLite reads below need none of it
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return list(SqlAlchemyStore._engine_map.values())


def metric_history_bulk(client, run_ids, key, runs_per_query):
    """{run id: [Metric]} of metric `key` for every run of `run_ids` that logged it, `runs_per_query` runs a query,
    through the SQL store's get_metric_history_bulk; None when `client`'s store is not MLflow's SQL store (a
    tracking server: MLflow's REST API has no public call that returns the history of many runs at once).

    Needed by tracking.client.metric_histories: one query per run made the end of a 10,000-job sweep take minutes.
    The store's method is public on the class but not documented, and reached through MlflowClient's private
    _tracking_client.
    """
    # MLflow (~2 s to import): on use, so that the plain SQLite reads below need none of it
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = client._tracking_client.store
    if not isinstance(store, SqlAlchemyStore):
        return None
    run_ids, found = list(run_ids), {}
    for start in range(0, len(run_ids), runs_per_query):
        for point in store.get_metric_history_bulk(run_ids[start:start + runs_per_query], key, max_results=2**62):
            found.setdefault(point.run_id, []).append(point)
    return found


def child_runs_bulk(client, experiment_id, parent_run_id, runs_per_query):
    """Every active run of experiment `experiment_id` whose mlflow.parentRunId tag is `parent_run_id`, oldest first,
    as search_runs gives them (info; every param, tag and latest metric), read from the SQL store's tables with a
    few plain queries (`runs_per_query` runs each); None when `client`'s store is not MLflow's SQL store.

    Needed by tracking.client.child_runs: search_runs builds an ORM object for every row of every run, 28-38 s for
    the 10,000 children of a sweep. The table models (mlflow.store.tracking.dbmodels) are MLflow's own, undocumented;
    tests/test_private_names.py checks the result against search_runs.
    """
    # MLflow (~2 s to import): on use, so that the plain SQLite reads below need none of it
    from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag  # on use, as above
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore  # on use, as above
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME  # on use, as above

    store = client._tracking_client.store
    if not isinstance(store, SqlAlchemyStore):
        return None
    with store.ManagedSessionMaker() as session:
        infos = (session.query(SqlRun.run_uuid, SqlRun.name, SqlRun.experiment_id, SqlRun.user_id, SqlRun.status,
                               SqlRun.start_time, SqlRun.end_time, SqlRun.lifecycle_stage, SqlRun.artifact_uri)
                 .join(SqlTag, SqlTag.run_uuid == SqlRun.run_uuid)
                 .filter(SqlRun.experiment_id == int(experiment_id), SqlRun.lifecycle_stage == "active",
                         SqlTag.key == MLFLOW_PARENT_RUN_ID, SqlTag.value == parent_run_id)
                 .order_by(SqlRun.start_time, SqlRun.run_uuid).all())
        ids = [info.run_uuid for info in infos]
        tags, params, metrics = ({run_id: [] for run_id in ids} for _ in range(3))
        for start in range(0, len(ids), runs_per_query):
            chunk = ids[start:start + runs_per_query]
            for run_id, key, value in session.query(SqlTag.run_uuid, SqlTag.key, SqlTag.value).filter(
                    SqlTag.run_uuid.in_(chunk)):
                tags[run_id].append(RunTag(key, value))
            for run_id, key, value in session.query(SqlParam.run_uuid, SqlParam.key, SqlParam.value).filter(
                    SqlParam.run_uuid.in_(chunk)):
                params[run_id].append(Param(key, value))
            for run_id, key, value, timestamp, step, is_nan in session.query(
                    SqlLatestMetric.run_uuid, SqlLatestMetric.key, SqlLatestMetric.value, SqlLatestMetric.timestamp,
                    SqlLatestMetric.step, SqlLatestMetric.is_nan).filter(SqlLatestMetric.run_uuid.in_(chunk)):
                metrics[run_id].append(Metric(key, float("nan") if is_nan else value, timestamp, step))
    runs = []
    for info in infos:
        run_tags = tags[info.run_uuid]
        name = info.name or next((tag.value for tag in run_tags if tag.key == MLFLOW_RUN_NAME), None)
        runs.append(Run(RunInfo(run_id=info.run_uuid, run_name=name, experiment_id=str(info.experiment_id),
                                user_id=info.user_id, status=info.status, start_time=info.start_time,
                                end_time=info.end_time, lifecycle_stage=info.lifecycle_stage,
                                artifact_uri=info.artifact_uri),
                        RunData(metrics=metrics[info.run_uuid], params=params[info.run_uuid], tags=run_tags)))
    return runs


# MLflow's SQL store read with Python's sqlite3, without MLflow: nn-compare of a 10,000-child sweep answers in seconds
# (importing MLflow takes ~2 s here, opening a store with its client another ~0.5 s). The tables and columns below
# are MLflow's (mlflow/store/tracking/dbmodels), undocumented, as of this revision of its schema; a store at another
# revision is read by MLflow's client. tests/test_private_names.py pins the revision and every read against MLflow's.
SQL_SCHEMA_REVISION = "dc11669786a5"  # the head of MLflow 3.17's SQL store migrations (alembic_version)
PARENT_RUN_TAG, RUN_NAME_TAG = "mlflow.parentRunId", "mlflow.runName"  # mlflow.utils.mlflow_tags' names
RUN_COLUMNS = ("run_uuid", "name", "experiment_id", "user_id", "status", "start_time", "end_time", "lifecycle_stage",
               "artifact_uri")  # a RunInfo's fields, in the runs table
ACTIVE_CHILDREN = (f"run_uuid IN (SELECT run_uuid FROM tags WHERE key = '{PARENT_RUN_TAG}' AND value = ?) "
                   "AND experiment_id = ? AND lifecycle_stage = 'active'")  # args: parent run id, experiment id


def open_sqlite(path):
    """A read-only sqlite3 connection to the MLflow SQLite store at `path`, in one read transaction (the reads see one
    moment of the store); None unless its tables are at SQL_SCHEMA_REVISION (a new, old or newer store)."""
    try:
        connection = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=30,
                                     isolation_level=None)
    except sqlite3.Error:
        return None
    try:
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchall()
        if revision == [(SQL_SCHEMA_REVISION,)]:
            connection.execute("BEGIN")
            return connection
    except sqlite3.Error:
        pass
    connection.close()
    return None


def _keyed(connection, table, columns, runs_where, args, keys):
    """Rows (run_uuid, key, *columns) of `table` for the runs `runs_where` selects, only `keys` (None: every key)."""
    only = "" if keys is None else f" AND key IN ({', '.join('?' * len(keys))})"
    return connection.execute(f"SELECT run_uuid, key, {', '.join(columns)} FROM {table} WHERE run_uuid IN "
                              f"(SELECT run_uuid FROM runs WHERE {runs_where}){only}",
                              [*args, *(keys or ())])


def sqlite_runs(connection, runs_where, args=(), order="start_time, run_uuid", tags=None, params=None,
                metrics=None):
    """[(info, params, tags, metrics)] of the runs the SQL condition `runs_where` on table `runs` selects, in
    `order`: info a {RunInfo field: value} dict as MLflow's get_run gives it, the others {key: value} dicts of
    the params, tags and latest metric values (a NaN point is NaN) with only the keys in `params`, `tags` and
    `metrics` (None: every key)."""
    infos = connection.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE {runs_where} ORDER BY {order}",
                               args).fetchall()
    found = {info[0]: ({}, {}, {}) for info in infos}
    for run_id, key, value in _keyed(connection, "params", ["value"], runs_where, args, params):
        found[run_id][0][key] = value
    tag_keys = None if tags is None else [*tags, RUN_NAME_TAG]
    for run_id, key, value in _keyed(connection, "tags", ["value"], runs_where, args, tag_keys):
        found[run_id][1][key] = value
    for run_id, key, value, is_nan in _keyed(connection, "latest_metrics", ["value", "is_nan"], runs_where, args,
                                             metrics):
        found[run_id][2][key] = float("nan") if is_nan else value
    runs = []
    for run_id, name, experiment_id, *rest in infos:
        run_params, run_tags, run_metrics = found[run_id]
        name = name or run_tags.get(RUN_NAME_TAG)
        if tags is not None and RUN_NAME_TAG not in tags:
            run_tags.pop(RUN_NAME_TAG, None)
        info = dict(zip(("run_id", "run_name", "experiment_id", *RUN_COLUMNS[3:]),
                        (run_id, name, str(experiment_id), *rest)))
        runs.append((info, run_params, run_tags, run_metrics))
    return runs


def sqlite_child_runs(connection, experiment_id, parent_run_id, tags=None, params=None, metrics=None):
    """sqlite_runs of the active runs of experiment `experiment_id` whose mlflow.parentRunId tag is `parent_run_id`,
    oldest first (as tracking.client.child_runs gives them)."""
    return sqlite_runs(connection, ACTIVE_CHILDREN, (parent_run_id, int(experiment_id)), tags=tags, params=params,
                       metrics=metrics)


def sqlite_run(connection, run_id):
    """sqlite_runs' (info, params, tags, metrics) of run `run_id`, whatever its lifecycle (as get_run); None if none."""
    found = sqlite_runs(connection, "run_uuid = ?", (run_id,))
    return found[0] if found else None


def sqlite_latest_run_with_tag(connection, experiment, tag):
    """sqlite_run of the latest started active run of the experiment named `experiment` with tag `tag`, in
    search_runs' order (start time, latest first, then run id); None if none."""
    found = connection.execute(
        "SELECT run_uuid FROM runs WHERE experiment_id = (SELECT experiment_id FROM experiments WHERE name = ?) "
        "AND lifecycle_stage = 'active' AND run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value LIKE '%') "
        "ORDER BY start_time IS NULL, start_time DESC, run_uuid LIMIT 1", (experiment, tag)).fetchone()
    return None if found is None else sqlite_run(connection, found[0])


def sqlite_experiment_exists(connection, experiment):
    """Whether the store has an experiment named `experiment` (deleted ones too, as get_experiment_by_name)."""
    return connection.execute("SELECT 1 FROM experiments WHERE name = ?", (experiment,)).fetchone() is not None


def sqlite_child_histories(connection, experiment_id, parent_run_id, key):
    """{run id: [(step, value)] by step} of every point of metric `key` (a NaN point is NaN) of the children
    sqlite_child_runs reads, for those with a point."""
    found = {}
    for run_id, step, value, is_nan in connection.execute(
            f"SELECT run_uuid, step, value, is_nan FROM metrics WHERE key = ? AND run_uuid IN "
            f"(SELECT run_uuid FROM runs WHERE {ACTIVE_CHILDREN})", (key, parent_run_id, int(experiment_id))):
        found.setdefault(run_id, []).append((step, float("nan") if is_nan else value))
    return {run_id: sorted(points) for run_id, points in found.items()}


def local_artifact_folder(artifact_uri):
    """The folder of a run's artifacts when its artifact root is a local path (a plain path or file:// URI, as
    MLflow's LocalArtifactRepository reads it), else None (a tracking server's mlflow-artifacts:, a cloud bucket)."""
    parts = urlsplit(artifact_uri)
    if parts.scheme == "" or (os.name == "nt" and len(parts.scheme) == 1):
        return artifact_uri
    if parts.scheme == "file" and parts.netloc in ("", "localhost"):
        return unquote(parts.path)
    return None


def write_local_artifact(folder, local_file):
    """Put `local_file` among the artifacts in the local artifact folder `folder` (local_artifact_folder), as
    MLflow's LocalArtifactRepository.log_artifact does: a file of the same name, its permission bits and times, in
    place at once (written beside, then renamed over any earlier one)."""
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, os.path.basename(local_file))
    staged = f"{target}.{os.getpid()}.partial"
    try:
        shutil.copy2(local_file, staged)
        os.replace(staged, target)
    finally:
        if os.path.exists(staged):
            os.remove(staged)

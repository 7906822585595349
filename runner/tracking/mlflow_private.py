"""Every MLflow name this project uses that MLflow does not document as public, in one place.

Each is used only where no public API does the job; tests/test_private_names.py pins the
behaviour relied on, so an MLflow upgrade that changes one fails there, with the reason.
"""

from mlflow.models.utils import _validate_serving_input
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking.context import registry


def validate_serving_input(model_path, serving_input):
    """The check Model.log makes of a saved model's serving input example (raises if the model rejects it).

    Needed by tracking.client.ModelCopies, which saves one model for many runs instead of calling Model.log.
    """
    return _validate_serving_input(model_path, serving_input)


def context_tags():
    """MLflow's context tags, as mlflow.start_run and Model.log resolve them: the user, the source's name and
    type, the git commit of the source's checkout, a Databricks context's, MLFLOW_RUN_CONTEXT's (applied last),
    and those of installed context-provider plugins. MLflow documents the plugins, not this resolution."""
    return registry.resolve_tags()


def sqlalchemy_engines():
    """The SQLAlchemy engines MLflow keeps for this process, one per database URI (a forked process must not
    share its parent's connections: tracking.client.forget_inherited_connections)."""
    return list(SqlAlchemyStore._engine_map.values())



def metric_history_bulk(client, run_ids, key, runs_per_query):
    """{run id: [Metric]} of metric `key` for every run of `run_ids` that logged it, `runs_per_query` runs a query,
    through the SQL store's get_metric_history_bulk; None when `client`'s store is not MLflow's SQL store (a
    tracking server: MLflow's REST API has no public call that returns the history of many runs at once).

    Needed by tracking.client.metric_histories: one query per run made the end of a 10,000-job sweep take minutes.
    The store's method is public on the class but not documented, and reached through MlflowClient's private
    _tracking_client.
    """
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
    from mlflow.entities import Metric, Param, Run, RunData, RunInfo, RunTag
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

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

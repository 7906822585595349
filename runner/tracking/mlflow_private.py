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

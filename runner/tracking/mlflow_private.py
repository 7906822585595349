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


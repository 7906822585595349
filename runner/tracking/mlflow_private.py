"""Every MLflow name this project uses that MLflow does not document as public, in one place.

Each is used only where no public API does the job; tests/test_private_names.py pins the
behaviour relied on, so an MLflow upgrade that changes one fails there, with the reason.
"""

from mlflow.models.utils import _flatten_nested_params, _validate_serving_input
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking.context import registry


def validate_serving_input(model_path, serving_input):
    """The check Model.log makes of a saved model's serving input example (raises if the model rejects it).

    Needed by tracking.client.ModelCopies, which saves one model for many runs instead of calling Model.log.
    """
    return _validate_serving_input(model_path, serving_input)


def context_tags():
    """The context tags (source name and type, user, git commit) Model.log gives a LoggedModel."""
    return registry.resolve_tags()


def flatten_model_config(model_config):
    """A model config flattened as Model.log logs it as params: nested keys joined with '/'."""
    return _flatten_nested_params(model_config, sep="/")


def sqlalchemy_engines():
    """The SQLAlchemy engines MLflow keeps for this process, one per database URI (a forked process must not
    share its parent's connections: tracking.client.forget_inherited_connections)."""
    return list(SqlAlchemyStore._engine_map.values())


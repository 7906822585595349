"""Users and their permissions on a tracking server that runs MLflow's basic-auth app, through MLflow's own
auth client (mlflow.server.get_app_client("basic-auth")). The admin's credentials come from the environment
(MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD), as for any request to the server."""

import warnings

from runner.tracking.client import MlflowException, client_for, ensure_experiment, refusals

PERMISSIONS = ("READ", "USE", "EDIT", "MANAGE")  # MLflow's, per experiment; EDIT lets a user log runs
MIN_PASSWORD = 12  # the basic-auth app refuses shorter passwords


class UserError(ValueError):
    """A user or permission the server cannot make as asked; the message is one line."""


def auth_client(uri):
    """MLflow's client of the basic-auth app's REST API on the server at `uri`."""
    with warnings.catch_warnings():  # importing MLflow's server package warns about Starlette's deprecations
        warnings.simplefilter("ignore")
        from mlflow.server import get_app_client  # the server package: only this command needs it

        return get_app_client("basic-auth", tracking_uri=uri)


def user_exists(uri, username):
    """Whether the server has a user of that name."""
    with refusals(uri, None, "read its users: only its admin may"):
        try:
            auth_client(uri).get_user(username)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
    return True


def add_user(uri, username, password):
    """Create `username` with `password` (at least MIN_PASSWORD characters)."""
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password of a new user must have at least {MIN_PASSWORD} characters")
    with refusals(uri, None, "create users: only its admin may"):
        auth_client(uri).create_user(username, password)


def grant(uri, username, experiment, permission):
    """Give `username` `permission` on `experiment` (a name; created if missing); returns the experiment's id."""
    if permission not in PERMISSIONS:
        raise UserError(f"permission {permission!r} is not allowed: one of {', '.join(PERMISSIONS)}")
    with refusals(uri, experiment, f"grant {permission}"):
        experiment_id = ensure_experiment(client_for(uri), experiment)
        client = auth_client(uri)
        try:
            client.grant_user_permission(username, "experiment", experiment_id, permission)
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            client.revoke_user_permission(username, "experiment", experiment_id)  # one grant a user: replace it
            client.grant_user_permission(username, "experiment", experiment_id, permission)
    return experiment_id

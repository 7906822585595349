"""Tracking URIs: printable without credentials, and whether the server behind one answers and lets us in.

Imports no MLflow: a sweep asks the server before paying for the import, and before any run exists.
Credentials come from the environment as MLflow's client reads them (CREDENTIAL_VARIABLES), never from a URI.
"""

import base64
import configparser
import os
import ssl
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

from runner.tracking.store_lock import sqlite_path

PROBE_TIMEOUT = 5.0  # seconds; MLflow's own client retries an unreachable server for minutes
# Where MLflow's client takes a tracking server's credentials from (a user's ~/.mlflow/credentials too)
USERNAME_VARIABLE, PASSWORD_VARIABLE, TOKEN_VARIABLE = (
    "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
CREDENTIAL_VARIABLES = (USERNAME_VARIABLE, PASSWORD_VARIABLE, TOKEN_VARIABLE)
CREDENTIALS_FILE = "~/.mlflow/credentials"
# A request any signed-in user of a basic-auth server may make, and that reads nothing of anyone's runs
LOGIN_PROBE = "/api/2.0/mlflow/experiments/search?max_results=1"


class ServerUnreachable(ConnectionError):
    """No MLflow tracking server answers at the configured URI; the message is one line."""


class ServerRefused(Exception):
    """The tracking server refused these credentials, or this user the experiment; the message is one line."""


class NotInStore(LookupError):
    """No such store, run or artifact at the tracking URI; the message is one line for the user."""


def redact(uri):
    """A URI without any user:password part, safe to log and print."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def has_credentials(uri):
    """Whether a URI carries a user or a password (http://user:password@host)."""
    parts = urlsplit(uri)
    return parts.username is not None or parts.password is not None


def masked(uri):
    """The URI with its user:password part shown as ***, to name it without giving it away."""
    parts = urlsplit(uri)
    if not has_credentials(uri):
        return uri
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


def is_server(uri):
    """True for an http(s):// tracking URI, which names a tracking server rather than a local store."""
    return uri.startswith(("http://", "https://"))


def tls_context():
    """The certificate checks MLflow's client makes, from its environment variables, for an https:// probe.

    MLFLOW_TRACKING_INSECURE_TLS=true: none; MLFLOW_TRACKING_SERVER_CERT_PATH: trust that CA bundle;
    MLFLOW_TRACKING_CLIENT_CERT_PATH: present that client certificate (a PEM with its key).
    """
    context = ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if os.environ.get("MLFLOW_TRACKING_CLIENT_CERT_PATH"):
        context.load_cert_chain(os.environ["MLFLOW_TRACKING_CLIENT_CERT_PATH"])
    return context


def check_server(uri, timeout=PROBE_TIMEOUT):
    """Raise ServerUnreachable unless the tracking server at `uri` answers GET /health with 200.

    A local store (sqlite:, file paths) passes without a check. HTTPS is checked as MLflow's
    client would (tls_context).
    """
    if not is_server(uri):
        return
    where = redact(uri).rstrip("/")
    context = tls_context() if where.startswith("https://") else None
    try:
        with urllib.request.urlopen(f"{where}/health", timeout=timeout, context=context) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise ServerUnreachable(f"tracking.uri={where!r}: the server's certificate is not trusted "
                                    f"({reason.verify_message}); set MLFLOW_TRACKING_SERVER_CERT_PATH to its CA "
                                    "bundle, or MLFLOW_TRACKING_INSECURE_TLS=true to skip the check") from None
        reason = getattr(reason, "strerror", None) or reason  # "Connection refused", not "[Errno 111] ..."
        raise ServerUnreachable(f"tracking.uri={where!r}: no MLflow server answers there ({reason}); "
                                "start one with `make server` or choose another tracking.uri") from None
    if status != 200:
        raise ServerUnreachable(f"tracking.uri={where!r}: the server answered GET /health with HTTP {status}, "
                                "not as an MLflow tracking server does (200)")


def credentials(environ=os.environ):
    """(username, password, token) as MLflow's client takes them: the environment first, then
    ~/.mlflow/credentials for the user and password; None where there is none."""
    username, password = environ.get(USERNAME_VARIABLE) or None, environ.get(PASSWORD_VARIABLE) or None
    path = os.path.expanduser(CREDENTIALS_FILE)
    if (username is None or password is None) and os.path.exists(path):
        stored = configparser.ConfigParser()
        stored.read(path)
        section = stored["mlflow"] if "mlflow" in stored else {}
        username = username or section.get(USERNAME_VARIABLE.lower())
        password = password or section.get(PASSWORD_VARIABLE.lower())
    return username, password, environ.get(TOKEN_VARIABLE) or None


def authorization(environ=os.environ):
    """The Authorization header MLflow's client sends (basic for a user and password, else bearer), or None."""
    username, password, token = credentials(environ)
    if username and password:
        return "Basic " + base64.standard_b64encode(f"{username}:{password}".encode()).decode()
    return f"Bearer {token}" if token else None


def who(environ=os.environ):
    """Who the credentials say we are, for a message: "user 'alice'", 'the token in ...', or None."""
    username, password, token = credentials(environ)
    if username and password:
        return f"user {username!r}"
    return f"the token in {TOKEN_VARIABLE}" if token else None


def refused_message(uri, status, experiment=None, action=None, environ=os.environ):
    """One line on a request the server refused with HTTP `status` (401: who we are; 403: what we may do)."""
    where, user = f"tracking.uri={redact(uri).rstrip('/')!r}", who(environ)
    for_experiment = f" for experiment {experiment!r}" if experiment else ""
    give = (f"set {USERNAME_VARIABLE} and {PASSWORD_VARIABLE} (or {TOKEN_VARIABLE}) in the environment to an "
            "account on that server")
    if status == 401 and user is None:
        return f"{where}: the server asks for a login{for_experiment} (HTTP 401) and none is set; {give}"
    if status == 401:
        return (f"{where}: the server refused the login of {user}{for_experiment} (HTTP 401: wrong password or "
                f"unknown user); {give}")
    user = user or "a user without login"
    if experiment is None:
        return f"{where}: the server refused {user} permission to {action or 'make that request'} (HTTP 403)"
    return (f"{where}: the server refused {user} permission to {action or 'write'} in experiment {experiment!r} "
            "(HTTP 403); ask the server's admin for EDIT on it (docs/tracking-server.md) or choose another "
            "tracking.experiment")


def check_login(uri, timeout=PROBE_TIMEOUT, experiment=None, environ=os.environ):
    """Raise ServerRefused when a server that asks for a login (MLflow's basic-auth app) refuses the
    credentials of the environment. A server without authentication, and a local store, pass.

    MLFLOW_TRACKING_AUTH (an auth plugin of MLflow's) is not emulated here: then the probe is skipped.
    """
    if not is_server(uri) or environ.get("MLFLOW_TRACKING_AUTH"):
        return
    where = redact(uri).rstrip("/")
    request = urllib.request.Request(f"{where}{LOGIN_PROBE}")
    header = authorization(environ)
    if header:
        request.add_header("Authorization", header)
    context = tls_context() if where.startswith("https://") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context):
            return
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):  # a 403 here is about searching, not about the experiment
            raise ServerRefused(refused_message(uri, error.code, experiment if error.code == 401 else None,
                                                "search experiments", environ=environ)) from None
    except (urllib.error.URLError, OSError):
        return  # check_server said it answers; MLflow's own client reports what follows


def check_access(uri, experiment=None, timeout=PROBE_TIMEOUT):
    """check_server, then check_login: in seconds, before any run exists. Raises ServerUnreachable or ServerRefused."""
    check_server(uri, timeout)
    check_login(uri, timeout, experiment)


def check_store(uri, experiment=None):
    """NotInStore for a SQLite URI naming no file: opening it would create an empty store as a side
    effect of a failed look-up; ServerUnreachable for a tracking server that does not answer, ServerRefused
    for one that refuses the login (to `experiment`, when one is named)."""
    check_access(uri, experiment)
    path = sqlite_path(uri)
    if path is not None and path != ":memory:" and not os.path.isfile(path):
        where = "" if os.path.isabs(path) else f" in {os.getcwd()}: a relative path means the working directory"
        raise NotInStore(f"no MLflow store at {uri} (no file {path!r}{where})")


def wait_for_server(uri, seconds):
    """Poll check_server until the server answers (True) or `seconds` have passed (False)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            check_server(uri, timeout=min(PROBE_TIMEOUT, max(deadline - time.monotonic(), 0.1)))
            return True
        except ServerUnreachable:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.2)

"""Tracking URIs: printable without credentials, and whether the server behind one answers.

Imports no MLflow: a sweep asks the server before paying for the import, and before any run exists.
"""

import os
import ssl
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit, urlunsplit

PROBE_TIMEOUT = 5.0  # seconds; MLflow's own client retries an unreachable server for minutes


class ServerUnreachable(ConnectionError):
    """No MLflow tracking server answers at the configured URI; the message is one line."""


def redact(uri):
    """A URI without any user:password part, safe to log and print."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


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

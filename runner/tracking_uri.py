"""Tracking URIs: printable without credentials, and whether the server behind one answers.

Imports no MLflow: a sweep asks the server before paying for the import, and before any run exists.
"""

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


def check_server(uri, timeout=PROBE_TIMEOUT):
    """Raise ServerUnreachable unless the tracking server at `uri` answers GET /health with 200.

    A local store (sqlite:, file paths) passes without a check.
    """
    if not is_server(uri):
        return
    where = redact(uri).rstrip("/")
    try:
        with urllib.request.urlopen(f"{where}/health", timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
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

"""Real server processes for tests, on loopback only, each stopped by the PID it was started with.

An MLflow server and `mlflow models serve` run in their own session, so that stopping the
process group by its PID also ends the uvicorn workers they spawn. An MLflow server can run
MLflow's basic-auth app with a random admin password (auth_server), and users are added with
nn-runner's own command (add_user). PostgreSQL runs as a non-root user when the tests run as
root (postgres refuses root), in a throwaway cluster.
"""

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
START_SECONDS = 180  # an MLflow server on this shared 2-core machine has taken up to ~30 s to answer
STOP_SECONDS = 15


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path, lines=30):
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:]) if Path(path).exists() else ""


def wait_for_http(url, process, log, seconds=START_SECONDS):
    """Wait until GET url answers 200; fail with the log's tail if the process dies or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[:3]} exited with {process.returncode}:\n{log_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer within {seconds} s:\n{log_tail(log)}")


def group_alive(pid):
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


def stop_group(process):
    """SIGTERM the process group that `process` leads and reap it; SIGKILL the group if it lingers."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_SECONDS
    try:
        process.wait(timeout=STOP_SECONDS)  # reaps the leader, which would otherwise stay a zombie member
    except subprocess.TimeoutExpired:
        pass
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if group_alive(process.pid):
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@contextmanager
def process_group(cmd, log, health_url, env=None, cwd=None):
    """Run cmd in its own session with output to `log`, wait for health_url; stop the group on exit."""
    with open(log, "ab") as out:
        process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    try:
        wait_for_http(health_url, process, log)
        yield process
    finally:
        stop_group(process)


@contextmanager
def mlflow_server(backend_store_uri, folder, port=None, app_env=None):
    """A real `mlflow server` on loopback, on `port` or a free one; yields (url, artifacts folder).

    `app_env` (auth_server's): the environment of MLflow's basic-auth app, which the server then runs.
    """
    port, artifacts = port or free_port(), Path(folder) / "artifacts"
    app = ["--app-name", "basic-auth"] if app_env else []
    cmd = [str(BIN / "mlflow"), "server", *app, "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", backend_store_uri, "--artifacts-destination", str(artifacts)]
    # the server's job runner (GenAI jobs) is not needed for tracking and costs seven processes
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true", **(app_env or {})}
    url = f"http://127.0.0.1:{port}"
    with process_group(cmd, Path(folder) / "server.log", f"{url}/health", env=env, cwd=folder):
        yield url, artifacts


ADMIN = "admin"


def new_password():
    """A random password the basic-auth app accepts (it wants at least 12 characters)."""
    return secrets.token_urlsafe(18)


@contextmanager
def auth_server(folder):
    """`mlflow server --app-name basic-auth` on loopback with a SQLite store, as `make server` starts it (no
    password in its config file: the admin's comes from the environment); yields (url, admin password)."""
    folder, admin_password = Path(folder), new_password()
    config = folder / "basic_auth.ini"
    config.write_text(f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{folder}/basic_auth.db\n"
                      f"admin_username = {ADMIN}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    app_env = {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
               "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32)}
    with mlflow_server(f"sqlite:///{folder}/mlflow.db", folder, app_env=app_env) as (url, _):
        yield url, admin_password


def credentials_env(username, password):
    """The environment that gives MLflow's client (and nn-runner's) a server's credentials."""
    return {**os.environ, "MLFLOW_TRACKING_USERNAME": username, "MLFLOW_TRACKING_PASSWORD": password}


def add_user(url, admin_password, username, password, experiment, permission):
    """`python -m runner.cli.server_user` as the admin (what `make server-user` runs): add `username` with
    `password` if new, grant `permission` on `experiment`; returns the command's stdout."""
    done = subprocess.run([sys.executable, "-m", "runner.cli.server_user", username, "--experiment", experiment,
                           "--permission", permission, "--tracking-uri", url], input=f"{password}\n",
                          env=credentials_env(ADMIN, admin_password), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"server_user {username} exited with {done.returncode}: {done.stderr}")
    return done.stdout


@contextmanager
def model_server(model_uri, tracking_uri, folder):
    """`mlflow models serve` of model_uri on a free loopback port, in this environment; yields its url."""
    port = free_port()
    cmd = [str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
           "--host", "127.0.0.1", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    # it starts `uvicorn` by name: the environment's bin folder must be on PATH, as in an activated venv
    env = {"MLFLOW_TRACKING_URI": tracking_uri, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    with process_group(cmd, Path(folder) / "serve.log", f"{url}/ping", env=env, cwd=folder):
        yield url


def postgres_bin():
    """The folder of PostgreSQL's server programs (initdb, pg_ctl), or None when it is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    return Path(versions[-1]).parent if versions else None


def postgres_user():
    """The account to run PostgreSQL as: this one, or `postgres` when we are root (None if it is missing)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


@contextmanager
def postgres_database():
    """A throwaway PostgreSQL cluster on a free loopback port with database `mlflow`; yields its URI."""
    pg_bin, user = postgres_bin(), postgres_user()
    as_user = ["runuser", "-u", user.pw_name, "--"] if user else []
    base = Path(tempfile.mkdtemp(prefix="nn-runner-pg-"))  # not under pytest's tmp: postgres must reach it
    if user:
        os.chown(base, user.pw_uid, user.pw_gid)
    data, port, pid = base / "data", free_port(), None
    try:
        subprocess.run([*as_user, str(pg_bin / "initdb"), "-D", str(data), "-U", "mlflow", "-A", "trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        options = f"-h 127.0.0.1 -p {port} -k {base} -c fsync=off"
        subprocess.run([*as_user, str(pg_bin / "pg_ctl"), "start", "-D", str(data), "-o", options,
                        "-l", str(base / "postgres.log"), "-w", "-t", "120"], check=True, capture_output=True,
                       timeout=180)
        pid = int((data / "postmaster.pid").read_text().split()[0])
        subprocess.run([str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"],
                       check=True, capture_output=True, timeout=60)
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; MLflow documents psycopg2
        yield f"postgresql+psycopg2://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        if pid is not None:
            stop_postgres(pid)
        shutil.rmtree(base, ignore_errors=True)


def stop_postgres(pid):
    """Fast shutdown (SIGINT) of the postmaster `pid`; wait for it to go."""
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


@pytest.fixture(params=["sqlite", "postgresql"])
def study_storage(request):
    """None: the study in optuna.db in the sweep folder; else the URL of a throwaway PostgreSQL database (a
    cluster's storage)."""
    if request.param == "sqlite":
        yield None
        return
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (initdb)")
    with postgres_database() as url:
        yield url

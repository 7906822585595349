"""Shared test set-up: oracles importable by name, no telemetry, one real SQLite store per session."""

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"
# The tests that send a child Ctrl-C need it to start with SIGINT at its default, as a terminal's foreground job
# has it. A suite started with SIGINT ignored (`make test &` in a script) would hand the ignoring on to every child;
# a handler does not outlive exec, so with Python's own one here the children start with the default.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parent.parent
NN_RUN = [sys.executable, "-m", "runner"]


# what setting up and running the tests may make in the checkout: the venv, the editable install's metadata, bytecode
SET_UP_FILES = re.compile(r"(^|/)(\.venv|[^/]*\.egg-info|__pycache__)/$")


def plain_sqlite_reads_or_skip():
    """Skip a test of nn-compare's plain SQLite reads (runner/tracking/mlflow_private.py) under an MLflow whose tables
    are at another schema revision than the reads know, unless it is the lock's MLflow (constraints.txt): there the
    test must fail, so that moving the lock moves the revision. Elsewhere (CI's lowest and newest environments)
    nn-compare reads through MLflow's client, which the other tests cover."""
    from importlib.metadata import version

    from mlflow.store.db.utils import _get_latest_schema_revision

    from runner.tracking import mlflow_private

    locked = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                  if line and not line.startswith("#"))
    revision = _get_latest_schema_revision()
    if revision != mlflow_private.SQL_SCHEMA_REVISION and version("mlflow") != locked.get("mlflow"):
        pytest.skip(f"MLflow {version('mlflow')}'s tables are at revision {revision}, not the plain reads' "
                    f"{mlflow_private.SQL_SCHEMA_REVISION} (the lock's MLflow {locked.get('mlflow')})")


def checkout_files():
    """What git sees in the checkout beyond its tracked files' contents (untracked and ignored paths), or None
    outside a git checkout."""
    try:
        listing = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    paths = {line[3:] for line in listing.splitlines() if line[:2] in ("??", "!!")}
    return {path for path in paths if not SET_UP_FILES.search(path)}


def build_wheel(folder):
    """nn-runner's wheel, built from a copy of the checkout in `folder` (setuptools writes build/ and *.egg-info
    beside the sources it builds); returns its path."""
    source = Path(folder, "source")
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "*.egg-info", "build", "__pycache__", "outputs", "multirun", "mlruns", "mlflow.db*",
        ".mlflow-server", ".slurm"))
    wheels = Path(folder, "wheels")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels),
                           str(source)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (wheel,) = wheels.glob("nn_runner-*.whl")
    return wheel


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the groups
def pytest_collection_modifyitems(config, items):
    """For pytest-xdist's `--dist loadgroup` (`make test` runs two workers): each test module runs on one worker,
    so its module fixtures (servers, clusters) start once; the Slurm modules all run on the same worker, one after
    the other, so two throwaway clusters never share the machine's node name at once."""
    for item in items:
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group("slurm" if "slurm" in module else module))


def pytest_sessionstart(session):
    session.config.checkout_files_before = checkout_files()


def pytest_sessionfinish(session, exitstatus):
    """Tests write nothing into the checkout: a file or folder the session left there fails it."""
    before, after = session.config.checkout_files_before, checkout_files()
    if before is None or after is None or exitstatus not in (0, 1):
        return
    left = sorted(after - before)
    if left:
        print(f"\nthe tests left these in the checkout {ROOT}: {', '.join(left)}", file=sys.stderr)
        session.exitstatus = 1


@pytest.fixture(scope="session", autouse=True)
def working_directory_outside_the_checkout(tmp_path_factory):
    """The tests run in a folder of their own, so what lands in the working directory never lands in the checkout:
    a SQLite store's artifacts go to MLflow's default root ./mlruns of the directory the store was opened in."""
    checkout = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(checkout)


@pytest.fixture(autouse=True)
def run_context_as_found():
    """A sweep's parent run, opened in this process (tracking.client.open_run), hands its MLflow context tags to the
    processes started after it through MLFLOW_RUN_CONTEXT; each test leaves that variable as it found it."""
    saved = os.environ.get("MLFLOW_RUN_CONTEXT")
    yield
    if saved is None:
        os.environ.pop("MLFLOW_RUN_CONTEXT", None)
    else:
        os.environ["MLFLOW_RUN_CONTEXT"] = saved


@pytest.fixture(autouse=True)
def sys_path_as_found():
    """Loading an MLflow model puts its code folder (a copy of runner/) first on sys.path, and a process spawned
    later would import that copy; each test leaves sys.path as it found it."""
    saved = list(sys.path)
    yield
    sys.path[:] = saved


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory):
    """A real SQLite store shared by the session's tests (creating one costs ~3 s); tests use own experiments."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    from mlflow import MlflowClient

    MlflowClient(uri).search_experiments()  # creates the tables once, up front
    return uri


@pytest.fixture
def experiment(request):
    """An experiment name unique to the test, safe inside a Hydra override."""
    return re.sub(r"[^A-Za-z0-9_-]+", "-", request.node.name)


@pytest.fixture
def client(tracking_uri):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri)


def compose_config(*overrides):
    """The config nn-run would compose for these command-line overrides (real Hydra composition)."""
    from hydra import compose, initialize_config_dir

    from runner.config import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return compose(config_name="config", overrides=list(overrides))


def runs_of(client, experiment):
    """All runs of an experiment by name ([] when the experiment does not exist)."""
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def interrupt_after(cmd, cwd, marker, stop=None):
    """Start `cmd`, send it Ctrl-C (SIGINT; or the signal `stop`) once a line containing `marker` is printed.

    Returns (exit code, rest of the output).
    """
    import subprocess

    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if marker in line:
            break
    proc.send_signal(signal.SIGINT if stop is None else stop)
    try:
        rest = proc.communicate(timeout=120)[0]
    except subprocess.TimeoutExpired:
        proc.kill()  # the test fails; the process must not outlive it
        proc.communicate()
        raise
    return proc.returncode, rest

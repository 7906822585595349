"""Facts about the code and the machine that a rerun needs: git state and library versions."""

import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent


def _git(*args):
    try:
        done = subprocess.run(["git", "-C", str(SOURCE_DIR), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def git_state():
    """(commit, dirty) of the checkout the runner's code comes from; ('unknown', None) outside git."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return "unknown", None
    status = _git("status", "--porcelain", "--untracked-files=no")
    return commit.strip(), bool(status and status.strip())


def package_version(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def provenance_tags():
    """Tags that say which code ran where."""
    commit, dirty = git_state()
    tags = {
        "git_commit": commit,
        "git_dirty": "unknown" if dirty is None else str(dirty).lower(),
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "python_executable": sys.executable,
    }
    for package in ("numpy", "mlflow", "hydra-core", "nn-runner"):
        tags[f"{package.replace('-', '_')}_version"] = package_version(package)
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit  # shown by the MLflow UI
    return tags

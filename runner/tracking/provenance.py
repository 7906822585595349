"""Facts about the code and the machine that a rerun needs, as plain tags and text (no MLflow here).

Git state (and the diff of a dirty checkout), Python and package versions, NumPy's SIMD
dispatch, the BLAS library that runs the matrix products (via threadpoolctl), the environment
variables that steer them, platform and CPU. All of it is cheap (a few milliseconds): every run
pays for it.
"""

import hashlib
import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, requires, version
from pathlib import Path

import numpy
from threadpoolctl import threadpool_info

SOURCE_DIR = Path(__file__).resolve().parent
PROJECT = "nn-runner"
# Not declared dependencies of the project, but they decide what a run computes or records
EXTRA_PACKAGES = ("omegaconf", "threadpoolctl")
# Environment variables that can change a run's bits or thread counts: OpenBLAS kernels
# (OPENBLAS_CORETYPE) and threads, NumPy's SIMD dispatch (NPY_DISABLE_CPU_FEATURES), other BLAS builds
RESULT_ENV_PREFIXES = ("OPENBLAS_", "NPY_", "OMP_", "MKL_")
# Never recorded, whatever their prefix: a variable whose name says it holds a secret
SECRET_NAME_PARTS = ("PASSWORD", "TOKEN", "SECRET")
ENV_TAG_PREFIX = "env."
# The variables that pin a run's numerics to one OpenBLAS kernel and one set of NumPy SIMD loops (README:
# Reruns, "the same bits on a cluster of mixed CPUs"); the tag says whether and how a run was pinned
PIN_VARIABLES = ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")
PINNED_TAG = "numerics_pinned"
# Keys of the threadpoolctl record kept per library; the file's folder says nothing a rerun needs
THREADPOOL_KEYS = ("internal_api", "version", "architecture", "threading_layer", "num_threads")


@dataclass
class Provenance:
    """Tags for the run, and the diff of a dirty checkout (None when clean or outside git)."""

    tags: dict
    git_diff: str | None = None


def _git(folder, *args):
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    # surrogateescape keeps a diff of non-UTF-8 files byte for byte
    return done.stdout.decode("utf-8", "surrogateescape") if done.returncode == 0 else None


def git_state(folder=None):
    """(commit, diff) of the checkout holding `folder` (default: the runner's code): diff is `git diff HEAD`
    of tracked files, '' when clean; ('unknown', None) outside git. Untracked files are not in the diff."""
    folder = folder or SOURCE_DIR
    commit = _git(folder, "rev-parse", "HEAD")
    if commit is None:
        return "unknown", None
    return commit.strip(), _git(folder, "diff", "--binary", "HEAD")


def package_version(name):
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def project_packages():
    """The project's declared dependencies (from its installed metadata), itself and EXTRA_PACKAGES."""
    try:
        declared = [r for r in requires(PROJECT) or [] if "extra ==" not in r]
    except PackageNotFoundError:
        declared = []
    names = [re.match(r"[A-Za-z0-9_.-]+", r).group(0) for r in declared]
    return [PROJECT, *names, *(p for p in EXTRA_PACKAGES if p not in names)]


def cpu_model():
    """The CPU's model name as the OS reports it."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def numpy_simd():
    """NumPy's compiled-in SIMD baseline and the extensions it dispatches to on this CPU."""
    simd = numpy.show_config(mode="dicts").get("SIMD Extensions", {})
    return {"numpy_simd_baseline": ",".join(simd.get("baseline", [])) or "none",
            "numpy_simd_found": ",".join(simd.get("found", [])) or "none"}


def threadpool_tags():
    """threadpoolctl's record of each loaded BLAS/OpenMP library: blas_version, blas_architecture, ...

    A second library of the same kind gets blas_2_...; only libraries already loaded are seen, so
    call this after NumPy is imported.
    """
    tags, seen = {}, {}
    for lib in threadpool_info():
        api = lib.get("user_api", "unknown")
        seen[api] = seen.get(api, 0) + 1
        prefix = api if seen[api] == 1 else f"{api}_{seen[api]}"
        tags[f"{prefix}_library"] = os.path.basename(lib.get("filepath", "")) or "unknown"
        for key in THREADPOOL_KEYS:
            if key in lib:
                tags[f"{prefix}_{key}"] = str(lib[key])
    return tags


def is_secret(name):
    """Whether an environment variable's name says it holds a secret (*PASSWORD*, *TOKEN*, *SECRET*, any case)."""
    return any(part in name.upper() for part in SECRET_NAME_PARTS)


def result_env(environ=os.environ):
    """The environment variables that can change results, as env.NAME tags; never one named like a secret."""
    return {f"{ENV_TAG_PREFIX}{k}": v for k, v in sorted(environ.items())
            if k.startswith(RESULT_ENV_PREFIXES) and not is_secret(k)}


def pinned(environ=os.environ):
    """'OPENBLAS_CORETYPE=Haswell NPY_DISABLE_CPU_FEATURES=...' as set, or 'no'."""
    return " ".join(f"{k}={environ[k]}" for k in PIN_VARIABLES if environ.get(k)) or "no"


def numeric_tags():
    """What decides which machine code does this process's math: SIMD loops, BLAS library and kernel, env.*."""
    return {**numpy_simd(), **threadpool_tags(), **result_env(), PINNED_TAG: pinned()}


def collect(folder=None):
    """Everything a rerun needs to know about the code in `folder` (default: the runner's) and this machine."""
    commit, diff = git_state(folder)
    tags = {
        "git_commit": commit,
        "git_dirty": "unknown" if diff is None else str(bool(diff)).lower(),
        "python_version": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": str(os.cpu_count()),
    }
    if diff:
        tags["git_diff_sha256"] = hashlib.sha256(diff.encode("utf-8", "surrogateescape")).hexdigest()
    for package in project_packages():
        tags[f"{package.replace('-', '_')}_version"] = package_version(package)
    tags.update(numeric_tags())
    return Provenance(tags, diff or None)


def same_interpreter(a, b):
    """Whether two recorded python_executable paths name one interpreter in one environment: the same file once
    symlinks are resolved (a venv's bin/python3 -> python), in the same venv (or both in none).

    Two venvs share their base interpreter's file but not their packages: those stay different.
    Paths are resolved on this machine; one that is not here resolves to itself.
    """
    return a == b or (os.path.realpath(a) == os.path.realpath(b) and environment_of(a) == environment_of(b))


def environment_of(executable):
    """The venv an interpreter path belongs to (the folder above its bin/, holding pyvenv.cfg), or None."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(executable)))
    return os.path.realpath(root) if os.path.isfile(os.path.join(root, "pyvenv.cfg")) else None


def provenance_tags():
    """The tags of collect(), for a run that logs no files (a sweep's parent run)."""
    return collect().tags


def is_provenance_tag(key):
    """Whether a run tag is one of the facts collect() records (for comparing two runs' records)."""
    return key in PROVENANCE_KEYS or key.endswith("_version") or key.startswith(
        (ENV_TAG_PREFIX, "blas_", "openmp_", "numpy_simd_"))


PROVENANCE_KEYS = {"git_commit", "git_dirty", "git_diff_sha256", "python_version", "python_executable",
                   "platform", "cpu_model", "cpu_count", PINNED_TAG}

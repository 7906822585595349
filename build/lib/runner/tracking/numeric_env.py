"""The environment that makes a process compute with a recorded run's numerics: its BLAS kernel and SIMD loops.

The math is deterministic, but the machine code that does it is chosen per process: OpenBLAS
picks a matrix kernel for the CPU (OPENBLAS_CORETYPE forces one), NumPy picks SIMD loops for
`exp`, `divide`, ... by CPU feature (NPY_DISABLE_CPU_FEATURES turns dispatched ones off). A run
records what it used (provenance: `blas_architecture`, `numpy_simd_found`, `env.*`); from that
record `rebuild` derives an environment for a child process that uses the same, and names what
this CPU cannot provide. No MLflow and no math here: tags in, an environment out.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field

from runner.tracking.provenance import (
    ENV_TAG_PREFIX,
    PIN_VARIABLES,
    RESULT_ENV_PREFIXES,
)

KERNEL_TAG, SIMD_TAG, BLAS_API_TAG = "blas_architecture", "numpy_simd_found", "blas_internal_api"
CORETYPE, DISABLE_FEATURES = PIN_VARIABLES
PROBE = """
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy
from runner.tracking import provenance
print(json.dumps(provenance.numeric_tags()))
"""
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # holds runner/


@dataclass
class Rebuild:
    """A child environment with the source's numerics, what it changed, and what this machine lacks."""

    environ: dict
    changes: list = field(default_factory=list)  # ["OPENBLAS_CORETYPE=Sandybridge", "unset OPENBLAS_L2_SIZE"]
    missing: list = field(default_factory=list)  # what the source used that no setting gives here


def numeric_facts(tags):
    """The recorded facts that decide the numerics: the BLAS kernel, NumPy's SIMD loops, the env.* variables."""
    return {k: v for k, v in tags.items() if k in (KERNEL_TAG, SIMD_TAG) or k.startswith(ENV_TAG_PREFIX)}


def features(text):
    """The set of SIMD extensions in a numpy_simd_found tag ('none' is the empty set)."""
    return {f for f in (text or "").split(",") if f and f != "none"}


def probe(environ):
    """The numeric facts a new Python process gets under `environ` ({} if it cannot start: an
    OpenBLAS kernel or NumPy feature this CPU cannot run)."""
    try:
        done = subprocess.run([sys.executable, "-c", PROBE, PACKAGE_PARENT], env=environ, capture_output=True,
                              text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return json.loads(done.stdout) if done.returncode == 0 else {}


def rebuild(source_tags, environ=None, probe=probe):
    """The environment in which a child process computes as the run with `source_tags` did.

    The result-changing variables (OPENBLAS_*, NPY_*, OMP_*, MKL_*) are the source's recorded
    ones; OPENBLAS_CORETYPE names the source's kernel; NPY_DISABLE_CPU_FEATURES adds every SIMD
    extension this CPU dispatches to that the source did not use. A kernel or extension the
    source used that the child still lacks is named in `missing`.
    """
    environ = dict(os.environ if environ is None else environ)
    child = {k: v for k, v in environ.items() if not k.startswith(RESULT_ENV_PREFIXES)}
    child.update({k[len(ENV_TAG_PREFIX):]: v for k, v in source_tags.items() if k.startswith(ENV_TAG_PREFIX)})
    kernel = source_tags.get(KERNEL_TAG)
    if kernel and source_tags.get(BLAS_API_TAG) == "openblas":
        child[CORETYPE] = kernel
    facts = probe(child)
    if not facts and CORETYPE in child and child.get(CORETYPE) != environ.get(CORETYPE):
        child.pop(CORETYPE)  # the CPU cannot run that kernel: let OpenBLAS choose, and say so below
        facts = probe(child)
    wanted = features(source_tags.get(SIMD_TAG))
    extra = features(facts.get(SIMD_TAG)) - wanted
    if extra and SIMD_TAG in source_tags:
        child[DISABLE_FEATURES] = " ".join([*child.get(DISABLE_FEATURES, "").split(), *sorted(extra)])
        facts = probe(child)
    missing = []
    if kernel and facts.get(KERNEL_TAG) != kernel:
        missing.append(f"the OpenBLAS kernel {kernel} (this CPU runs {facts.get(KERNEL_TAG, 'none of it')})")
    lacking = wanted - features(facts.get(SIMD_TAG))
    if lacking:
        missing.append(f"NumPy SIMD extension{'s' if len(lacking) > 1 else ''} {', '.join(sorted(lacking))}")
    changes = [f"{k}={child[k]}" for k in sorted(child) if k.startswith(RESULT_ENV_PREFIXES)
               and environ.get(k) != child[k]]
    changes += [f"unset {k}" for k in sorted(environ) if k.startswith(RESULT_ENV_PREFIXES) and k not in child]
    return Rebuild(child, changes, missing)

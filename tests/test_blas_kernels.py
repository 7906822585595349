"""The seed's bits under every OpenBLAS kernel this CPU runs: each in its own process, chosen by OPENBLAS_CORETYPE.

OpenBLAS picks its matrix kernels per CPU (or as OPENBLAS_CORETYPE says), and kernels differ in
the last bits of a product. The promise is that the default run is the seed program whatever
kernel runs both: for each kernel, the seed program and the real `nn-run` run in subprocesses
and must agree exactly, and every other model option (single and stacked trainers) must equal
the plain oracle under that kernel. threadpoolctl tells which kernel each child really loaded;
candidates that load a kernel already tested are skipped, once per distinct kernel.
"""

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import NN_RUN, ROOT

from runner.tracking import record

TESTS = ROOT / "tests"
# OPENBLAS_CORETYPE values, newest first; several may load the same kernel on a given OpenBLAS build
CANDIDATES = ("SkylakeX", "Cooperlake", "Haswell", "Zen", "Sandybridge", "Nehalem", "Core2", "Prescott")
# the kernel must also run: a product of each BLAS level (a CPU without the kernel's instructions, AVX-512 for
# SkylakeX, loads it and then dies of SIGILL at its first product)
PROBE = """
import json, numpy
from threadpoolctl import threadpool_info
a = numpy.random.default_rng(0).random((64, 64))
a @ a, a @ a[0], a[0] @ a[1]
blas = [lib for lib in threadpool_info() if lib.get("user_api") == "blas"]
print(json.dumps([blas[0].get("internal_api"), blas[0].get("architecture")] if blas else None))
"""


def child_env(coretype):
    return {**os.environ, "OPENBLAS_CORETYPE": coretype, "PYTHONPATH": str(ROOT)}


def run_child(cmd, coretype, cwd=ROOT, timeout=300):
    done = subprocess.run(cmd, cwd=cwd, env=child_env(coretype), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} under OPENBLAS_CORETYPE={coretype}: {done.stderr[-2000:]}"
    return done


@functools.cache
def loaded_kernels():
    """{candidate: (BLAS library, kernel it loaded)}; a candidate whose child cannot start (the CPU lacks the
    kernel's instructions) is left out."""
    loaded = {}
    for coretype in CANDIDATES:
        done = subprocess.run([sys.executable, "-c", PROBE], env=child_env(coretype), capture_output=True, text=True, timeout=60)
        if done.returncode == 0 and done.stdout.strip() != "null":
            loaded[coretype] = tuple(json.loads(done.stdout))
    return loaded


def kernel_or_skip(coretype):
    """The kernel `coretype` loads; skips when it is not OpenBLAS, cannot run here, or an earlier candidate
    already loaded the same kernel."""
    loaded = loaded_kernels()
    if coretype not in loaded:
        pytest.skip(f"OPENBLAS_CORETYPE={coretype}: a child process could not start with it on this CPU")
    api, architecture = loaded[coretype]
    if api != "openblas":
        pytest.skip(f"NumPy's BLAS is {api}, not OpenBLAS: OPENBLAS_CORETYPE chooses nothing")
    for earlier in CANDIDATES[:CANDIDATES.index(coretype)]:
        if loaded.get(earlier) == loaded[coretype]:
            pytest.skip(f"OPENBLAS_CORETYPE={coretype} loads {architecture}, already tested as {earlier}")
    return architecture


def floats(texts):
    return np.array([float(t) for t in texts])


@pytest.mark.slow
@pytest.mark.parametrize("coretype", CANDIDATES)
def test_default_run_is_the_seed_program_under_every_kernel(coretype, tmp_path):
    architecture = kernel_or_skip(coretype)
    seed = json.loads(run_child([sys.executable, str(TESTS / "seed_program.py")], coretype).stdout)
    store = f"sqlite:///{tmp_path}/mlflow.db"
    done = run_child([*NN_RUN, f"tracking.uri={store}", "tracking.log_model=false"], coretype, cwd=tmp_path)

    from mlflow import MlflowClient

    client = MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("nn-runner").experiment_id])
    assert run.data.tags["blas_architecture"] == architecture
    history = sorted(client.get_metric_history(run.info.run_id, record.ERROR_METRIC), key=lambda m: m.step)
    assert [m.step for m in history] == list(range(0, 60001, 10000))
    assert [m.value for m in history[:-1]] == [float(e) for e in seed["errors"]]

    folder = client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts"))
    syn0, syn1 = record.read_weights(folder)
    assert np.array_equal(syn0.ravel(), floats(seed["syn0"])) and np.array_equal(syn1.ravel(), floats(seed["syn1"]))
    csv = np.loadtxt(os.path.join(folder, record.PREDICTIONS_FILE), delimiter=",", skiprows=1)
    assert np.array_equal(csv[:, 5], floats(seed["l2"]))
    printed = [line.rsplit("| ", 1)[1] for line in done.stdout.splitlines()
               if line.count(" | ") == 2 and not line.endswith(":")]
    assert printed == seed["l2"]  # the console prints what the seed prints, digit for digit


@pytest.mark.slow
@pytest.mark.parametrize("coretype", CANDIDATES)
def test_every_option_and_the_stacked_trainer_equal_the_plain_oracle_under_every_kernel(coretype):
    architecture = kernel_or_skip(coretype)
    found = json.loads(run_child([sys.executable, str(TESTS / "arithmetic_cases.py")], coretype).stdout)
    assert found == {"architecture": architecture, "mismatches": []}

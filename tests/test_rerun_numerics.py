"""nn-rerun of a run made with other numerics (another OpenBLAS kernel, other NumPy SIMD loops), as on another
machine: rebuilt in a child process and reproduced; with --no-rebuild, not reproduced and the kernel named.

Another machine is stood in for by this one under another OPENBLAS_CORETYPE or NPY_DISABLE_CPU_FEATURES;
the rerun starts from a plain environment (neither set), where OpenBLAS picks the CPU's own kernel.
"""

import functools
import os
import subprocess
import sys

import pytest
from conftest import NN_RUN, ROOT, runs_of
from test_rerun import NN_RERUN, cli, the_rerun

from runner.exit_codes import FAILED as EXIT_NOT_REPRODUCED
from runner.tracking import numeric_env, record
from runner.tracking.client import PARENT_RUN_TAG

SHORT = ["train.iterations=3000", "train.log_every=1000", "tracking.log_model=false"]
PLAIN = {k: v for k, v in os.environ.items() if not k.startswith(("OPENBLAS_", "NPY_"))}
BITS_PROBE = """
import numpy as np
from runner.nn.network import init_weights
from runner.tracking.record import weights_sha256
from runner.nn.training import train
from seed_program import X, Y
print(weights_sha256(train(init_weights([3, 4, 1], np.random.RandomState(1)), X, Y, iterations=3000,
                           log_every=1000).weights))
"""


def weights_digest(**variables):
    """The default network's weights after 3,000 iterations in a child process with `variables` set; None if
    the child cannot start (a kernel this CPU cannot run)."""
    done = subprocess.run([sys.executable, "-c", BITS_PROBE], capture_output=True, text=True, timeout=120,
                          env={**PLAIN, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), **variables})
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def other_kernel():
    """An OPENBLAS_CORETYPE this CPU runs whose bits differ from the plain environment's kernel, or None."""
    if os.uname().machine != "x86_64":
        return None
    plain = weights_digest()
    for kernel in ("Sandybridge", "Nehalem", "Haswell", "Prescott", "SkylakeX"):
        digest = weights_digest(OPENBLAS_CORETYPE=kernel)
        if digest is not None and digest != plain:
            return kernel
    return None


def kernel_or_skip():
    kernel = other_kernel()
    if kernel is None:
        pytest.skip("no OpenBLAS kernel on this machine gives other bits than the plain environment's")
    return kernel


def nn_run(cwd, uri, experiment, *args, env):
    done = cli(NN_RUN, cwd, *args, f"tracking.uri={uri}", f"tracking.experiment={experiment}", env=env)
    assert done.returncode == 0, done.stderr
    return done


def rerun(cwd, uri, run_id, *args):
    return cli(NN_RERUN, cwd, run_id, "--tracking-uri", uri, *args, env=PLAIN)


def rebuilt_line(done):
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("rebuilding the numerics of run ")]
    return line


def test_a_run_from_another_kernel_is_rebuilt_and_reproduced(tmp_path, tracking_uri, experiment, client):
    kernel = kernel_or_skip()
    nn_run(tmp_path, tracking_uri, experiment, *SHORT, env={**PLAIN, "OPENBLAS_CORETYPE": kernel})
    (source,) = runs_of(client, experiment)
    assert source.data.tags["blas_architecture"] == kernel or kernel == "Prescott"

    done = rerun(tmp_path, tracking_uri, source.info.run_id)
    assert done.returncode == 0, done.stderr
    assert f"OPENBLAS_CORETYPE={source.data.tags['blas_architecture']}" in rebuilt_line(done)
    assert done.stdout.splitlines()[-1] == "reproduced"
    new = the_rerun(client, experiment, source.info.run_id)
    assert new.data.tags["blas_architecture"] == source.data.tags["blas_architecture"]
    assert new.data.tags[record.WEIGHTS_HASH_TAG] == source.data.tags[record.WEIGHTS_HASH_TAG]

    done = rerun(tmp_path, tracking_uri, source.info.run_id, "--no-rebuild")
    assert done.returncode == EXIT_NOT_REPRODUCED, done.stderr
    out = done.stdout.splitlines()
    assert out[-1] == "not reproduced" and not any(line.startswith("rebuilding") for line in out)
    assert any(line.startswith("differs: weights/layer_") for line in out)
    assert any(line.startswith("differs: metric error: ") and "largest absolute difference" in line for line in out)
    assert any(line.startswith(f"  blas_architecture: {source.data.tags['blas_architecture']} -> ") for line in out)
    assert f"  env.OPENBLAS_CORETYPE: {kernel} -> (not recorded)" in out


def test_a_run_with_simd_loops_turned_off_is_rebuilt_and_reproduced(tmp_path, tracking_uri, experiment, client):
    found = numeric_env.features(numeric_env.probe(PLAIN).get(numeric_env.SIMD_TAG))
    if not found:
        pytest.skip("NumPy dispatches to no SIMD extension on this CPU: there is nothing to turn off")
    disabled = " ".join(sorted(found))
    if weights_digest(NPY_DISABLE_CPU_FEATURES=disabled) == weights_digest():
        pytest.skip(f"this NumPy build gives the same bits with {disabled} turned off")
    nn_run(tmp_path, tracking_uri, experiment, *SHORT, env={**PLAIN, "NPY_DISABLE_CPU_FEATURES": disabled})
    (source,) = runs_of(client, experiment)
    assert source.data.tags["numpy_simd_found"] == "none"
    assert source.data.tags["numerics_pinned"] == f"NPY_DISABLE_CPU_FEATURES={disabled}"

    done = rerun(tmp_path, tracking_uri, source.info.run_id, "--no-rebuild")
    assert done.returncode == EXIT_NOT_REPRODUCED and "  numpy_simd_found: none -> " in done.stdout

    done = rerun(tmp_path, tracking_uri, source.info.run_id)
    assert done.returncode == 0, done.stderr
    assert f"NPY_DISABLE_CPU_FEATURES={disabled}" in rebuilt_line(done)
    assert done.stdout.splitlines()[-1] == "reproduced"


def test_numerics_this_cpu_lacks_are_named_and_the_comparison_still_runs(tmp_path, tracking_uri, experiment,
                                                                         client):
    nn_run(tmp_path, tracking_uri, experiment, *SHORT, env=PLAIN)
    (source,) = runs_of(client, experiment)
    # the record a machine with one more SIMD extension would have written (no CPU has this one)
    claimed = f"{source.data.tags['numpy_simd_found']},AVX1024_FUTURE".removeprefix("none,")
    client.set_tag(source.info.run_id, "numpy_simd_found", claimed)

    done = rerun(tmp_path, tracking_uri, source.info.run_id)
    assert done.returncode == 0, done.stderr
    out = done.stdout.splitlines()
    assert "cannot rebuild on this machine: it lacks NumPy SIMD extension AVX1024_FUTURE; comparing anyway" in out
    # the bits are compared all the same: they agree (no loop of that extension exists), and the fact is listed
    assert f"  numpy_simd_found: {claimed} -> {source.data.tags['numpy_simd_found']}" in out
    assert out[-1] == "reproduced"


@pytest.mark.slow
@pytest.mark.parametrize("how", [
    ["-m", "hydra/launcher=basic", "train.lr=0.5,2.0"],
    ["-m", "hydra/launcher=joblib", "train.lr=0.5,2.0"],
    ["-m", "hydra/launcher=batched", "train.lr=0.5,2.0"],
    ["dataset=iris", "train.batch_size=16", "train.lr=0.05"],
], ids=["basic", "joblib", "batched", "mini-batches"])
def test_sweep_children_and_mini_batch_runs_from_another_kernel_are_reproduced(tmp_path, tracking_uri, experiment,
                                                                              client, how):
    kernel = kernel_or_skip()
    nn_run(tmp_path, tracking_uri, experiment, *how, *SHORT, env={**PLAIN, "OPENBLAS_CORETYPE": kernel})
    runs = [r for r in runs_of(client, experiment) if record.SWEEP_ID_TAG not in r.data.tags]
    source = min(runs, key=lambda r: r.data.params["train.lr"])
    assert (PARENT_RUN_TAG in source.data.tags) == (how[0] == "-m")
    done = rerun(tmp_path, tracking_uri, source.info.run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"OPENBLAS_CORETYPE={source.data.tags['blas_architecture']}" in rebuilt_line(done)
    assert done.stdout.splitlines()[-1] == "reproduced"

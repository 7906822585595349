"""Whole default run: `nn-run` against the untracked seed script plus a bare MLflow client run.

Each is a fresh process, timed end to end, interleaved, in its own folder holding an
already-created SQLite store (table creation, ~3 s, is paid once by any store and left out).
Prints medians and the ratio nn-run / (seed script + bare MLflow run).
Usage: python benchmarks/default_run.py [--repeats 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from machine import print_load, print_machine  # this folder is on the path when the script runs

TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests")

SEED_SCRIPT = f"""
import sys; sys.path.insert(0, {TESTS!r})
from seed_program import seed_program
syn0, syn1, errors, l2 = seed_program()
for e in errors: print("Error:" + str(e))
print(l2)
"""

BARE_MLFLOW_RUN = """
import mlflow, numpy as np
from mlflow.entities import Metric, Param
client = mlflow.MlflowClient("sqlite:///mlflow.db")
exp = client.get_experiment_by_name("bare") or client.get_experiment(client.create_experiment("bare"))
run = client.create_run(exp.experiment_id)
client.log_batch(run.info.run_id, metrics=[Metric("error", 0.5, 0, s) for s in range(0, 60001, 10000)],
                 params=[Param("train.lr", "1.0")])
np.save("layer_0.npy", np.zeros((3, 4)))
client.log_artifact(run.info.run_id, "layer_0.npy")
client.set_terminated(run.info.run_id)
"""


def timed(cmd, cwd):
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print_machine()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    py = sys.executable
    nn_run = [py, "-m", "runner"]
    with tempfile.TemporaryDirectory() as bare_dir, tempfile.TemporaryDirectory() as run_dir:
        timed([py, "-c", BARE_MLFLOW_RUN], bare_dir)  # create both stores before timing
        timed(nn_run + ["train.iterations=1"], run_dir)
        seed, bare, runner = [], [], []
        for _ in range(args.repeats):
            seed.append(timed([py, "-c", SEED_SCRIPT], bare_dir))
            bare.append(timed([py, "-c", BARE_MLFLOW_RUN], bare_dir))
            runner.append(timed(nn_run, run_dir))
    s, b, r = (statistics.median(t) for t in (seed, bare, runner))
    print(f"seed script (untracked)   median {s:.2f} s")
    print(f"bare MLflow client run    median {b:.2f} s")
    print(f"nn-run, default config    median {r:.2f} s")
    print(f"ratio nn-run / (seed + bare MLflow), medians of {args.repeats}: {r / (s + b):.2f}")
    print_load("after")


if __name__ == "__main__":
    main()

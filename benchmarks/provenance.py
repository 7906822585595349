"""What recording provenance costs: provenance.collect() against a whole default `nn-run`.

Each is timed in fresh processes, interleaved: collect() as a run pays it (first call, after
NumPy and MLflow are imported), and the whole default run end to end in a folder holding an
already-created SQLite store. Prints medians and collect()'s share of the run.
Usage: python benchmarks/provenance.py [--repeats 7]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

from default_run import timed  # this folder is on sys.path when the script runs
from machine import print_load, print_machine

COLLECT = """
import time, numpy, mlflow
from runner.tracking import provenance
start = time.perf_counter()
provenance.collect()
print(time.perf_counter() - start)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print_machine()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    py = sys.executable
    collect, run = [], []
    with tempfile.TemporaryDirectory() as run_dir:
        timed([py, "-m", "runner", "train.iterations=1"], run_dir)  # create the store before timing
        for _ in range(args.repeats):
            done = subprocess.run([py, "-c", COLLECT], check=True, capture_output=True, text=True)
            collect.append(float(done.stdout.strip().splitlines()[-1]))
            run.append(timed([py, "-m", "runner"], run_dir))
    c, r = statistics.median(collect), statistics.median(run)
    print(f"provenance.collect()      median {c * 1000:.1f} ms")
    print(f"nn-run, default config    median {r:.2f} s")
    print(f"collect / run, medians of {args.repeats}: {c / r:.2%}")
    print_load("after")


if __name__ == "__main__":
    main()

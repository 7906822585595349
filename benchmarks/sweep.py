"""Wall time of a whole sweep (`nn-run -m`, 8 seed-program jobs) by launcher, and what its parent run costs.

Each variant is a fresh `nn-run -m` process, timed end to end, interleaved, against one
already-created SQLite store. Prints medians and ratios against the basic launcher:
- basic: the jobs one after the other in the sweep's process;
- joblib: hydra-joblib-launcher, n_jobs=2 (this machine has 2 cores);
- basic, no compare: without the ranking and plot logged to the parent when the sweep ends.
Usage: python benchmarks/sweep.py [--repeats 3] [--jobs 8] [--iterations 60000]
"""

import argparse
import os
import statistics
import sys
import tempfile

from default_run import timed  # this folder is on the path when the script runs
from machine import print_load, print_machine


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=60000)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    print_machine()
    sweep = [sys.executable, "-m", "runner", "-m", f"seed=range(1,{args.jobs + 1})",
             f"train.iterations={args.iterations}"]
    variants = {
        "basic": sweep,
        "joblib n_jobs=2": sweep + ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        "basic, no compare": sweep + ["hydra.callbacks.sweep_tracking.compare=false"],
    }
    with tempfile.TemporaryDirectory() as folder:
        timed([sys.executable, "-m", "runner", "train.iterations=1"], folder)  # the store's tables, once
        times = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, cmd in variants.items():
                times[name].append(timed(cmd, folder))
    base = statistics.median(times["basic"])
    print(f"{args.jobs} jobs x {args.iterations} iterations, medians of {args.repeats}:")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  {name:<18} {median:6.2f} s  ratio to basic {median / base:.2f}  per job {median / args.jobs:.2f} s")
    print_load("after")


if __name__ == "__main__":
    main()

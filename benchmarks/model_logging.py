"""What logging the MLflow model costs a run: tracking.log_model=true against false.

Two measures, interleaved, against one SQLite store created before timing (table creation is
left out): run_job again and again in one process, as a sweep's worker runs its jobs, and a
whole `nn-run` process each, as a single run from the shell (which also pays for importing
MLflow's model code once). Prints medians, the difference per run and the ratio.
Usage: python benchmarks/model_logging.py [--repeats 7] [--iterations 1000]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from conftest import compose_config  # noqa: E402  (real Hydra composition, as the tests use it)
from machine import print_load, print_machine  # noqa: E402  (this folder is on the path when the script runs)

from runner.job import run_job  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=1000)
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)  # the store's artifact root, ./mlruns, lands in the temp folder
        times = {True: [], False: []}
        for repeat in range(args.repeats + 1):  # the first round warms up (tables, imports) and is not counted
            for log_model in (False, True):
                overrides = [f"tracking.uri=sqlite:///{folder}/mlflow.db", f"tracking.log_model={log_model}",
                             f"train.iterations={args.iterations}", f"train.log_every={args.iterations}"]
                cfg = compose_config(*overrides)
                start = time.perf_counter()
                run_job(cfg, overrides, run_name="bench")
                if repeat:
                    times[log_model].append(time.perf_counter() - start)
        report("run_job in one process", times, args.repeats)
        times = {True: [], False: []}
        for repeat in range(args.repeats):
            for log_model in (False, True):
                start = time.perf_counter()
                subprocess.run([sys.executable, "-m", "runner", f"tracking.log_model={log_model}",
                                f"train.iterations={args.iterations}", f"train.log_every={args.iterations}"],
                               cwd=folder, check=True, capture_output=True)
                times[log_model].append(time.perf_counter() - start)
        report("nn-run, a process each", times, args.repeats)
    print_load("after")


def report(what, times, repeats):
    without, with_model = statistics.median(times[False]), statistics.median(times[True])
    print(f"{what}: without model median {without:.3f} s, with model median {with_model:.3f} s")
    print(f"  model logging costs {with_model - without:.3f} s a run; ratio with / without, medians of "
          f"{repeats}: {with_model / without:.2f}")


if __name__ == "__main__":
    main()

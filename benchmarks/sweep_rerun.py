"""nn-rerun of a whole sweep against the sweep's own time: a batched seed sweep, then `nn-rerun PARENT` of it.

Each repeat runs a fresh `nn-run -m hydra/launcher=batched seed=range(1,N+1)` (default settings: 60,000
iterations, model logging, the comparison at the end) into one already-created SQLite store, then
`nn-rerun PARENT_RUN_ID` of that sweep (every child trained again in stacks, logged under a rerun
parent and compared with its source), both timed end to end as processes. Prints each repeat's two
wall times and their ratio, then the medians and the median ratio (the target: at most about 1.5).
The rerun must say `N/N reproduced`: a rerun that does not reproduce is an error here, not a figure.
Usage: python benchmarks/sweep_rerun.py [--jobs 256] [--repeats 1] [--iterations 60000] [--store-dir DIR]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from machine import print_load, print_machine  # noqa: E402  (this folder is on the path when the script runs)


def timed(command, cwd):
    """(wall seconds, stdout) of a command that must succeed."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return took, done.stdout


def newest_sweep(uri):
    """The id of the newest sweep parent run (tag sweep_id, no rerun_of) in the default experiment."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("nn-runner")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.sweep_id LIKE '%'",
                              order_by=["attributes.start_time DESC"])
    return next(run.info.run_id for run in runs if "rerun_of" not in run.data.tags)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=60000)
    parser.add_argument("--store-dir", default=None, help="where the store's temp folder goes (default: the system's)")
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory(dir=args.store_dir) as folder:
        uri = f"sqlite:///{folder}/mlflow.db"
        timed([sys.executable, "-m", "runner", "train.iterations=1"], folder)  # the store's tables, once
        sweeps, reruns = [], []
        for repeat in range(args.repeats):
            sweep_time, _ = timed([sys.executable, "-m", "runner", "-m", "hydra/launcher=batched",
                                   f"seed=range(1,{args.jobs + 1})", f"train.iterations={args.iterations}",
                                   f"hydra.sweep.dir=multirun/{repeat}"], folder)
            parent = newest_sweep(uri)
            rerun_time, out = timed([sys.executable, "-m", "runner.cli.rerun", parent], folder)
            last = out.splitlines()[-1]
            if last != f"{args.jobs}/{args.jobs} reproduced":
                sys.exit(f"the rerun of sweep {parent} did not reproduce it: {last}")
            sweeps.append(sweep_time)
            reruns.append(rerun_time)
            print(f"repeat {repeat + 1}: {args.jobs}-job batched sweep {sweep_time:.1f} s, nn-rerun of it "
                  f"{rerun_time:.1f} s ({last}), ratio {rerun_time / sweep_time:.2f}x", flush=True)
    ratios = [r / s for s, r in zip(sweeps, reruns)]
    print(f"median of {args.repeats}: sweep {statistics.median(sweeps):.1f} s, rerun {statistics.median(reruns):.1f} s, "
          f"rerun / sweep {statistics.median(ratios):.2f}x")
    print_load()


if __name__ == "__main__":
    main()

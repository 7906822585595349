"""Batched seed sweeps of thousands of jobs: wall time, per job, peak memory of the sweep's process and of a worker,
nn-compare's time; side by side, in one run.

Each size is a fresh `nn-run -m seed=range(1,N+1) hydra/launcher=batched` process with the default
settings (the seed network, 60,000 iterations, the model logged, the comparison at the end),
timed end to end; every sweep logs to one SQLite store, made before the first (as a user's store
holds earlier sweeps). While a sweep runs, its process and every process under it (the forked
workers) are sampled every SAMPLE_SECONDS: the peak is the highest resident set (VmHWM, Linux's
own high-water mark) seen; a forked worker's counts the pages it still shares with the sweep's
process. Then `nn-compare PARENT` ranks the sweep's children again and logs its table and plot,
timed end to end as a user runs it.
Usage: python benchmarks/sweep_scale.py [SIZES ...] [--iterations 60000] [--store-dir DIR]
(SIZES default: 256 2048 10000; 10,000 jobs take ~10 minutes on a quiet 2-core machine.)
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from machine import load_average, print_machine  # noqa: E402  (this folder is on the path when the script runs)

SAMPLE_SECONDS = 0.2
NN_COMPARE = str(Path(sys.executable).with_name("nn-compare"))


def high_water_kb(pid):
    """Linux's peak resident set of process `pid` so far (VmHWM, KB); None once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def descendants(pid):
    """The processes under `pid` (its children, theirs, ...), from /proc's children lists."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in Path(f"/proc/{current}/task/{task}/children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def sweep(folder, uri, jobs, iterations):
    """(wall seconds, peak KB of the sweep's process, peak KB of its biggest worker) of one batched seed sweep."""
    command = [sys.executable, "-m", "runner", "-m", f"seed=range(1,{jobs + 1})", f"train.iterations={iterations}",
               "hydra/launcher=batched", f"tracking.uri={uri}", f"hydra.sweep.dir={folder}/sweep{jobs}"]
    log = Path(folder, f"sweep{jobs}.log")
    start = time.perf_counter()
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=folder, stdout=out, stderr=subprocess.STDOUT)
        own, workers = 0, {}
        while process.poll() is None:
            own = max(own, high_water_kb(process.pid) or 0)
            for pid in descendants(process.pid):
                workers[pid] = max(workers.get(pid, 0), high_water_kb(pid) or 0)
            time.sleep(SAMPLE_SECONDS)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        sys.exit(f"the {jobs}-job sweep failed (exit {process.returncode}): see {log}\n{log.read_text()[-3000:]}")
    return wall, own, max(workers.values(), default=None)


def latest_parent(uri):
    """The run id of the latest sweep's parent run in the store."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("nn-runner")
    (parent,) = client.search_runs([experiment.experiment_id], filter_string="tags.sweep_id LIKE '%'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
    return parent.info.run_id


def timed_compare(folder, uri, parent):
    start = time.perf_counter()
    subprocess.run([NN_COMPARE, parent, "--tracking-uri", uri], cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - start


def mb(kb):
    return "-" if kb is None else f"{kb / 1024:.0f} MB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", type=int, nargs="*", default=[256, 2048, 10000], help="jobs of each sweep")
    parser.add_argument("--iterations", type=int, default=60000)
    parser.add_argument("--store-dir", default=None, help="where the store's temp folder goes (default: the system's)")
    args = parser.parse_args()
    print_machine()
    results = []
    with tempfile.TemporaryDirectory(dir=args.store_dir) as folder:
        uri = f"sqlite:///{folder}/mlflow.db"
        subprocess.run([sys.executable, "-m", "runner", "train.iterations=1", f"tracking.uri={uri}"], cwd=folder,
                       check=True, capture_output=True)  # the store's tables, once
        for jobs in args.sizes:
            wall, own, worker = sweep(folder, uri, jobs, args.iterations)
            compare = timed_compare(folder, uri, latest_parent(uri))
            results.append((jobs, wall, own, worker, compare))
            print(f"{jobs} jobs: {wall:.1f} s, {1000 * wall / jobs:.1f} ms a job, sweep's process {mb(own)}, "
                  f"a worker {mb(worker)}, nn-compare {compare:.1f} s; {load_average()}", flush=True)
    print(f"after: {load_average()}")
    print(f"batched seed sweeps, {args.iterations} iterations a job, default settings, one SQLite store")
    print(f"{'jobs':>7} {'wall':>9} {'per job':>9} {'sweep peak':>11} {'worker peak':>12} {'nn-compare':>11}")
    for jobs, wall, own, worker, compare in results:
        print(f"{jobs:>7} {wall:>7.1f} s {1000 * wall / jobs:>6.1f} ms {mb(own):>11} {mb(worker):>12} "
              f"{compare:>9.1f} s")
    print("(peak: the highest resident set seen, VmHWM; a worker's includes the pages it shares with the sweep's)")


if __name__ == "__main__":
    main()

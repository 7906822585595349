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
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from statistics import median

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from machine import load_average, print_load, print_machine  # noqa: E402  (this folder is on the path when the script runs)

SAMPLE_SECONDS = 0.2
BIN_DIR = Path(sys.executable).parent  # this environment's nn-compare and python


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


def latest_parent(database):
    """(run id, sweep folder) of the latest sweep's parent run in the SQLite store at `database`."""
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as store:
        return store.execute(
            "SELECT r.run_uuid, t.value FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'sweep_dir' "
            "ORDER BY r.start_time DESC LIMIT 1").fetchone()


def store_copy(folder, database, parent, name):
    """A copy of the SQLite store at `database` in `folder` (what a measurement writes lands there): the sweep's parent
    run `parent` RUNNING again, as before its end, with its artifacts under `folder`. Returns the copy's URI."""
    copy = Path(folder, f"{name}.db")
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as source, \
            closing(sqlite3.connect(copy)) as target:
        source.backup(target)
        target.execute("UPDATE runs SET status = 'RUNNING', end_time = NULL, artifact_uri = ? WHERE run_uuid = ?",
                       (str(Path(folder, f"{name}-artifacts")), parent))
        target.commit()
    return f"sqlite:///{copy}"


def timed(command, folder):
    """(wall seconds, CPU seconds of the process) of `command`, run in `folder`."""
    before, start = os.times(), time.perf_counter()
    subprocess.run(command, cwd=folder, check=True, capture_output=True)
    wall, after = time.perf_counter() - start, os.times()
    return wall, after.children_user + after.children_system - before.children_user - before.children_system


def timed_compare(folder, database, parent, bin_dir=BIN_DIR):
    """(wall, CPU seconds) of `nn-compare PARENT` as a user runs it (it logs its table and plot), on a copy of the
    store; `bin_dir`: the environment whose nn-compare runs (another checkout's, for a side-by-side baseline)."""
    uri = store_copy(folder, database, parent, "compare")
    return timed([str(Path(bin_dir, "nn-compare")), parent, "--tracking-uri", uri], folder)


# The sweep's end on its own: the callback of a sweep whose jobs are all done, as on_multirun_start left it, ends
# its parent run (settles and counts every child, ranks them, draws and logs the plot) in a process that has MLflow
# imported and the store open, as the sweep's process has by then.
END_SCRIPT = """
import sys
from omegaconf import OmegaConf
from runner.sweep import callback
from runner.tracking import client
uri, parent, multirun = sys.argv[1:]
config = OmegaConf.load(multirun)  # the sweep's config, as Hydra saved it in the sweep's folder
client.get_run(uri, parent)
sweep = callback.SweepTracking(compare=True)
sweep._parent, sweep._planned = (uri, parent), callback.planned_jobs(config)
sweep._unnamed = set(OmegaConf.select(config, "hydra.job.config.override_dirname.exclude_keys") or [])
callback._open_sweeps.append(sweep)
start, cpu = time.perf_counter(), time.process_time()
sweep._end_parent(completed=True)
print(time.perf_counter() - start, time.process_time() - cpu)
""".replace("import sys", "import sys, time", 1)


def timed_end(folder, database, parent, multirun, bin_dir=BIN_DIR):
    """(wall, CPU seconds) of the sweep's end (END_SCRIPT), on a copy of the store: what the sweep's process does
    once its last job is done. `multirun`: the sweep folder's multirun.yaml."""
    uri = store_copy(folder, database, parent, "end")
    done = subprocess.run([str(Path(bin_dir, "python")), "-c", END_SCRIPT, uri, parent, str(multirun)], cwd=folder,
                          check=True, capture_output=True, text=True)
    wall, cpu = done.stdout.split()[-2:]
    return float(wall), float(cpu)


def mb(kb):
    return "-" if kb is None else f"{kb / 1024:.0f} MB"


def measure_end_and_compare(folder, database, parent, sweep_dir, repeat, baseline):
    """{(what, environment): [(wall, CPU seconds)] x repeat} of the sweep's end and nn-compare, this checkout's and
    the `baseline` checkout's (if any) interleaved."""
    found = {}
    environments = [("new", BIN_DIR)] + ([("baseline", Path(baseline, ".venv", "bin"))] if baseline else [])
    for _ in range(repeat):
        for name, bin_dir in environments:
            found.setdefault(("end", name), []).append(
                timed_end(folder, database, parent, Path(sweep_dir, "multirun.yaml"), bin_dir))
            found.setdefault(("compare", name), []).append(timed_compare(folder, database, parent, bin_dir))
    return found


def shown(measured, what, name):
    """'1.2 s (CPU 0.9 s)': the medians of the measurements of `what` in environment `name`; '-' without any."""
    values = measured.get((what, name))
    if not values:
        return "-"
    return f"{median(w for w, _ in values):.1f} s (CPU {median(c for _, c in values):.1f} s)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sizes", type=int, nargs="*", default=[256, 2048, 10000], help="jobs of each sweep")
    parser.add_argument("--iterations", type=int, default=60000)
    parser.add_argument("--store-dir", default=None, help="where the store's temp folder goes (default: the system's)")
    parser.add_argument("--store", default=None, help="an existing SQLite store's file: no sweeps, only its latest "
                        "sweep's end and nn-compare timed, on copies of the store")
    parser.add_argument("--repeat", type=int, default=1, help="how often the end and nn-compare are timed (medians)")
    parser.add_argument("--baseline", default=None, help="another checkout (with its .venv) whose sweep's end and "
                        "nn-compare are timed too, interleaved with this one's")
    args = parser.parse_args()
    print_machine()
    results = []
    with tempfile.TemporaryDirectory(dir=args.store_dir) as folder:
        if args.store:
            parent, sweep_dir = latest_parent(args.store)
            with closing(sqlite3.connect(f"file:{args.store}?mode=ro", uri=True)) as store:
                (children,) = store.execute("SELECT count(*) FROM tags WHERE key = 'mlflow.parentRunId' AND value = ?",
                                            (parent,)).fetchone()
            measured = measure_end_and_compare(folder, args.store, parent, sweep_dir, args.repeat, args.baseline)
            results.append((children, None, None, None, measured))
        database = Path(folder, "mlflow.db")
        uri = f"sqlite:///{database}"
        if not args.store:
            subprocess.run([sys.executable, "-m", "runner", "train.iterations=1", f"tracking.uri={uri}"], cwd=folder,
                           check=True, capture_output=True)  # the store's tables, once
        for jobs in [] if args.store else args.sizes:
            wall, own, worker = sweep(folder, uri, jobs, args.iterations)
            parent, sweep_dir = latest_parent(database)
            measured = measure_end_and_compare(folder, database, parent, sweep_dir, args.repeat, args.baseline)
            results.append((jobs, wall, own, worker, measured))
            print(f"{jobs} jobs: {wall:.1f} s, {1000 * wall / jobs:.1f} ms a job, sweep's process {mb(own)}, "
                  f"a worker {mb(worker)}, the sweep's end {shown(measured, 'end', 'new')}, nn-compare "
                  f"{shown(measured, 'compare', 'new')}; {load_average()}", flush=True)
    print_load("after")
    print(f"batched seed sweeps, {args.iterations} iterations a job, default settings, one SQLite store"
          if not args.store else f"the latest sweep of {args.store}")
    names = ["new"] + (["baseline"] if args.baseline else [])
    header = ["jobs", "wall", "per job", "sweep peak", "worker peak"] + [
        f"{what}{'' if name == 'new' else ' (' + name + ')'}" for name in names for what in ("sweep's end", "nn-compare")]
    print(" | ".join(header))
    for jobs, wall, own, worker, measured in results:
        cells = [f"{jobs:,}", "-" if wall is None else f"{wall:.1f} s",
                 "-" if wall is None else f"{1000 * wall / jobs:.1f} ms", mb(own), mb(worker)]
        cells += [shown(measured, what, name) for name in names for what in ("end", "compare")]
        print(" | ".join(cells))
    print("(peak: the highest resident set seen, VmHWM; a worker's includes the pages it shares with the sweep's. "
          "The sweep's end and nn-compare: on a copy of the store after the sweep, medians of --repeat; the end in a "
          "process with MLflow imported and the store open, as the sweep's process has them)")


if __name__ == "__main__":
    main()

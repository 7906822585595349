"""Jobs per second of a seed sweep: the batched launcher against basic, joblib and the floor, in one run.

Each sweep is a fresh `nn-run -m seed=range(...)` process with the default settings (60,000
iterations, model logging, the comparison at the end), timed end to end against one
already-created SQLite store. The batched launcher runs the whole sweep, with and without the
model; basic and joblib (n_jobs=2, this machine's cores) would take minutes at 256 jobs, so they
run samples of --sample and 2 x --sample jobs, and the time of N jobs is extrapolated from that
line (the fixed cost of start-up counted once, the slope as the cost per job).

The floor (benchmarks/floor.py), measured twice a repeat between the sweeps (on a shared machine its
own figure moves as much as the sweeps' do): one child's record,
copied from a batched sweep's child and written with the fewest public MlflowClient calls, plus
training alone per job in a batch of --floor-batch networks, plus Hydra's run_job around a no-op
task; CPU time, spread over the cores a sweep uses. No launcher that keeps every child's full record
and Hydra's per-job semantics can go below it. Prints medians over --repeats: wall time per job,
as a ratio to the floor and joblib's jobs per second against each, and where each batched sweep's time goes
(start-up, before the first job, the jobs, the end: timed_phases).
The store (and the sweeps' folders) go in a temp folder under --store-dir: /dev/shm puts them
on tmpfs, where a commit does not wait for the disk.
Usage: python benchmarks/batched_sweep.py [--sizes 64 256] [--sample 8] [--repeats 1] [--iterations 60000]
                                          [--store-dir DIR]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import floor  # noqa: E402  (this folder is on the path when the script runs)
from default_run import timed  # noqa: E402
from machine import load_average, print_machine  # noqa: E402

LAUNCHERS = {
    "basic": [],
    "joblib n_jobs=2": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
}
BATCHED = ["hydra/launcher=batched"]
VARIANTS = {  # name: (extra arguments of the batched sweep, whether its children log a model)
    "batched": (BATCHED, True),
    "batched, tracking.log_model=false": (BATCHED + ["tracking.log_model=false"], False),
}


PHASES = ("start-up", "before the first job", "the jobs", "the end")


def sweep(jobs, iterations, extra):
    return [sys.executable, "-m", "runner", "-m", f"seed=range(1,{jobs + 1})", f"train.iterations={iterations}",
            *extra]


def timed_phases(cmd, folder, sweep_dir):
    """(wall seconds, {phase: seconds}) of a sweep into `sweep_dir`, its phases told by the files it writes:
    start-up until Hydra's multirun.yaml (Python, Hydra, MLflow, the parent run); before the first job
    (validating the jobs' configs, planning the batches, forking, training a batch) until the first job's
    .hydra/ files; the jobs until the last job's checkpoint.json (written as a job ends); the end after it
    (the last JobReturn, the parent's accounting, ranking and plot, the process's exit)."""
    started = time.time()
    subprocess.run([*cmd, f"hydra.sweep.dir={sweep_dir}"], cwd=folder, check=True, capture_output=True)
    ended = time.time()
    root = Path(folder, sweep_dir)
    first = min(p.stat().st_mtime for p in root.glob("*/.hydra/config.yaml"))
    last = max(p.stat().st_mtime for p in root.glob("*/checkpoint.json"))
    multirun = (root / "multirun.yaml").stat().st_mtime
    return ended - started, dict(zip(PHASES, (multirun - started, first - multirun, last - first, ended - last)))


def measure_floor(uri, parent, args):
    """The floor (benchmarks/floor.py) in a process of its own: its Hydra and MLflow state stays out of the
    next sweeps' timing."""
    done = subprocess.run([sys.executable, floor.__file__, "--uri", uri, "--parent", parent,
                           "--iterations", str(args.iterations), "--batch", str(args.floor_batch), "--json"],
                          check=True, capture_output=True, text=True)
    return floor.Floor.from_json(done.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--sample", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=60000)
    parser.add_argument("--floor-batch", type=int, default=256, help="networks trained together for the floor")
    parser.add_argument("--store-dir", default=None, help="where the store's temp folder goes (default: the system's)")
    args = parser.parse_args()
    small, large = args.sample, 2 * args.sample
    print_machine()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.store_dir) as folder:
        print(f"store and sweep folders in {folder}", flush=True)
        uri = f"sqlite:///{folder}/mlflow.db"
        timed([sys.executable, "-m", "runner", "train.iterations=1"], folder)  # the store's tables, once
        batched = {n: {name: [] for name in VARIANTS} for n in args.sizes}
        phases = {n: {name: [] for name in VARIANTS} for n in args.sizes}
        samples = {name: {small: [], large: []} for name in LAUNCHERS}
        floors = []
        for repeat in range(args.repeats):
            parent = None
            for n in args.sizes:
                for v, (name, (extra, _)) in enumerate(VARIANTS.items()):
                    wall, parts = timed_phases(sweep(n, args.iterations, extra), folder, f"batched-{n}-{v}-{repeat}")
                    batched[n][name].append(wall)
                    phases[n][name].append(parts)
                    if name == "batched":
                        parent = floor.latest_parent(uri)
            floors.append(measure_floor(uri, parent, args))
            for name, extra in LAUNCHERS.items():
                for jobs in (small, large):
                    samples[name][jobs].append(timed(sweep(jobs, args.iterations, extra), folder))
            floors.append(measure_floor(uri, parent, args))
    print(f"after: {load_average()}; {time.perf_counter() - started:.0f} s in all")

    best = floor.Floor.median(floors)
    print(f"seed sweep, {args.iterations} iterations a job, medians of {args.repeats}; basic and joblib "
          f"extrapolated from samples of {small} and {large} jobs")
    print("\n".join(best.lines()))
    print(f"  (median of {len(floors)} measurements, after the batched sweeps and after the samples of each repeat: "
          f"{1000 * min(f.per_job() for f in floors):.1f} to {1000 * max(f.per_job() for f in floors):.1f} ms a job)")
    for name, times in samples.items():
        t_small, t_large = statistics.median(times[small]), statistics.median(times[large])
        print(f"  {name}: {small} jobs {t_small:.1f} s, {large} jobs {t_large:.1f} s, "
              f"{(t_large - t_small) / (large - small):.3f} s per extra job")
    for n in args.sizes:
        estimates = {}
        for name, times in samples.items():
            t_small, t_large = statistics.median(times[small]), statistics.median(times[large])
            estimates[name] = t_small + (n - small) * (t_large - t_small) / (large - small)
        print(f"{n} jobs:{'':<32} {'wall':>8} {'per job':>10} {'/ floor':>8}   jobs/s against")
        rows = {f"{name} (estimate)": (wall, True) for name, wall in estimates.items()}
        rows.update({name: (statistics.median(batched[n][name]), with_model)
                     for name, (_, with_model) in VARIANTS.items()})
        for name, (wall, with_model) in rows.items():
            per_job = wall / n
            against = [f"{estimates[other] / wall:.1f}x {other}" for other in estimates if other not in name]
            print(f"  {name:<38} {wall:7.1f} s {1000 * per_job:7.0f} ms {per_job / best.per_job(with_model):7.2f}x   "
                  f"{', '.join(against)}")
        print("  (/ floor: wall time per job over the floor's, the floor without the model for the sweep without it)")
        for name, (_, with_model) in VARIANTS.items():
            parts = {phase: statistics.median(p[phase] for p in phases[n][name]) for phase in PHASES}
            record = best.record if with_model else best.record_no_model
            jobs_floor = (record + best.run_job) / best.cores * n
            print(f"  {name}, where the time goes: " + ", ".join(f"{phase} {t:.1f} s" for phase, t in parts.items())
                  + f"; the jobs' own floor (record and run_job) {jobs_floor:.1f} s, training's "
                  f"{best.training / best.cores * n:.1f} s")


if __name__ == "__main__":
    main()

"""Jobs per second of a seed sweep of the seed experiment: the batched launcher against basic and joblib.

Each variant is a fresh `nn-run -m seed=range(...)` process with the default settings (60,000
iterations, model logging, the comparison at the end), timed end to end against one
already-created SQLite store. The batched launcher runs the whole sweep; basic and joblib
(n_jobs=2, this machine's cores) would take minutes at 256 jobs, so they run samples of
--sample and 2 x --sample jobs, and the time of N jobs is extrapolated from that line (the
fixed cost of start-up counted once, the slope as the cost per job). Prints wall time per job
and the ratios of jobs per second; medians over --repeats. Also times the training alone
(runner.nn.stacked.train_stacked on N seed networks, in this process): the ratio joblib would lose
by if start-up and logging cost nothing, the ceiling of the batched launcher's ratio.
Usage: python benchmarks/batched_sweep.py [--sizes 64 256] [--sample 8] [--repeats 1] [--iterations 60000]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from default_run import timed  # this folder is on the path when the script runs

from runner.data.datasets import load_dataset
from runner.nn.network import init_weights, layer_sizes
from runner.nn.stacked import train_stacked

LAUNCHERS = {
    "basic": [],
    "joblib n_jobs=2": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
}
BATCHED = ["hydra/launcher=batched"]
VARIANTS = {  # name: extra arguments of the batched sweep
    "batched": BATCHED,
    "batched, hydra.launcher.n_jobs=1": BATCHED + ["hydra.launcher.n_jobs=1"],
    "batched, tracking.log_model=false": BATCHED + ["tracking.log_model=false"],
}


def sweep(jobs, iterations, extra):
    return [sys.executable, "-m", "runner", "-m", f"seed=range(1,{jobs + 1})", f"train.iterations={iterations}",
            *extra]


def training_alone(n, iterations):
    """Seconds train_stacked takes for n seed networks (seeds 1..n), the seed experiment's settings."""
    data = load_dataset("seed")
    sizes = layer_sizes(data.X.shape[1], [4], data.y.shape[1])
    initials = [init_weights(sizes, np.random.RandomState(seed), "uniform") for seed in range(1, n + 1)]
    start = time.perf_counter()
    train_stacked(initials, data.X, data.y, lrs=[1.0] * n, iterations=iterations, log_every=10000)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--sample", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=60000)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    small, large = args.sample, 2 * args.sample
    with tempfile.TemporaryDirectory() as folder:
        timed([sys.executable, "-m", "runner", "train.iterations=1"], folder)  # the store's tables, once
        batched = {n: {name: [] for name in VARIANTS} for n in args.sizes}
        trained = {n: [] for n in args.sizes}
        samples = {name: {small: [], large: []} for name in LAUNCHERS}
        for _ in range(args.repeats):
            for n in args.sizes:
                for name, extra in VARIANTS.items():
                    batched[n][name].append(timed(sweep(n, args.iterations, extra), folder))
                trained[n].append(training_alone(n, args.iterations))
            for name, extra in LAUNCHERS.items():
                for jobs in (small, large):
                    samples[name][jobs].append(timed(sweep(jobs, args.iterations, extra), folder))

    print(f"seed sweep, {args.iterations} iterations a job, medians of {args.repeats}; basic and joblib "
          f"extrapolated from samples of {small} and {large} jobs")
    for name, times in samples.items():
        t_small, t_large = statistics.median(times[small]), statistics.median(times[large])
        print(f"  {name}: {small} jobs {t_small:.1f} s, {large} jobs {t_large:.1f} s, "
              f"{(t_large - t_small) / (large - small):.3f} s per extra job")
    for n in args.sizes:
        estimates = {}
        for name, times in samples.items():
            t_small, t_large = statistics.median(times[small]), statistics.median(times[large])
            estimates[name] = t_small + (n - small) * (t_large - t_small) / (large - small)
        print(f"{n} jobs:")
        for name, estimate in estimates.items():
            print(f"  {name:<36} {estimate:7.1f} s (estimate)  {1000 * estimate / n:6.0f} ms per job")
        rows = {**{name: statistics.median(values) for name, values in batched[n].items()},
                "training alone (ceiling)": statistics.median(trained[n])}
        for name, wall in rows.items():
            ratios = ", ".join(f"{estimates[other] / wall:.1f}x {other}" for other in estimates)
            print(f"  {name:<36} {wall:7.1f} s             {1000 * wall / n:6.0f} ms per job  "
                  f"jobs/s: {ratios}")


if __name__ == "__main__":
    main()

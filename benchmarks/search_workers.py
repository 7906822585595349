"""What workers buy a search of uneven trials: the same 24 trials as 3 workers sharing the study
(hydra.sweeper.workers=3) against Hydra-style batches of 3 (hydra.sweeper.n_jobs=3: ask 3, wait for the slowest).

Both through the joblib launcher with 3 processes on this machine. The 24 trials are the same in both: a grid
(train.iterations 6 values, 10,000 to 250,000, x train.lr 4 values) that the grid sampler visits once each (a
worker asks under the ask lock, and a running trial's point counts as visited). Each variant is a fresh
`nn-run -m`, timed end to end, interleaved, each a study and an experiment of its own in one SQLite store.
Prints per variant the median wall time, its ratio to the batches, and the workers' idle share:
1 - (the trials' busy time: the sum of their child runs' durations) / (3 x wall).
Usage: python benchmarks/search_workers.py [--repeats 3] [OVERRIDE ...]
"""

import argparse
import os
import statistics
import sys
import tempfile

import mlflow
from default_run import timed  # this folder is on the path when the script runs
from machine import print_load, print_machine

PROCESSES = 3
TRIALS = ["train.iterations=choice(10000,30000,60000,100000,150000,250000)", "train.lr=choice(0.5,1,2,4)",
          "train.log_every=10000", "hydra.sweeper.n_trials=24", "hydra.sweeper.sampler.name=grid",
          "hydra.sweeper.sampler.seed=1", "tracking.log_model=false", "hydra.callbacks.sweep_tracking.compare=false",
          "hydra/launcher=joblib", f"hydra.launcher.n_jobs={PROCESSES}"]
VARIANTS = {
    f"batches of {PROCESSES} (n_jobs={PROCESSES})": [f"hydra.sweeper.n_jobs={PROCESSES}"],
    f"{PROCESSES} workers (workers={PROCESSES})": [f"hydra.sweeper.workers={PROCESSES}"],
}


def busy_seconds(uri, experiment):
    """(the children's summed run durations in seconds, their (iterations, lr) points) of the experiment's search."""
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 24 and all(r.info.status == "FINISHED" for r in children), "a trial did not finish"
    points = sorted((int(r.data.params["train.iterations"]), float(r.data.params["train.lr"])) for r in children)
    return sum((r.info.end_time - r.info.start_time) / 1000 for r in children), points


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="more nn-run overrides for every variant")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    print_machine()
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{folder}/store.db"
        timed([sys.executable, "-m", "runner", "train.iterations=1", f"tracking.uri={uri}"], folder)  # tables, once
        walls, idle, points = {name: [] for name in VARIANTS}, {name: [] for name in VARIANTS}, set()
        for repeat in range(args.repeats):
            for k, (name, extra) in enumerate(VARIANTS.items()):
                experiment = f"search-{repeat}-{k}"
                command = [sys.executable, "-m", "runner", "-m", "hydra/sweeper=nn_optuna", *TRIALS, *extra,
                           *args.overrides, f"tracking.uri={uri}", f"tracking.experiment={experiment}",
                           f"hydra.sweep.dir={experiment}"]
                wall = timed(command, folder)
                busy, trials = busy_seconds(uri, experiment)
                points.add(tuple(trials))
                walls[name].append(wall)
                idle[name].append(1 - busy / (PROCESSES * wall))
                print(f"  {name}, repeat {repeat + 1}: wall {wall:.1f} s, busy {busy:.1f} s, "
                      f"idle {idle[name][-1]:.0%}", flush=True)
    assert len(points) == 1, "the variants ran different trials"
    base = statistics.median(walls[next(iter(VARIANTS))])
    print(f"24 trials (train.iterations 10,000-250,000 x 4 learning rates, seed table) on {PROCESSES} joblib "
          f"processes, medians of {args.repeats}:")
    print(f"  {'variant':<24} {'wall':>8} {'ratio':>6} {'idle share':>11}")
    for name in VARIANTS:
        wall = statistics.median(walls[name])
        print(f"  {name:<24} {wall:6.1f} s {wall / base:6.2f} {statistics.median(idle[name]):11.0%}")
    print_load("after")


if __name__ == "__main__":
    main()

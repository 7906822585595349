"""What pruning buys a search: experiments/optuna_search.yaml's search (TPE over lr, width and activation on
wine, scored on its validation split) at 48 trials, without a pruner and with two pruners, side by side.

Each variant is a fresh `nn-run -m` process, timed end to end, interleaved, each search a study of its own
(its own sweep folder) against one already-created SQLite store. Prints per variant the median wall time,
its ratio to the search without pruning, the trials pruned, and the best trial's validation error (the
search's result) with that trial's test error beside it. The sampler is seeded, so each variant's trials and
best value are the same on every repeat; only the times vary.
Usage: python benchmarks/search_pruning.py [--repeats 3] [--trials 48] [OVERRIDE ...]  (e.g. dataset=digits:
the same search on a data set whose trials cost more training than logging)
"""

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import mlflow
import yaml
from default_run import timed  # this folder is on the path when the script runs
from machine import print_load, print_machine

NO_MEDIAN = ["hydra.sweeper.pruner.n_startup_trials=null", "hydra.sweeper.pruner.n_warmup_steps=null"]
VARIANTS = {  # the preset's median pruner settings are median's only: the others start from none
    "no pruning": ["hydra.sweeper.pruner.name=none", *NO_MEDIAN],
    "median (preset)": [],
    "successive halving": ["hydra.sweeper.pruner.name=successive_halving", *NO_MEDIAN,
                           "hydra.sweeper.pruner.min_resource=500"],
}


def search_result(folder, sweep_dir, uri, experiment):
    """(best validation error, best trial's test error, trials pruned) of the search in `sweep_dir`."""
    best = yaml.safe_load((Path(folder) / sweep_dir / "optimization_results.yaml").read_text())["best_value"]
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    best_child = next(c for c in children if c.data.metrics.get("final_val_error") == best
                      and "pruned_at_step" not in c.data.tags)
    return best, best_child.data.metrics.get("final_test_error"), int(parent.data.metrics.get("trials_pruned", 0))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("overrides", nargs="*", help="more nn-run overrides for every variant")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    print_machine()
    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{folder}/store.db"
        timed([sys.executable, "-m", "runner", "train.iterations=1", f"tracking.uri={uri}"], folder)  # tables, once
        times, results = {name: [] for name in VARIANTS}, {}
        for repeat in range(args.repeats):
            for k, (name, extra) in enumerate(VARIANTS.items()):
                sweep_dir, experiment = f"search-{repeat}-{k}", f"search-{repeat}-{k}"
                command = [sys.executable, "-m", "runner", "-m", "experiment=optuna_search",
                           f"hydra.sweeper.n_trials={args.trials}", *extra, *args.overrides, f"tracking.uri={uri}",
                           f"tracking.experiment={experiment}", f"hydra.sweep.dir={sweep_dir}"]
                times[name].append(timed(command, folder))
                result = search_result(folder, sweep_dir, uri, experiment)
                assert results.setdefault(name, result) == result, "a seeded search gave another result"
    base = statistics.median(times["no pruning"])
    print(f"{args.trials}-trial search (experiments/optuna_search.yaml {' '.join(args.overrides)}), "
          f"medians of {args.repeats}:")
    print(f"  {'variant':<20} {'wall':>8} {'ratio':>6} {'pruned':>7} {'best val_error':>15} {'its test_error':>15}")
    for name, values in times.items():
        median = statistics.median(values)
        best, test, pruned = results[name]
        print(f"  {name:<20} {median:6.1f} s {median / base:6.2f} {pruned:7d} {best:15.6f} {test:15.6f}")
    print_load("after")


if __name__ == "__main__":
    main()

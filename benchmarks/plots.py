"""What the per-run plots cost: whole `nn-run` processes with tracking.log_plots=true against false.

For each case the two are run interleaved, each a fresh process in a folder holding an
already-created SQLite store, and the medians and their difference are printed; then, in this
process, the cost of importing matplotlib and of drawing each plot of the case.
Usage: python benchmarks/plots.py [--repeats 5]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

from default_run import timed  # this folder is on sys.path when the script runs
from machine import print_load, print_machine

CASES = {  # name: nn-run overrides
    "default (seed table: curve + boundary)": [],
    "moons preset (curve + boundary + confusion)": ["experiment=moons"],
    "digits preset (curve + confusion)": ["experiment=digits"],
}


def whole_runs(repeats):
    nn_run = [sys.executable, "-m", "runner"]
    for name, overrides in CASES.items():
        with tempfile.TemporaryDirectory() as folder:
            timed(nn_run + overrides + ["train.iterations=1"], folder)  # creates the store
            on, off = [], []
            for _ in range(repeats):
                on.append(timed(nn_run + overrides, folder))
                off.append(timed(nn_run + overrides + ["tracking.log_plots=false"], folder))
        a, b = statistics.median(on), statistics.median(off)
        print(f"{name:46s} plots on {a:.2f} s, off {b:.2f} s: +{a - b:.2f} s, ratio {a / b:.2f} "
              f"(medians of {repeats})")


def in_process(repeats):
    """Import and drawing times of each case's plots, inside one process (the first draw pays the import)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from hydra import compose, initialize_config_dir

    from runner.config import CONFIG_DIR
    from runner.job import load_data
    from runner.nn.network import init_weights, layer_sizes
    from runner.nn.training import shuffle_rng, train

    start = time.perf_counter()
    import matplotlib.figure  # noqa: F401
    from matplotlib.backends import backend_agg  # noqa: F401
    print(f"import matplotlib (figure, Agg): {time.perf_counter() - start:.2f} s")
    from runner.plots import write_run_plots

    for name, overrides in CASES.items():
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
        import numpy as np

        data = load_data(cfg.dataset)
        weights = init_weights(layer_sizes(data.X.shape[1], cfg.model.hidden, data.y.shape[1]),
                               np.random.RandomState(cfg.seed), cfg.model.init)
        result = train(weights, data.X, data.y, iterations=cfg.train.iterations, log_every=cfg.train.log_every,
                       lr=cfg.train.lr, hidden_activation=cfg.model.activation, output_activation=cfg.model.output,
                       batch_size=cfg.train.batch_size, rng=shuffle_rng(cfg.seed), X_test=data.X_test,
                       y_test=data.y_test, classify=data.classes is not None)
        times = []
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                write_run_plots(folder, result, data, cfg.dataset.bias, cfg.model.activation, cfg.model.output)
                times.append(time.perf_counter() - start)
        print(f"{name:46s} drawing the plots in process: median {statistics.median(times):.3f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    print_machine()
    whole_runs(args.repeats)
    in_process(args.repeats)
    print_load("after")


if __name__ == "__main__":
    main()

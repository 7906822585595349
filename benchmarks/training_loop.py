"""Training-loop speed: runner.nn.training.train against the plain seed loop, same process, interleaved.

Prints per-iteration medians and the ratio, and checks that both give identical weights. Also
times the runner with its divergence check forced onto every iteration (training.CHECK_ROWS = 1)
against the default cadence, the figure behind that choice, and with the progress hook that
nn-run's progress bar uses (one call per run of iterations) against none.
Usage: python benchmarks/training_loop.py [--repeats 7] [--iterations 60000]
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from machine import print_load, print_machine  # noqa: E402  (this folder is on the path when the script runs)
from seed_program import X, Y, seed_program  # noqa: E402  (the plain transcription the tests use)

from runner.nn import training  # noqa: E402
from runner.nn.network import init_weights  # noqa: E402
from runner.nn.training import train  # noqa: E402


def run_runner(iterations, check_rows=training.CHECK_ROWS, on_progress=None):
    default, training.CHECK_ROWS = training.CHECK_ROWS, check_rows
    try:
        start = time.perf_counter()
        result = train(init_weights([3, 4, 1], np.random.RandomState(1)), X, Y, iterations=iterations, log_every=10000,
                       on_progress=on_progress)
        return time.perf_counter() - start, result
    finally:
        training.CHECK_ROWS = default


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=60000)
    args = parser.parse_args()
    print_machine()
    seed_times, runner_times, checked_times, hooked_times, ticks = [], [], [], [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        syn0, syn1, _, _ = seed_program(args.iterations)
        seed_times.append(time.perf_counter() - start)
        elapsed, result = run_runner(args.iterations)
        runner_times.append(elapsed)
        assert np.array_equal(result.weights[0], syn0) and np.array_equal(result.weights[1], syn1)
        checked_times.append(run_runner(args.iterations, check_rows=1)[0])
        elapsed, hooked = run_runner(args.iterations, on_progress=ticks.append)
        hooked_times.append(elapsed)
        assert all(np.array_equal(a, b) for a, b in zip(hooked.weights, result.weights))
    seed_med, runner_med = statistics.median(seed_times), statistics.median(runner_times)
    checked_med, hooked_med = statistics.median(checked_times), statistics.median(hooked_times)
    per_it = 1e6 / args.iterations
    print(f"seed loop   median {seed_med:.3f} s  ({seed_med * per_it:.2f} us/iteration)")
    print(f"runner loop median {runner_med:.3f} s  ({runner_med * per_it:.2f} us/iteration)")
    print(f"speed-up (seed / runner, medians of {args.repeats}): {seed_med / runner_med:.2f}x; weights identical")
    print(f"divergence check on every iteration instead of every {training.CHECK_ROWS // len(Y)}: "
          f"{checked_med * per_it:.2f} us/iteration, {checked_med / runner_med:.2f}x the default's time")
    print(f"progress hook ({len(ticks) // args.repeats} calls a run): {hooked_med * per_it:.2f} us/iteration, "
          f"{hooked_med / runner_med:.3f}x the time without; weights identical")
    print_load("after")


if __name__ == "__main__":
    main()

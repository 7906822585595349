"""Training-loop speed: runner.training.train against the plain seed loop, same process, interleaved.

Prints per-iteration medians and the ratio, and checks that both give identical weights. A third
contestant trains with a progress hook at the rate nn-run's progress bar asks for (1000 calls a
run), to show what the bar costs the loop.
Usage: python benchmarks/training_loop.py [--repeats 7] [--iterations 60000]
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from seed_program import X, Y, seed_program  # noqa: E402  (the plain transcription the tests use)

from runner.network import init_weights  # noqa: E402
from runner.progress import progress_every  # noqa: E402
from runner.training import train  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=60000)
    args = parser.parse_args()
    seed_times, runner_times, hooked_times = [], [], []
    ticks = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        syn0, syn1, _, _ = seed_program(args.iterations)
        seed_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = train(init_weights([3, 4, 1], np.random.RandomState(1)), X, Y,
                       iterations=args.iterations, log_every=10000)
        runner_times.append(time.perf_counter() - start)
        assert np.array_equal(result.weights[0], syn0) and np.array_equal(result.weights[1], syn1)
        start = time.perf_counter()
        hooked = train(init_weights([3, 4, 1], np.random.RandomState(1)), X, Y, iterations=args.iterations,
                       log_every=10000, on_progress=ticks.append, progress_every=progress_every(args.iterations))
        hooked_times.append(time.perf_counter() - start)
        assert all(np.array_equal(a, b) for a, b in zip(hooked.weights, result.weights))
    seed_med, runner_med = statistics.median(seed_times), statistics.median(runner_times)
    hooked_med = statistics.median(hooked_times)
    per_it = 1e6 / args.iterations
    print(f"seed loop   median {seed_med:.3f} s  ({seed_med * per_it:.2f} us/iteration)")
    print(f"runner loop median {runner_med:.3f} s  ({runner_med * per_it:.2f} us/iteration)")
    print(f"runner loop + progress hook median {hooked_med:.3f} s  ({len(ticks) // args.repeats} calls a run)")
    print(f"speed-up (seed / runner, medians of {args.repeats}): {seed_med / runner_med:.2f}x; weights identical")
    print(f"progress hook cost (hooked / runner): {hooked_med / runner_med:.3f}; weights identical")


if __name__ == "__main__":
    main()

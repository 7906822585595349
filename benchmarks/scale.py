"""Training at scale: runner.nn.training.train against the plain seed loop, same process, interleaved.

For each (rows, hidden) size: an XOR table of `rows` random rows (two bits plus a bias column), a
3-hidden-1 sigmoid network, full batch. Prints seconds per iteration (median over repeats; each
call's time, start-up included, divided by its iterations) and the peak of traced memory
(tracemalloc, in a separate call so tracing does not slow the timed ones) above what existed
before the call, for both loops, and checks that both end with identical weights.
Usage: python benchmarks/scale.py [--repeats 3] [--sizes 4x4 1000x64 100000x512]
"""

import argparse
import os
import statistics
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from machine import print_load, print_machine  # noqa: E402  (this folder is on the path when the script runs)
from seed_program import seed_loop  # noqa: E402  (the plain transcription the tests use)

from runner.nn.network import init_weights  # noqa: E402
from runner.nn.training import train  # noqa: E402

ITERATIONS = {4: 20000, 1000: 200, 100000: 4}  # by rows: enough to time, few at the big size


def xor_table(rows):
    rng = np.random.RandomState(0)
    bits = rng.randint(0, 2, (rows, 2)).astype(np.float64)
    return np.hstack([bits, np.ones((rows, 1))]), (bits[:, :1] != bits[:, 1:]).astype(np.float64)


def plain(X, y, hidden, iterations):
    syn0, syn1 = init_weights([3, hidden, 1], np.random.RandomState(1))
    syn0, syn1, _, _ = seed_loop(X, y, syn0, syn1, iterations, iterations)
    return [syn0, syn1]


def runner(X, y, hidden, iterations):
    return train(init_weights([3, hidden, 1], np.random.RandomState(1)), X, y, iterations=iterations,
                 log_every=iterations).weights


def peak_bytes(loop, *args):
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    loop(*args)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def size_text(n):
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 2**10:.1f} KB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["4x4", "1000x64", "100000x512"])
    args = parser.parse_args()
    print_machine()
    print(f"{'rows x hidden':>14} {'iters':>6} | {'plain s/it':>11} {'runner s/it':>11} {'speed-up':>8} | "
          f"{'plain peak':>11} {'runner peak':>11}")
    for size in args.sizes:
        rows, hidden = (int(v) for v in size.split("x"))
        iterations = ITERATIONS.get(rows, max(2, 200000 // rows))
        X, y = xor_table(rows)
        times = {"plain": [], "runner": []}
        for _ in range(args.repeats):
            for name, loop in (("plain", plain), ("runner", runner)):
                start = time.perf_counter()
                weights = loop(X, y, hidden, iterations)
                times[name].append((time.perf_counter() - start) / iterations)
                if name == "plain":
                    expected = weights
                else:
                    assert all(np.array_equal(a, b) for a, b in zip(expected, weights)), "weights differ"
        peaks = {name: peak_bytes(loop, X, y, hidden, 2) for name, loop in (("plain", plain), ("runner", runner))}
        p, r = statistics.median(times["plain"]), statistics.median(times["runner"])
        print(f"{size:>14} {iterations:>6} | {p:>11.3g} {r:>11.3g} {p / r:>7.2f}x | "
              f"{size_text(peaks['plain']):>11} {size_text(peaks['runner']):>11}", flush=True)
    print(f"medians of {args.repeats}; peak = traced memory above the start of a 2-iteration call; weights identical")
    print_load("after")


if __name__ == "__main__":
    main()

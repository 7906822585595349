"""What checkpoints cost a long run: the seed network trained with and without them, side by side.

Prints the median time of a run of ITERATIONS iterations without checkpoints (baseline), with the
default train.checkpoint_every (one checkpoint at the start, then one a minute), and with a
checkpoint at every safe point (the worst case), as ratios to the baseline; and one save's cost.
"""

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from machine import print_load, print_machine  # noqa: E402  (this folder is on the path when the script runs)
from runner.checkpoint import Checkpointer  # noqa: E402
from runner.data.datasets import load_dataset  # noqa: E402
from runner.nn.network import init_weights  # noqa: E402
from runner.nn.training import train  # noqa: E402

ITERATIONS, REPEATS = 400_000, 5
DEFAULT_EVERY = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "conf", "train", "backprop.yaml")))[
    "checkpoint_every"]


def one_run(folder, every):
    data = load_dataset("seed")
    saver = None if every is None else Checkpointer(folder, "run", "sha", every)
    began = time.perf_counter()
    train(init_weights([3, 4, 1], np.random.RandomState(1)), data.X, data.y, iterations=ITERATIONS,
          log_every=ITERATIONS // 4, checkpoints=saver)
    return time.perf_counter() - began, (saver.saves if saver else 0)


print_machine()
with tempfile.TemporaryDirectory() as folder:
    times = {"none": [], f"every {DEFAULT_EVERY:g} s (default)": [], "every safe point": []}
    saves = {}
    for _ in range(REPEATS):  # interleaved, so that the machine's noise hits all three alike
        for name, every in zip(times, (None, DEFAULT_EVERY, 0.0)):
            seconds, saves[name] = one_run(folder, every)
            times[name].append(seconds)
    base = statistics.median(times["none"])
    print(f"{ITERATIONS} iterations of the seed network, median of {REPEATS}:")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"  checkpoints {name:28s} {median:.3f} s  ratio {median / base:.4f}  ({saves[name]} saves)")
    worst = statistics.median(times["every safe point"])
    print(f"  one save: {1e6 * (worst - base) / saves['every safe point']:.0f} us")
print_load("after")

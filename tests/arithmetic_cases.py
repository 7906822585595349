"""Model options trained by the runner (single and stacked paths) and by the plain oracle, compared bit for bit.

Imported by the tests, and run as a script in a subprocess under a chosen OpenBLAS kernel: it
then prints, as JSON, the loaded kernel and every case whose runner result differs from the oracle's.
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from plain_backprop import plain_train  # noqa: E402
from seed_program import X as SEED_X  # noqa: E402
from seed_program import Y as SEED_Y

from runner.nn.network import init_weights, layer_sizes  # noqa: E402
from runner.nn.stacked import train_stacked  # noqa: E402
from runner.nn.training import shuffle_rng, train  # noqa: E402


def classification_data(rows=10, features=3, classes=3, seed=7):
    rng = np.random.RandomState(seed)
    return rng.random_sample((rows, features)), np.eye(classes)[rng.randint(0, classes, rows)]


# name: (data, hidden sizes, options); each trains 600 iterations from RandomState(1)'s uniform init
CASES = {
    "seed table, lr 0.5": ("seed", [4], dict(lr=0.5)),
    "seed table, deeper [5, 3]": ("seed", [5, 3], dict()),
    "tanh hidden": ("classes", [6], dict(hidden="tanh", lr=0.1)),
    "relu hidden": ("classes", [6], dict(hidden="relu", lr=0.1)),
    "softmax output": ("classes", [6], dict(output="softmax", lr=0.1)),
    "tanh, softmax, deeper": ("classes", [5, 4], dict(hidden="tanh", output="softmax", lr=0.05)),
    "mini-batches of 3": ("classes", [6], dict(batch_size=3, lr=0.3)),
    "mini-batches of 4, relu, softmax": ("classes", [6], dict(batch_size=4, hidden="relu", output="softmax", lr=0.2)),
}
ITERATIONS, LOG_EVERY, SEED = 600, 100, 1


def case_inputs(name):
    data, hidden, options = CASES[name]
    X, y = (SEED_X, SEED_Y) if data == "seed" else classification_data()
    weights = init_weights(layer_sizes(X.shape[1], hidden, y.shape[1]), np.random.RandomState(SEED))
    return X, y, weights, options


def differences(name, weights, errors, oracle):
    """What differs between a runner result and the oracle's (weights, errors)."""
    found = [f"weights/layer_{k}" for k, (a, b) in enumerate(zip(weights, oracle[0])) if not np.array_equal(a, b)]
    if [float(e) for e in errors] != [float(e) for e in oracle[1]]:
        found.append("errors")
    return [f"{name}: {what}" for what in found]


def mismatches():
    """Every case (runner and, for full batch, the stacked trainer) whose bits differ from the plain oracle."""
    found = []
    for name in CASES:
        X, y, weights, options = case_inputs(name)
        oracle = plain_train(weights, X, y, ITERATIONS, LOG_EVERY, seed=SEED, **options)
        result = train(weights, X, y, iterations=ITERATIONS, log_every=LOG_EVERY, lr=options.get("lr", 1.0),
                       hidden_activation=options.get("hidden", "sigmoid"),
                       output_activation=options.get("output", "sigmoid"),
                       batch_size=options.get("batch_size", 0), rng=shuffle_rng(SEED))
        found += differences(name, result.weights, result.errors, oracle)
        if not options.get("batch_size"):  # the stacked trainer: this network between two others
            others = [init_weights(layer_sizes(X.shape[1], CASES[name][1], y.shape[1]), np.random.RandomState(s))
                      for s in (7, 8)]
            lr = options.get("lr", 1.0)
            results, _ = train_stacked([others[0], weights, others[1]], X, y, lrs=[0.3, lr, 2.0],
                                       iterations=ITERATIONS, log_every=LOG_EVERY,
                                       hidden_activation=options.get("hidden", "sigmoid"),
                                       output_activation=options.get("output", "sigmoid"))
            found += differences(f"stacked {name}", results[1].weights, results[1].errors, oracle)
    return found


def blas_architecture():
    from threadpoolctl import threadpool_info

    return next((lib.get("architecture") for lib in threadpool_info() if lib.get("user_api") == "blas"), None)


if __name__ == "__main__":
    print(json.dumps({"architecture": blas_architecture(), "mismatches": mismatches()}))

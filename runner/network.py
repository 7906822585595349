"""A fully connected network as a plain list of weight matrices: initialisation and prediction."""

import numpy as np

from runner.activations import get_activation, run_ops


def layer_sizes(n_inputs, hidden, n_outputs):
    """[inputs, *hidden, outputs]: the width of every layer, input first."""
    return [int(n_inputs), *(int(h) for h in hidden), int(n_outputs)]


def init_weights(sizes, rng):
    """Uniform(-1, 1) matrices drawn in layer order, as the seed does: `2*random((a, b)) - 1`.

    `rng` is a `np.random.RandomState`; with RandomState(1) and sizes [3, 4, 1] the result is
    the seed program's syn0 and syn1 bit for bit.
    """
    return [2 * rng.random_sample((a, b)) - 1 for a, b in zip(sizes[:-1], sizes[1:])]


def predict(weights, X, hidden_activation="sigmoid", output_activation="sigmoid"):
    """Forward pass without side effects; returns the output layer."""
    hidden, output = get_activation(hidden_activation), get_activation(output_activation)
    layer = np.asarray(X, dtype=np.float64)
    for k, w in enumerate(weights):
        layer = np.dot(layer, w)
        run_ops((output if k == len(weights) - 1 else hidden).forward_ops(layer))
    return layer

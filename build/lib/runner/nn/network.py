"""A fully connected network as a plain list of weight matrices: initialisation and prediction."""

import numpy as np

from runner.nn.activations import get_activation, get_output, run_ops


def layer_sizes(n_inputs, hidden, n_outputs):
    """[inputs, *hidden, outputs]: the width of every layer, input first."""
    return [int(n_inputs), *(int(h) for h in hidden), int(n_outputs)]


def uniform(rng, fan_in, fan_out):
    """The seed's uniform(-1, 1): `2*random((a, b)) - 1`, bit for bit."""
    return 2 * rng.random_sample((fan_in, fan_out)) - 1


def xavier(rng, fan_in, fan_out):
    """Glorot & Bengio (2010) uniform: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)), variance 2 / (fan_in + fan_out)."""
    return np.sqrt(6.0 / (fan_in + fan_out)) * (2 * rng.random_sample((fan_in, fan_out)) - 1)


def he(rng, fan_in, fan_out):
    """He et al. (2015) normal: N(0, 2 / fan_in), suited to relu layers."""
    return np.sqrt(2.0 / fan_in) * rng.standard_normal((fan_in, fan_out))


INITS = {f.__name__: f for f in (uniform, xavier, he)}


def init_weights(sizes, rng, scheme="uniform"):
    """One matrix per pair of adjacent layers, drawn in layer order from `rng` with `scheme` (a key of INITS).

    `rng` is a `np.random.RandomState`; with RandomState(1), sizes [3, 4, 1] and the default
    scheme the result is the seed program's syn0 and syn1 bit for bit.
    """
    draw = INITS[scheme]
    return [draw(rng, a, b) for a, b in zip(sizes[:-1], sizes[1:])]


def predict(weights, X, hidden_activation="sigmoid", output_activation="sigmoid"):
    """Forward pass without side effects; returns the output layer."""
    hidden, output = get_activation(hidden_activation), get_output(output_activation)
    layer = np.asarray(X, dtype=np.float64)
    for k, w in enumerate(weights):
        layer = np.dot(layer, w)
        run_ops((output if k == len(weights) - 1 else hidden).forward_ops(layer))
    return layer

"""The seed program's loop generalised the plain way: the oracle for every other model option.

Written as the seed writes it, allocating a new array for every expression: a `nonlin` per
activation with its `deriv` flag, deltas computed from the weights before any update, the last
layer's update first, `w += lr * l.T.dot(delta)`. Mini-batches shuffle `arange(rows)` in place
at each epoch's start with the generator the README names, as documented. Errors are logged
every `log_every` iterations before that iteration's update, then once for the final weights.
"""

import numpy as np


def sigmoid(x, deriv=False):
    if deriv:
        return x * (1 - x)
    return 1 / (1 + np.exp(-x))


def tanh(x, deriv=False):
    if deriv:
        return 1 - x**2
    return np.tanh(x)


def relu(x, deriv=False):
    if deriv:
        return x > 0
    return np.maximum(x, 0)


def softmax(x):
    e = np.exp(x - np.max(x, axis=1, keepdims=True))
    return e / np.sum(e, axis=1, keepdims=True)


HIDDEN = {"sigmoid": sigmoid, "tanh": tanh, "relu": relu}


def layers_of(X, weights, hidden, output):
    """[X, l1, ..., output] for the given weights."""
    layers = [X]
    for k, w in enumerate(weights):
        z = np.dot(layers[-1], w)
        if k < len(weights) - 1:
            layers.append(HIDDEN[hidden](z))
        else:
            layers.append(sigmoid(z) if output == "sigmoid" else softmax(z))
    return layers


def plain_train(weights, X, y, iterations, log_every, lr=1.0, hidden="sigmoid", output="sigmoid",
                batch_size=0, seed=None):
    """Train copies of `weights`; returns (weights, [error at each logged step], output of the last iteration)."""
    weights = [w.copy() for w in weights]
    rows = len(y)
    full = batch_size in (0, rows)
    if not full:
        rng, order = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0]), np.arange(rows)
        starts = list(range(0, rows, batch_size))
    errors, last = [], None
    for j in range(iterations):
        if j % log_every == 0:
            errors.append(np.mean(np.abs(y - layers_of(X, weights, hidden, output)[-1])))
        if full:
            Xb, yb = X, y
        else:
            if j % len(starts) == 0:
                rng.shuffle(order)
            batch = order[starts[j % len(starts)]:starts[j % len(starts)] + batch_size]
            Xb, yb = X[batch], y[batch]
        layers = layers_of(Xb, weights, hidden, output)
        last = layers[-1]
        error = yb - last
        delta = error * sigmoid(last, deriv=True) if output == "sigmoid" else error
        deltas = [delta]
        for k in range(len(weights) - 1, 0, -1):
            error = deltas[0].dot(weights[k].T)
            deltas.insert(0, error * HIDDEN[hidden](layers[k], deriv=True))
        for k in range(len(weights) - 1, -1, -1):
            weights[k] += lr * layers[k].T.dot(deltas[k])
    errors.append(np.mean(np.abs(y - layers_of(X, weights, hidden, output)[-1])))
    return weights, errors, last

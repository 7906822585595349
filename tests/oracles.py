"""Plain, allocating transcriptions of the math, used as independent oracles."""

import numpy as np

ACTIVATIONS = {
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda out: out * (1 - out)),
    "tanh": (np.tanh, lambda out: 1 - out**2),
    "relu": (lambda z: np.maximum(z, 0), lambda out: (out > 0).astype(float)),
}


def forward(weights, X, hidden="sigmoid", output="sigmoid"):
    """Every layer's output, input first."""
    layers = [np.asarray(X, dtype=float)]
    for k, w in enumerate(weights):
        f = ACTIVATIONS[output if k == len(weights) - 1 else hidden][0]
        layers.append(f(layers[-1] @ w))
    return layers


def squared_loss(weights, X, y, hidden="sigmoid", output="sigmoid"):
    """0.5 * sum((y - prediction)**2): the loss whose negative gradient the seed's update follows."""
    return 0.5 * np.sum((y - forward(weights, X, hidden, output)[-1]) ** 2)


def numerical_gradient(loss, weights, eps=1e-6):
    """Central differences of loss(weights) for every weight entry."""
    grads = []
    for w in weights:
        g = np.zeros_like(w)
        for idx in np.ndindex(w.shape):
            saved = w[idx]
            w[idx] = saved + eps
            up = loss(weights)
            w[idx] = saved - eps
            down = loss(weights)
            w[idx] = saved
            g[idx] = (up - down) / (2 * eps)
        grads.append(g)
    return grads

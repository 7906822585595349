"""Plain, allocating transcriptions of the math, used as independent oracles."""

import numpy as np

ACTIVATIONS = {
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda out: out * (1 - out)),
    "tanh": (np.tanh, lambda out: 1 - out**2),
    "relu": (lambda z: np.maximum(z, 0), lambda out: (out > 0).astype(float)),
}


def softmax(z):
    """Row-wise exp(z) / sum(exp(z)), written the textbook way (fine for the small z of the tests)."""
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


OUTPUTS = {"sigmoid": ACTIVATIONS["sigmoid"][0], "softmax": softmax}


def forward(weights, X, hidden="sigmoid", output="sigmoid"):
    """Every layer's output, input first."""
    layers = [np.asarray(X, dtype=float)]
    for k, w in enumerate(weights):
        f = OUTPUTS[output] if k == len(weights) - 1 else ACTIVATIONS[hidden][0]
        layers.append(f(layers[-1] @ w))
    return layers


def squared_loss(weights, X, y, hidden="sigmoid", output="sigmoid"):
    """0.5 * sum((y - prediction)**2): the loss whose negative gradient the seed's update follows."""
    return 0.5 * np.sum((y - forward(weights, X, hidden, output)[-1]) ** 2)


def cross_entropy_loss(weights, X, y, hidden="sigmoid"):
    """-sum(y * log(softmax output)): the loss a softmax output is trained on."""
    return -np.sum(y * np.log(forward(weights, X, hidden, "softmax")[-1]))


def loss(weights, X, y, hidden="sigmoid", output="sigmoid"):
    """The loss each output pairs with: squared error for sigmoid, cross-entropy for softmax."""
    if output == "softmax":
        return cross_entropy_loss(weights, X, y, hidden)
    return squared_loss(weights, X, y, hidden, output)


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


def backprop_update(weights, X, y, hidden="sigmoid", output="sigmoid", lr=1.0):
    """One plain gradient-descent step on the output's loss, summed over the rows: the new weights."""
    layers = forward(weights, X, hidden, output)
    delta = y - layers[-1]  # -dLoss/dz for softmax with cross-entropy
    if output == "sigmoid":  # squared error: times the sigmoid's slope
        delta = delta * (layers[-1] * (1 - layers[-1]))
    grads = [None] * len(weights)
    for k in range(len(weights) - 1, -1, -1):
        grads[k] = layers[k].T @ delta
        if k:
            delta = (delta @ weights[k].T) * ACTIVATIONS[hidden][1](layers[k])
    return [w + lr * g for w, g in zip(weights, grads)]

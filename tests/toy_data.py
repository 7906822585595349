"""Small classification tables for the model tests: inputs with a bias column, one-hot targets."""

import numpy as np


def blobs(per_class, spread, seed=0, interleave=False):
    """Three Gaussian classes around fixed centres; rows grouped by class, or cycling through them."""
    rng = np.random.RandomState(seed)
    centres = np.array([[0.0, 3.0], [3.0, -2.0], [-3.0, -2.0]])
    labels = np.tile(np.arange(3), per_class) if interleave else np.repeat(np.arange(3), per_class)
    X = np.hstack([centres[labels] + rng.standard_normal((len(labels), 2)) * spread, np.ones((len(labels), 1))])
    return X, np.eye(3)[labels]


def noisy_labels(rows=40, classes=3):
    """Random labels: no network fits them, so a softmax error never vanishes and a large lr blows up."""
    rng = np.random.RandomState(0)
    X = np.hstack([rng.standard_normal((rows, 4)), np.ones((rows, 1))])
    return X, np.eye(classes)[rng.randint(0, classes, rows)]

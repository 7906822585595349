"""Feature scaling fitted on the training rows and applied unchanged to the held-out (validation, test) rows."""

import numpy as np

from runner.data.errors import DataError

SCALINGS = ("none", "standard", "minmax")


def fit_scaling(kind, X_train):
    """(offset, divisor) per column so that (X - offset) / divisor scales like the training rows.

    standard: the training mean and standard deviation; minmax: the training minimum and range.
    A constant column gets divisor 1 (it is only shifted), so nothing divides by zero.
    """
    if kind == "standard":
        offset, spread = X_train.mean(axis=0), X_train.std(axis=0)
    elif kind == "minmax":
        offset, spread = X_train.min(axis=0), X_train.max(axis=0) - X_train.min(axis=0)
    else:
        raise DataError("scale", kind, f"one of {', '.join(SCALINGS)}")
    return offset, np.where(spread > 0, spread, 1.0)


def scale(kind, X_train, *held_out):
    """(X_train, *held_out) scaled with statistics of X_train alone (a None stays None); 'none' changes nothing."""
    if kind == "none":
        return (X_train, *held_out)
    offset, divisor = fit_scaling(kind, X_train)
    return tuple(None if X is None else (X - offset) / divisor for X in (X_train, *held_out))

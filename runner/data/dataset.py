"""A data set as arrays: what every loader returns and the rest of the program trains on."""

from dataclasses import dataclass

import numpy as np


@dataclass
class Dataset:
    """Training inputs X (rows x features) and targets y (rows x outputs), optionally test and validation splits."""

    name: str
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray | None = None  # held-out inputs; None when there is no test split
    y_test: np.ndarray | None = None
    X_val: np.ndarray | None = None  # validation inputs (dataset.val_fraction); None when there is no such split
    y_val: np.ndarray | None = None
    classes: list | None = None  # class names, in target-column order, for a classification task
    source: str | None = None  # where the rows came from: a loader's name or a file's absolute path
    file_sha256: str | None = None  # hex sha256 of the file's bytes, for data read from a file


def one_hot(labels, n_classes):
    """Rows of 0.0 with a 1.0 in column `label`."""
    return np.eye(n_classes)[np.asarray(labels)]

"""Data sets by name: each loader returns inputs and targets as float64 arrays."""

from dataclasses import dataclass

import numpy as np


@dataclass
class Dataset:
    """Training inputs X (rows x features) and targets y (rows x outputs), optionally a test split."""

    name: str
    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray | None = None  # held-out inputs; None when there is no test split
    y_test: np.ndarray | None = None
    classes: list | None = None  # class names, in target-column order, for a classification task


def seed_table():
    """The seed program's table: inputs a, b and a bias column of ones; target a XOR b."""
    X = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.float64)
    y = np.array([[0], [1], [1], [0]], dtype=np.float64)
    return Dataset("seed", X, y)


DATASETS = {"seed": seed_table}


def load_dataset(name):
    """Build the data set called `name` (a key of DATASETS)."""
    return DATASETS[name]()

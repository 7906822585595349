"""Data sets by name, and the path from a name to training and test arrays.

A loader returns every row of its data set as float64 arrays, without a bias column.
`load_dataset` then splits off the test rows and the validation rows, scales the features with
training statistics and appends the bias column of ones that stands in for the network's
missing bias terms.
"""

import numpy as np

from runner.data.csv_file import load_csv
from runner.data.dataset import Dataset, one_hot
from runner.data.errors import DataError
from runner.data.scaling import SCALINGS
from runner.data.scaling import scale as scale_features
from runner.data.split import split_rows, validation_rows

MAX_PARITY_BITS = 20  # 2**20 rows: beyond that the table is too large to be a toy


def _truth_table(name, n_bits, rule):
    """All 2**n_bits input rows, first column most significant (the seed's order), target rule(bits)."""
    codes = np.arange(2 ** n_bits)
    X = ((codes[:, None] >> np.arange(n_bits - 1, -1, -1)) & 1).astype(np.float64)
    y = rule(X).astype(np.float64).reshape(-1, 1)
    return Dataset(name, X, y, source=f"runner.data.datasets:{name}")


def seed_table():
    """The seed program's table: inputs a, b (the bias column comes later); target a XOR b."""
    return _truth_table("seed", 2, lambda X: X[:, 0] != X[:, 1])


GATES = {
    "and": lambda X: (X[:, 0] == 1) & (X[:, 1] == 1),
    "or": lambda X: (X[:, 0] == 1) | (X[:, 1] == 1),
    "xor": lambda X: X[:, 0] != X[:, 1],
    "nand": lambda X: ~((X[:, 0] == 1) & (X[:, 1] == 1)),
}


def logic_gate(gate):
    """The truth table of a two-input gate: inputs a, b; target gate(a, b)."""
    return lambda: _truth_table(gate, 2, GATES[gate])


def parity(n_bits=3):
    """All n_bits-bit inputs; target 1 when an odd number of bits are set."""
    if not 1 <= n_bits <= MAX_PARITY_BITS:
        raise DataError("n_bits", n_bits, f"must be >= 1 and <= {MAX_PARITY_BITS}")
    return _truth_table("parity", n_bits, lambda X: X.sum(axis=1) % 2 == 1)


def bundled(loader):
    """A data set that ships with scikit-learn (no download): features, one-hot classes, class names."""

    def load():
        import sklearn.datasets  # ~1.5 s to import: only for the data sets that come from it

        bunch = getattr(sklearn.datasets, f"load_{loader}")()
        classes = [str(name) for name in bunch.target_names]
        X = np.ascontiguousarray(bunch.data, dtype=np.float64)
        return Dataset(loader, X, one_hot(bunch.target, len(classes)), classes=classes,
                       source=f"sklearn.datasets.load_{loader}")

    return load


def _generated(name, X, labels, n_classes):
    classes = [str(k) for k in range(n_classes)]
    return Dataset(name, np.ascontiguousarray(X, dtype=np.float64), one_hot(labels, n_classes), classes=classes,
                   source=f"sklearn.datasets.make_{name}")


def _check_generated(n_samples, noise, least_samples):
    if n_samples < least_samples:
        raise DataError("n_samples", n_samples, f"must be >= {least_samples} (at least one row per class)")
    if not noise >= 0:
        raise DataError("noise", noise, "must be >= 0")


def moons(n_samples=200, noise=0.2, seed=0):
    """Two interleaving half circles (scikit-learn's make_moons), classes 0 and 1."""
    _check_generated(n_samples, noise, 2)
    # scikit-learn takes ~1.5 s to import: only when this data set is made
    from sklearn.datasets import make_moons

    return _generated("moons", *make_moons(n_samples=n_samples, noise=noise, random_state=seed), 2)


def circles(n_samples=200, noise=0.1, seed=0, factor=0.5):
    """A small circle inside a large one (make_circles); `factor` is the ratio of their radii."""
    _check_generated(n_samples, noise, 2)
    if not 0 < factor < 1:
        raise DataError("factor", factor, "must be > 0 and < 1")
    # scikit-learn takes ~1.5 s to import: only when this data set is made
    from sklearn.datasets import make_circles

    return _generated("circles", *make_circles(n_samples=n_samples, noise=noise, random_state=seed,
                                               factor=factor), 2)


def blobs(n_samples=300, noise=1.0, seed=0, centers=3, n_features=2):
    """Gaussian clusters (make_blobs), one class per centre; `noise` is each cluster's std."""
    if centers < 2:
        raise DataError("centers", centers, "must be >= 2 (one class per centre)")
    if n_features < 1:
        raise DataError("n_features", n_features, "must be >= 1")
    _check_generated(n_samples, noise, centers)
    # scikit-learn takes ~1.5 s to import: only when this data set is made
    from sklearn.datasets import make_blobs

    X, labels = make_blobs(n_samples=n_samples, n_features=n_features, centers=centers, cluster_std=noise,
                           random_state=seed)
    return _generated("blobs", X, labels, centers)


def csv_file(**options):
    """A user's CSV file (runner/data/csv_file.py)."""
    return load_csv(**options)


DATASETS = {
    "seed": seed_table,
    **{gate: logic_gate(gate) for gate in GATES},
    "parity": parity,
    **{name: bundled(name) for name in ("iris", "wine", "breast_cancer", "digits")},
    "moons": moons,
    "circles": circles,
    "blobs": blobs,
    "csv": csv_file,
}


def load_dataset(name, *, test_fraction=0.0, val_fraction=0.0, split_seed=0, scale="none", bias=True, **options):
    """The data set `name` built by its loader from `options`, split, scaled and with a bias column.

    `test_fraction` of the rows (stratified by class) go to X_test/y_test, drawn with
    RandomState(split_seed); `val_fraction` of the rows, taken from the other rows the same
    way but with RandomState([split_seed, 1]), go to X_val/y_val (split.validation_rows), so
    the test rows do not depend on it. `scale` is none, standard or minmax, fitted on the
    training rows alone; `bias` appends a column of ones after scaling. Raises DataError for a
    value it cannot use.
    """
    if name not in DATASETS:
        raise DataError("name", name, f"one of {', '.join(DATASETS)}")
    if scale not in SCALINGS:
        raise DataError("scale", scale, f"one of {', '.join(SCALINGS)}")
    data = DATASETS[name](**options)
    train, test = split_rows(data.y, test_fraction, split_seed)
    train, val = validation_rows(data.y, train, val_fraction, test_fraction, split_seed)
    X, X_val, X_test = scale_features(scale, data.X[train], *(data.X[rows] if len(rows) else None
                                                               for rows in (val, test)))
    if len(test):
        data.X_test, data.y_test = _with_bias(X_test, bias), data.y[test]
    if len(val):
        data.X_val, data.y_val = _with_bias(X_val, bias), data.y[val]
    data.X, data.y = _with_bias(X, bias), data.y[train]
    return data


def _with_bias(X, bias):
    return np.hstack([X, np.ones((len(X), 1))]) if bias else np.ascontiguousarray(X)

"""Data sets, the train/test split and feature scaling, checked against independent sources."""

import hashlib
import itertools

import numpy as np
import pytest
import sklearn.datasets
from conftest import ROOT
from seed_program import X as SEED_X
from seed_program import Y as SEED_Y

from runner.data.datasets import DATASETS, load_dataset
from runner.data.errors import DataError


def ones_column(n):
    return np.ones((n, 1))


def test_seed_table_is_the_seed_programs_table_exactly():
    data = load_dataset("seed")
    assert data.X.dtype == np.float64 and data.y.dtype == np.float64
    assert np.array_equal(data.X, SEED_X) and np.array_equal(data.y, SEED_Y)
    assert data.X_test is None and data.y_test is None and data.classes is None


# the truth tables, written out: inputs a, b and the target
GATE_TABLES = {
    "and": [0, 0, 0, 1],
    "or": [0, 1, 1, 1],
    "xor": [0, 1, 1, 0],
    "nand": [1, 1, 1, 0],
}


@pytest.mark.parametrize("gate", GATE_TABLES)
def test_logic_gates_are_their_truth_tables_with_a_bias_column(gate):
    data = load_dataset(gate)
    assert np.array_equal(data.X, [[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]])
    assert np.array_equal(data.y, np.array(GATE_TABLES[gate], dtype=float).reshape(4, 1))
    assert data.X.dtype == data.y.dtype == np.float64


@pytest.mark.parametrize("n_bits", [1, 3, 5])
def test_parity_has_every_input_and_its_parity(n_bits):
    data = load_dataset("parity", n_bits=n_bits)
    rows = list(itertools.product([0, 1], repeat=n_bits))
    assert data.X.shape == (2 ** n_bits, n_bits + 1)
    assert np.array_equal(data.X[:, :-1], rows) and np.array_equal(data.X[:, -1:], ones_column(2 ** n_bits))
    assert np.array_equal(data.y[:, 0], [sum(r) % 2 for r in rows])


@pytest.mark.parametrize("name, rows, features, classes", [
    ("iris", 150, 4, ["setosa", "versicolor", "virginica"]),
    ("wine", 178, 13, ["class_0", "class_1", "class_2"]),
    ("breast_cancer", 569, 30, ["malignant", "benign"]),
    ("digits", 1797, 64, [str(d) for d in range(10)]),
])
def test_bundled_data_are_sklearns_with_one_hot_targets(name, rows, features, classes):
    bunch = getattr(sklearn.datasets, f"load_{name}")()
    data = load_dataset(name)
    assert data.X.shape == (rows, features + 1) and data.y.shape == (rows, len(classes))
    assert data.X.dtype == data.y.dtype == np.float64
    assert np.array_equal(data.X[:, :-1], bunch.data) and np.array_equal(data.X[:, -1:], ones_column(rows))
    assert np.array_equal(data.y.sum(axis=1), np.ones(rows)) and np.array_equal(data.y.argmax(axis=1), bunch.target)
    assert data.classes == classes


@pytest.mark.parametrize("name, options, make", [
    ("moons", dict(n_samples=101, noise=0.3, seed=4), lambda: sklearn.datasets.make_moons(101, noise=0.3, random_state=4)),
    ("circles", dict(n_samples=80, noise=0.05, seed=2, factor=0.3),
     lambda: sklearn.datasets.make_circles(80, noise=0.05, random_state=2, factor=0.3)),
    ("blobs", dict(n_samples=90, noise=0.5, seed=3, centers=4, n_features=3),
     lambda: sklearn.datasets.make_blobs(90, n_features=3, centers=4, cluster_std=0.5, random_state=3)),
])
def test_generated_data_match_sklearns_generators(name, options, make):
    X, labels = make()
    data = load_dataset(name, **options)
    assert data.X.dtype == data.y.dtype == np.float64
    assert np.array_equal(data.X[:, :-1], X) and np.array_equal(data.y.argmax(axis=1), labels)
    assert data.classes == [str(k) for k in range(labels.max() + 1)]
    assert data.y.shape == (len(X), labels.max() + 1)


def test_generated_data_follow_their_own_seed():
    assert np.array_equal(load_dataset("moons", seed=1).X, load_dataset("moons", seed=1).X)
    assert not np.array_equal(load_dataset("moons", seed=1).X, load_dataset("moons", seed=2).X)


def test_bias_false_leaves_the_features_alone():
    assert np.array_equal(load_dataset("iris", bias=False).X, sklearn.datasets.load_iris().data)


def test_every_registered_dataset_has_a_test_here():
    tested = {"seed", *GATE_TABLES, "parity", "iris", "wine", "breast_cancer", "digits", "moons", "circles", "blobs",
              "csv"}  # csv: tests/test_csv.py
    assert set(DATASETS) == tested


# ---- the split ------------------------------------------------------------------------------------

def rows_as_set(X):
    return sorted(map(tuple, X))


@pytest.mark.parametrize("name, fraction", [("iris", 0.2), ("breast_cancer", 0.25), ("wine", 0.3), ("digits", 0.1)])
def test_split_is_stratified_and_partitions_the_rows(name, fraction):
    full = load_dataset(name)
    data = load_dataset(name, test_fraction=fraction, split_seed=5)
    counts = full.y.sum(axis=0)
    expected_test = np.floor(fraction * counts + 0.5)  # each class gives round(fraction * its rows)
    assert np.array_equal(data.y_test.sum(axis=0), expected_test)
    assert np.array_equal(data.y.sum(axis=0), counts - expected_test)
    assert len(data.X) + len(data.X_test) == len(full.X)
    # every row lands on exactly one side, with its own target
    both = np.vstack([np.hstack([data.X, data.y]), np.hstack([data.X_test, data.y_test])])
    assert rows_as_set(both) == rows_as_set(np.hstack([full.X, full.y]))


def test_split_is_reproducible_and_follows_its_seed():
    a = load_dataset("iris", test_fraction=0.2, split_seed=3)
    b = load_dataset("iris", test_fraction=0.2, split_seed=3)
    c = load_dataset("iris", test_fraction=0.2, split_seed=4)
    assert np.array_equal(a.X_test, b.X_test) and np.array_equal(a.X, b.X)
    assert not np.array_equal(a.X_test, c.X_test)


def test_split_seed_is_independent_of_the_generators_seed():
    a = load_dataset("moons", seed=1, test_fraction=0.25, split_seed=0)
    b = load_dataset("moons", seed=1, test_fraction=0.25, split_seed=9)
    assert rows_as_set(np.vstack([a.X, a.X_test])) == rows_as_set(np.vstack([b.X, b.X_test]))
    assert not np.array_equal(a.X_test, b.X_test)


def test_parity_split_is_stratified_on_its_single_target_column():
    data = load_dataset("parity", n_bits=4, test_fraction=0.25, split_seed=1)
    assert data.y_test[:, 0].sum() == 2 and len(data.y_test) == 4  # 8 odd, 8 even rows: 2 of each held out


# ---- scaling --------------------------------------------------------------------------------------

def test_standard_scaling_uses_training_statistics_only():
    raw = load_dataset("wine", test_fraction=0.3, split_seed=2, bias=False)
    scaled = load_dataset("wine", test_fraction=0.3, split_seed=2, scale="standard", bias=False)
    mean, std = raw.X.mean(axis=0), raw.X.std(axis=0)
    assert np.allclose(scaled.X, (raw.X - mean) / std)
    assert np.allclose(scaled.X_test, (raw.X_test - mean) / std)
    assert np.allclose(scaled.X.mean(axis=0), 0) and np.allclose(scaled.X.std(axis=0), 1)
    # the test rows do not centre exactly: statistics over all rows would give something else
    everything = np.vstack([raw.X, raw.X_test])
    assert not np.allclose(scaled.X_test, (raw.X_test - everything.mean(axis=0)) / everything.std(axis=0))


def test_minmax_scaling_uses_training_range_only():
    raw = load_dataset("iris", test_fraction=0.2, split_seed=1, bias=False)
    scaled = load_dataset("iris", test_fraction=0.2, split_seed=1, scale="minmax", bias=False)
    low, high = raw.X.min(axis=0), raw.X.max(axis=0)
    assert np.allclose(scaled.X, (raw.X - low) / (high - low))
    assert np.allclose(scaled.X_test, (raw.X_test - low) / (high - low))
    assert np.array_equal(scaled.X.min(axis=0), np.zeros(4)) and np.allclose(scaled.X.max(axis=0), 1)


@pytest.mark.parametrize("kind", ["standard", "minmax"])
def test_scaling_leaves_constant_columns_finite_and_the_bias_column_ones(kind):
    data = load_dataset("digits", test_fraction=0.2, scale=kind)  # digits' first pixel is always 0
    assert np.isfinite(data.X).all() and np.isfinite(data.X_test).all()
    assert np.array_equal(data.X[:, 0], np.zeros(len(data.X)))
    assert np.array_equal(data.X[:, -1], np.ones(len(data.X))) and np.array_equal(data.X_test[:, -1], np.ones(len(data.X_test)))


# ---- values the data code refuses -----------------------------------------------------------------

@pytest.mark.parametrize("name, options, key", [
    ("nope", {}, "name"),
    ("iris", dict(scale="zscore"), "scale"),
    ("iris", dict(test_fraction=1.0), "test_fraction"),
    ("iris", dict(test_fraction=-0.1), "test_fraction"),
    ("seed", dict(test_fraction=0.1), "test_fraction"),  # 2 rows per class: none held out
    ("seed", dict(test_fraction=0.9), "test_fraction"),  # every row held out
    ("parity", dict(n_bits=0), "n_bits"),
    ("parity", dict(n_bits=21), "n_bits"),
    ("moons", dict(n_samples=1), "n_samples"),
    ("moons", dict(noise=-0.1), "noise"),
    ("circles", dict(factor=1.0), "factor"),
    ("blobs", dict(centers=1), "centers"),
    ("blobs", dict(n_samples=2, centers=3), "n_samples"),
    ("blobs", dict(n_features=0), "n_features"),
])
def test_values_the_loaders_cannot_use_are_named(name, options, key):
    with pytest.raises(DataError) as raised:
        load_dataset(name, **options)
    assert raised.value.key == key and str(raised.value).startswith(f"{key}=") and "\n" not in str(raised.value)


def test_split_error_says_which_side_is_empty():
    with pytest.raises(DataError, match="leaves the test split empty"):
        load_dataset("seed", test_fraction=0.1)
    with pytest.raises(DataError, match="leaves the training split empty"):
        load_dataset("seed", test_fraction=0.9)


def test_csv_digest_is_the_file_bytes(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"a,b,c\n1,2,x\n3,4,y\n")
    data = load_dataset("csv", path=str(path))
    assert data.file_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert data.source == str(path)


@pytest.mark.parametrize("name", ["parity", "moons", "circles", "blobs", "seed"])
def test_the_loaders_own_defaults_are_the_yaml_values(name):
    """A default lives in conf/dataset/NAME.yaml; the loaders' keyword defaults (for callers outside nn-run) agree."""
    import inspect

    import yaml

    values = yaml.safe_load((ROOT / "conf" / "dataset" / f"{name}.yaml").read_text())
    loader = inspect.signature(DATASETS[name]).parameters.values()
    shared = inspect.signature(load_dataset).parameters.values() if name == "seed" else []
    checked = [p for p in [*loader, *shared] if p.default is not inspect.Parameter.empty]
    assert checked or not list(loader)
    for parameter in checked:
        assert values[parameter.name] == parameter.default, parameter.name

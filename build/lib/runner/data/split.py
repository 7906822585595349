"""Train/test split by a fraction, stratified when the targets are class indicators, seeded."""

import numpy as np

from runner.data.errors import DataError


def strata(y):
    """The group of each row to stratify by, or None for continuous targets.

    Targets that are all 0 or 1 (one-hot classes, or the logic tables' single 0/1 column) are
    discrete: each distinct target row is a group. Anything else is split without strata.
    """
    if not np.isin(y, (0.0, 1.0)).all():
        return None
    return np.unique(y, axis=0, return_inverse=True)[1].reshape(-1)


def split_rows(y, fraction, seed):
    """Row indices (train, test), each in ascending order.

    Every stratum (all rows when `strata(y)` is None) gives round(fraction * its size) randomly
    chosen rows to the test side; the rows are drawn with `np.random.RandomState(seed)`, so the
    same targets, fraction and seed always give the same split.
    """
    n_rows = len(y)
    if not 0.0 <= fraction < 1.0:
        raise DataError("test_fraction", fraction, "must be >= 0 and < 1")
    if fraction == 0.0:
        return np.arange(n_rows), np.arange(0)
    groups = strata(y)
    members = [np.arange(n_rows)] if groups is None else [np.flatnonzero(groups == g) for g in range(groups.max() + 1)]
    rng = np.random.RandomState(seed)
    test_parts = []
    for rows in members:
        size = int(np.floor(fraction * len(rows) + 0.5))
        test_parts.append(rng.permutation(rows)[:size])
    test = np.sort(np.concatenate(test_parts))
    train = np.setdiff1d(np.arange(n_rows), test)
    if len(test) == 0:
        raise DataError("test_fraction", fraction, f"leaves the test split empty ({n_rows} rows)")
    if len(train) == 0:
        raise DataError("test_fraction", fraction, f"leaves the training split empty ({n_rows} rows)")
    if groups is not None and len(np.unique(groups[train])) < len(members):
        raise DataError("test_fraction", fraction, "leaves a class with no training rows")
    return train, test

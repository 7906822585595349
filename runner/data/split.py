"""Train/test and validation splits by shares of all rows, stratified when the targets are classes, seeded."""

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


def _members(groups, rows):
    """`rows` by stratum (one part, all of them, without strata), each in ascending order."""
    if groups is None:
        return [rows]
    return [rows[groups[rows] == g] for g in range(groups.max() + 1)]


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
    members = _members(groups, np.arange(n_rows))
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


VALIDATION_STREAM = 1  # the validation rows are drawn with RandomState([split_seed, VALIDATION_STREAM])


def validation_rows(y, train, fraction, test_fraction, seed):
    """Row indices (train, validation) carved from the training rows `train` (split_rows), each ascending.

    `fraction` is a share of all rows, as test_fraction is: every stratum of `y` (strata) gives
    round(fraction * its size among all rows) of its training rows, drawn with
    RandomState([seed, VALIDATION_STREAM]), a stream apart from the test draw's, so the test rows
    are the same whatever the fraction. 0 gives no validation rows.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError("val_fraction", fraction, "must be >= 0 and < 1")
    if fraction + test_fraction >= 1.0:
        raise DataError("val_fraction", fraction, f"val_fraction + test_fraction must be < 1 "
                        f"(test_fraction is {test_fraction!r}): both are shares of all rows")
    if fraction == 0.0:
        return train, np.arange(0)
    groups = strata(y)
    all_rows = _members(groups, np.arange(len(y)))
    rng = np.random.RandomState([seed, VALIDATION_STREAM])
    val_parts = []
    for stratum, rows in zip(all_rows, _members(groups, train)):
        size = int(np.floor(fraction * len(stratum) + 0.5))
        val_parts.append(rng.permutation(rows)[:size])
    val = np.sort(np.concatenate(val_parts))
    rest = np.setdiff1d(train, val)
    if len(val) == 0:
        raise DataError("val_fraction", fraction, f"leaves the validation split empty ({len(y)} rows); "
                        "0 means no validation split")
    if len(rest) == 0:
        raise DataError("val_fraction", fraction, f"leaves the training split empty ({len(y)} rows, "
                        f"{len(train)} of them not held out for testing)")
    if groups is not None and len(np.unique(groups[rest])) < len(all_rows):
        raise DataError("val_fraction", fraction, "leaves a class with no training rows; "
                        "a smaller val_fraction or test_fraction keeps one")
    return rest, val

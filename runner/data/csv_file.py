"""A user's CSV file as a Dataset: numeric feature columns, numeric or categorical target columns."""

import csv
import hashlib
import io
import os

import numpy as np

from runner.data.dataset import Dataset, one_hot
from runner.data.errors import DataError


def load_csv(path=None, target=None, delimiter=",", header=True):
    """Read `path` (relative to the working directory) into a Dataset.

    `target` names the target column(s) (a name, a list of names; without a header the columns
    are named 0, 1, ...); None means the last column. Every other column is a feature and must be
    numeric. Numeric targets are used as they are; a non-numeric target (one column only) becomes
    one-hot columns, one per class, with the class names in sorted order.
    """
    if not path:
        raise DataError("path", path, "name the file: dataset=csv dataset.path=FILE")
    delimiter = "\t" if delimiter == "\\t" else delimiter  # a typed backslash-t means tab
    if len(delimiter) != 1:
        raise DataError("delimiter", delimiter, "must be a single character, or \\t for tab")
    full = os.path.abspath(os.path.expanduser(path))
    raw = _read_bytes(path, full)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError("path", path, f"is not UTF-8 text (byte {error.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    lines = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    if not lines:
        raise DataError("path", path, "the file is empty")
    if header:
        names = [cell.strip() for cell in lines.pop(0)[1]]
        if len(set(names)) < len(names):
            raise DataError("path", path, f"the header repeats a column name: {names}")
    else:
        names = [str(index) for index in range(len(lines[0][1]))]
    if not lines:
        raise DataError("path", path, "the file has a header but no data rows")
    for line, row in lines:
        if len(row) != len(names):
            raise DataError("path", path, f"line {line} has {len(row)} fields, expected {len(names)}")

    targets = _target_columns(target, names)
    columns = {name: [(line, row[index].strip()) for line, row in lines] for index, name in enumerate(names)}
    X = np.column_stack([_numbers(path, name, columns[name], "feature") for name in names if name not in targets])
    y, classes = _targets(path, target, targets, columns)
    return Dataset(os.path.basename(full), X, y, classes=classes, source=full,
                   file_sha256=hashlib.sha256(raw).hexdigest())


def _read_bytes(path, full):
    try:
        with open(full, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise DataError("path", path, f"no such file ({full})") from None
    except OSError as error:
        raise DataError("path", path, f"cannot be read: {error.strerror}") from None


def _target_columns(target, names):
    """The target column names in order; the last column when target is None."""
    wanted = [names[-1]] if target is None else [str(t) for t in (target if isinstance(target, list) else [target])]
    for name in wanted:
        if name not in names:
            raise DataError("target", target, f"no column {name!r}; the columns are {', '.join(names)}")
    if not wanted or len(set(wanted)) < len(wanted):
        raise DataError("target", target, "name one or more distinct columns")
    if len(wanted) == len(names):
        raise DataError("target", target, "leaves no feature column")
    return wanted


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _numbers(path, name, cells, role):
    """A column's cells as float64; a missing, non-numeric, NaN or infinite cell is a DataError."""
    try:
        values = np.array([text for _, text in cells], dtype=np.float64)
        if np.isfinite(values).all():
            return values
    except ValueError:
        pass
    # the fast conversion failed: find the first bad cell and name it
    values = np.empty(len(cells))
    for index, (line, text) in enumerate(cells):
        if not text:
            raise DataError("path", path, f"{role} column {name!r} has a missing value on line {line}")
        if not _is_number(text):
            raise DataError("path", path, f"{role} column {name!r} is not numeric: {text!r} on line {line}")
        values[index] = float(text)
        if not np.isfinite(values[index]):
            raise DataError("path", path, f"{role} column {name!r} has {text!r} on line {line}; "
                                          "only finite numbers are allowed")
    return values


def _targets(path, target, targets, columns):
    """(y, class names): numeric columns as they are, or one non-numeric column one-hot encoded."""
    categorical = [name for name in targets if not all(_is_number(text) for _, text in columns[name])]
    if not categorical:
        y = np.column_stack([_numbers(path, name, columns[name], "target") for name in targets])
        if np.isin(y, (0.0, 1.0)).all() and len(np.unique(y, axis=0)) < 2:
            raise DataError("target", target, "every row has the same 0/1 target: one class only")
        return y, None
    if len(targets) > 1:
        raise DataError("target", target, f"a non-numeric target must be the only target column "
                                          f"({categorical[0]!r} is non-numeric)")
    cells = columns[targets[0]]
    for line, text in cells:
        if not text:
            raise DataError("path", path, f"target column {targets[0]!r} has a missing value on line {line}")
    classes = sorted({text for _, text in cells})
    if len(classes) < 2:
        raise DataError("target", target, f"column {targets[0]!r} has one class only ({classes[0]!r})")
    index = {name: k for k, name in enumerate(classes)}
    return one_hot([index[text] for _, text in cells], len(classes)), classes

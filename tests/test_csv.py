"""A user's CSV file: columns, targets, delimiters, and every way a file can be unusable."""

import numpy as np
import pytest

from runner.data.datasets import load_dataset
from runner.data.errors import DataError

FLOWERS = """length,width,height,species
1.0,2.0,3.0,rose
4.0,5.0,6.5,tulip
7.0,8.0,9.0,rose
0.5,0.25,1e2,daisy
"""


def write(tmp_path, text, name="data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_header_names_columns_and_the_last_one_is_the_categorical_target(tmp_path):
    data = load_dataset("csv", path=write(tmp_path, FLOWERS), bias=False)
    assert data.X.dtype == np.float64 and data.y.dtype == np.float64
    assert np.array_equal(data.X, [[1, 2, 3], [4, 5, 6.5], [7, 8, 9], [0.5, 0.25, 100]])
    assert data.classes == ["daisy", "rose", "tulip"]  # sorted names, in target-column order
    assert np.array_equal(data.y, [[0, 1, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0]])
    assert data.name == "data.csv"


def test_named_numeric_target_and_the_rest_as_features(tmp_path):
    path = write(tmp_path, "a,b,c\n1,10,100\n2,20,200\n3,30,300\n")
    data = load_dataset("csv", path=path, target="b", bias=False)
    assert np.array_equal(data.X, [[1, 100], [2, 200], [3, 300]])  # column order kept, target removed
    assert np.array_equal(data.y, [[10], [20], [30]]) and data.classes is None


def test_several_numeric_targets_keep_their_order(tmp_path):
    path = write(tmp_path, "a,b,c,d\n1,0,1,5\n2,1,0,6\n3,1,1,7\n")
    data = load_dataset("csv", path=path, target=["c", "a"])
    assert np.array_equal(data.y, [[1, 1], [0, 2], [1, 3]])
    assert np.array_equal(data.X, [[0, 5, 1], [1, 6, 1], [1, 7, 1]])  # b, d and the bias column


def test_without_header_columns_are_numbered(tmp_path):
    path = write(tmp_path, "1;2;yes\n3;4;no\n5;6;yes\n")
    data = load_dataset("csv", path=path, header=False, delimiter=";", bias=False)
    assert np.array_equal(data.X, [[1, 2], [3, 4], [5, 6]]) and data.classes == ["no", "yes"]
    with pytest.raises(DataError, match="feature column '2' is not numeric"):  # text, and now a feature
        load_dataset("csv", path=path, header=False, delimiter=";", target=0)
    numbered = load_dataset("csv", path=write(tmp_path, "1,2,3\n4,5,6\n", "n.csv"), header=False, target=0,
                            bias=False)
    assert np.array_equal(numbered.y, [[1], [4]]) and np.array_equal(numbered.X, [[2, 3], [5, 6]])


def test_tab_delimiter_blank_lines_spaces_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "t.tsv"
    path.write_bytes("\ufeffx\ty\n 1 \t a\n\n2\tb\n".encode("utf-8"))
    data = load_dataset("csv", path=str(path), delimiter="\\t", bias=False)
    assert np.array_equal(data.X, [[1], [2]]) and data.classes == ["a", "b"]


def test_a_relative_path_means_the_working_directory(tmp_path, monkeypatch):
    write(tmp_path, FLOWERS, "rel.csv")
    monkeypatch.chdir(tmp_path)
    data = load_dataset("csv", path="rel.csv")
    assert data.source == str(tmp_path / "rel.csv") and len(data.X) == 4


def test_csv_split_is_stratified_by_the_categorical_target(tmp_path):
    lines = ["f,label"] + [f"{i},{'ab'[i % 2]}" for i in range(20)]
    data = load_dataset("csv", path=write(tmp_path, "\n".join(lines) + "\n"), test_fraction=0.3, split_seed=1)
    assert np.array_equal(data.y_test.sum(axis=0), [3, 3]) and np.array_equal(data.y.sum(axis=0), [7, 7])


def test_continuous_target_split_takes_a_plain_share_of_rows(tmp_path):
    lines = ["f,t"] + [f"{i},{i * 0.37}" for i in range(10)]
    data = load_dataset("csv", path=write(tmp_path, "\n".join(lines) + "\n"), test_fraction=0.3, split_seed=0)
    assert len(data.X_test) == 3 and len(data.X) == 7


@pytest.mark.parametrize("text, options, key, words", [
    ("", {}, "path", "the file is empty"),
    ("\n  \n", {}, "path", "the file is empty"),
    ("a,b\n", {}, "path", "no data rows"),
    ("a,b,c\n1,x,0\n2,3,1\n", {}, "path", "feature column 'b' is not numeric: 'x' on line 2"),
    ("a,b,c\n1,,0\n2,3,1\n", {}, "path", "feature column 'b' has a missing value on line 2"),
    ("a,b,c\n1,2,0\n2,nan,1\n", {}, "path", "feature column 'b' has 'nan' on line 3"),
    ("a,b,c\n1,2,0\n2,inf,1\n", {}, "path", "feature column 'b' has 'inf' on line 3"),
    ("a,b,c\n1,2,0\n2,3,NaN\n", {}, "path", "target column 'c' has 'NaN' on line 3"),
    ("a,b,c\n1,2,x\n2,3,\n", {}, "path", "target column 'c' has a missing value on line 3"),
    ("a,b,c\n1,2,0\n2,3\n", {}, "path", "line 3 has 2 fields, expected 3"),
    ("a,a,c\n1,2,0\n2,3,1\n", {}, "path", "repeats a column name"),
    ("a,b,c\n1,2,0\n2,3,1\n", dict(target="d"), "target", "no column 'd'; the columns are a, b, c"),
    ("a,b\n1,0\n2,1\n", dict(target=["a", "b"]), "target", "leaves no feature column"),
    ("a,b,c\n1,2,x\n2,3,x\n", {}, "target", "one class only ('x')"),
    ("a,b,c\n1,2,1\n2,3,1\n", {}, "target", "one class only"),
    ("a,b,c\n1,x,0\n2,y,1\n", dict(target=["b", "c"]), "target", "must be the only target column"),
    ("a,b\n1,0\n2,1\n", dict(delimiter=";;"), "delimiter", "a single character"),
])
def test_unusable_files_are_named_with_the_problem(tmp_path, text, options, key, words):
    path = write(tmp_path, text)
    with pytest.raises(DataError) as raised:
        load_dataset("csv", path=path, test_fraction=0.0, **options)
    assert raised.value.key == key and words in str(raised.value) and "\n" not in str(raised.value)


def test_missing_file_and_missing_path_are_named(tmp_path):
    with pytest.raises(DataError, match=r"path='nowhere.csv' is not allowed: no such file \(.*nowhere.csv\)"):
        load_dataset("csv", path="nowhere.csv")
    with pytest.raises(DataError, match="path=None is not allowed: name the file: dataset=csv dataset.path=FILE"):
        load_dataset("csv")
    with pytest.raises(DataError, match="path=.* cannot be read"):
        load_dataset("csv", path=str(tmp_path))


def test_non_utf8_file_is_named(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"a,b\n1,caf\xe9\n2,x\n")
    with pytest.raises(DataError, match="not UTF-8"):
        load_dataset("csv", path=str(path))

"""Per-run plots: PNG artifacts of real runs in a real store, checked against the data they show."""

import csv
from pathlib import Path

import numpy as np
import pytest
from conftest import compose_config
from oracles import forward

from runner import plots
from runner.job import load_data, run_job
from runner.tracking import record

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ["tracking.log_plots=true"]
MOONS = ["dataset=moons", "dataset.n_samples=100", "model.hidden=[8]", "train.lr=0.05", "train.iterations=600",
         "train.log_every=100"]
PRESETS = ["blobs", "breast_cancer", "circles", "digits", "iris", "moons", "wine"]


def run_with(tracking_uri, experiment, *overrides):
    overrides = [f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}", *overrides]
    return run_job(compose_config(*overrides), overrides, run_name="test-run")


def artifacts(client, run_id, tmp_path):
    """The run's artifact folder, downloaded, and the paths of its files under plots/."""
    folder = Path(client.download_artifacts(run_id, "", str(tmp_path)))
    found = sorted(str(p.relative_to(folder)) for p in (folder / record.PLOTS_DIR).glob("*")) \
        if (folder / record.PLOTS_DIR).exists() else []
    return folder, found


def png_pixels(path):
    """A PNG file's RGB pixels as an array [rows, columns, 3], after checking it is a sane, non-blank image."""
    from PIL import Image

    assert Path(path).read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(path) as image:
        image.verify()  # the chunks and their checksums
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert 300 <= width <= 2000 and 250 <= height <= 1500, image.size
        pixels = np.asarray(image.convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # axes, text, data: not a blank canvas
    return pixels


def read_prediction_rows(path, n_outputs):
    """predictions.csv-style file: (inputs, targets, predictions) as float arrays, columns found by their names."""
    with open(path, newline="") as handle:
        header, *lines = list(csv.reader(handle))
    rows = np.array([[float(v) for v in row] for row in lines])

    def columns(prefix):
        return rows[:, [j for j, name in enumerate(header) if name.startswith(prefix)]]

    predictions = columns("prediction")
    assert predictions.shape[1] == n_outputs
    return columns("x"), columns("target"), predictions


def plain_class(row):
    """The class a row of outputs or targets names: output > 0.5 for one column, else the largest."""
    return int(row[0] > 0.5) if len(row) == 1 else max(range(len(row)), key=lambda j: row[j])


def plain_confusion(targets, outputs, n_classes):
    counts = [[0] * n_classes for _ in range(n_classes)]
    for target, output in zip(targets, outputs):
        counts[plain_class(target)][plain_class(output)] += 1
    return counts


def region_colour(k):
    """The 8-bit RGB with which the decision boundary paints the region of class k: its tab10 colour, lightened."""
    from matplotlib import colormaps

    rgb = np.array(colormaps["tab10"](k)[:3])
    return np.round(255 * (1 - plots.REGION_TINT * (1 - rgb))).astype(int)


def check_decision_boundary(png, weights, data, cfg):
    """The grid's classes equal the oracle network's on an independently built grid, and the PNG shows them."""
    points = np.vstack([data.X[:, :2]] + ([data.X_test[:, :2]] if data.X_test is not None else []))
    low, high = points.min(axis=0), points.max(axis=0)
    pad = 0.15 * (high - low)
    xs, ys = (np.linspace(low[i] - pad[i], high[i] + pad[i], 150) for i in (0, 1))
    gx, gy = np.meshgrid(xs, ys)
    grid = np.column_stack([gx.ravel(), gy.ravel(), np.ones(gx.size)])
    expected = np.array([plain_class(row) for row in forward(weights, grid, cfg.model.activation,
                                                              cfg.model.output)[-1]]).reshape(gx.shape)
    drawn_xs, drawn_ys = plots.boundary_grid(points)
    assert np.allclose(drawn_xs, xs, rtol=0, atol=1e-12) and np.allclose(drawn_ys, ys, rtol=0, atol=1e-12)
    classes = plots.grid_classes(weights, drawn_xs, drawn_ys, True, cfg.model.activation, cfg.model.output)
    assert np.array_equal(classes, expected)

    # the PNG paints each grid cell in its class's colour: map every painted pixel back to its cell
    n_classes = max(2, data.y.shape[1])
    assert 0.05 < np.bincount(expected.ravel()).max() / expected.size < 0.95  # a boundary crosses the plot
    pixels = png_pixels(png).astype(int)
    painted = np.full(pixels.shape[:2], -1)
    for k in range(n_classes):
        painted[np.all(np.abs(pixels - region_colour(k)) <= 1, axis=2)] = k
    rows, columns = np.nonzero(painted >= 0)
    assert len(rows) > 0.3 * painted.size
    top, bottom, left, right = rows.min(), rows.max() + 1, columns.min(), columns.max() + 1  # the image's extent
    cell_row = len(ys) - 1 - ((rows - top) * len(ys) // (bottom - top))  # the grid's first row is drawn lowest
    cell_column = (columns - left) * len(xs) // (right - left)
    agree = painted[rows, columns] == expected[cell_row, cell_column]
    assert agree.mean() > 0.97, agree.mean()  # pixels on a cell border may take the neighbour's colour


def test_plots_are_off_by_default_and_on_in_every_dataset_preset():
    assert compose_config().tracking.log_plots is False
    assert compose_config("tracking=server").tracking.log_plots is False
    for preset in PRESETS:
        assert compose_config(f"experiment={preset}").tracking.log_plots is True, preset


def test_moons_run_logs_error_curve_decision_boundary_and_test_confusion(tracking_uri, experiment, client, tmp_path):
    result = run_with(tracking_uri, experiment, *MOONS, *PLOTS)
    folder, found = artifacts(client, result.run_id, tmp_path)
    assert found == sorted([record.CONFUSION_MATRIX_FILE, record.CONFUSION_MATRIX_PLOT,
                            record.DECISION_BOUNDARY_PLOT, record.ERROR_CURVE_PLOT])
    png_pixels(folder / record.ERROR_CURVE_PLOT)
    png_pixels(folder / record.CONFUSION_MATRIX_PLOT)

    cfg = compose_config(*MOONS)
    data = load_data(cfg.dataset)
    weights = record.read_weights(folder)
    # test_predictions.csv: the final weights' outputs on the test rows
    X_test, y_test, outputs = read_prediction_rows(folder / record.TEST_PREDICTIONS_FILE, 2)
    assert np.array_equal(X_test, data.X_test) and np.array_equal(y_test, data.y_test)
    assert np.allclose(outputs, forward(weights, data.X_test)[-1], rtol=1e-12, atol=0)

    import json

    table = json.loads((folder / record.CONFUSION_MATRIX_FILE).read_text())
    assert table["split"] == "test" and table["rows"] == len(y_test) == 20 and table["classes"] == ["0", "1"]
    assert table["counts"] == plain_confusion(y_test, outputs, 2)
    assert table["accuracy"] == client.get_run(result.run_id).data.metrics["final_test_accuracy"]
    assert table["accuracy"] > 0.75  # the counts describe a network that learned something

    check_decision_boundary(folder / record.DECISION_BOUNDARY_PLOT, weights, data, cfg)


def test_seed_table_gets_curve_and_boundary_but_no_confusion_matrix(tracking_uri, experiment, client, tmp_path):
    overrides = ["train.iterations=3000", "train.log_every=500"]
    result = run_with(tracking_uri, experiment, *overrides, *PLOTS)
    folder, found = artifacts(client, result.run_id, tmp_path)
    assert found == sorted([record.DECISION_BOUNDARY_PLOT, record.ERROR_CURVE_PLOT])  # 0/1 targets, no class names
    assert not (folder / record.TEST_PREDICTIONS_FILE).exists()
    png_pixels(folder / record.ERROR_CURVE_PLOT)
    cfg = compose_config(*overrides)
    check_decision_boundary(folder / record.DECISION_BOUNDARY_PLOT, record.read_weights(folder),
                            load_data(cfg.dataset), cfg)


def test_many_features_get_a_confusion_matrix_without_a_boundary(tracking_uri, experiment, client, tmp_path):
    result = run_with(tracking_uri, experiment, "experiment=iris", "train.iterations=200", "train.log_every=50")
    folder, found = artifacts(client, result.run_id, tmp_path)
    assert found == sorted([record.CONFUSION_MATRIX_FILE, record.CONFUSION_MATRIX_PLOT, record.ERROR_CURVE_PLOT])
    png_pixels(folder / record.CONFUSION_MATRIX_PLOT)
    import json

    table = json.loads((folder / record.CONFUSION_MATRIX_FILE).read_text())
    _, y_test, outputs = read_prediction_rows(folder / record.TEST_PREDICTIONS_FILE, 3)
    assert table["classes"] == ["setosa", "versicolor", "virginica"] and table["rows"] == 30
    assert table["counts"] == plain_confusion(y_test, outputs, 3)
    assert [sum(row) for row in table["counts"]] == [10, 10, 10]  # the stratified split holds 10 of each


def test_without_a_test_split_the_confusion_matrix_counts_the_training_rows(tracking_uri, experiment, client,
                                                                            tmp_path):
    overrides = ["dataset=blobs", "dataset.n_features=3", "dataset.test_fraction=0", "dataset.n_samples=60",
                 "model.output=softmax", "train.lr=0.02", "train.iterations=200", "train.log_every=50", *PLOTS]
    result = run_with(tracking_uri, experiment, *overrides)
    folder, found = artifacts(client, result.run_id, tmp_path)
    assert found == sorted([record.CONFUSION_MATRIX_FILE, record.CONFUSION_MATRIX_PLOT, record.ERROR_CURVE_PLOT])
    import json

    table = json.loads((folder / record.CONFUSION_MATRIX_FILE).read_text())
    X, y, _ = read_prediction_rows(folder / record.PREDICTIONS_FILE, 3)
    final_outputs = forward(record.read_weights(folder), X, "sigmoid", "softmax")[-1]
    assert table["split"] == "training" and table["rows"] == 60
    assert table["counts"] == plain_confusion(y, final_outputs, 3)
    assert table["accuracy"] == client.get_run(result.run_id).data.metrics["final_train_accuracy"]


def test_log_plots_false_logs_no_plots_but_the_test_predictions(tracking_uri, experiment, client, tmp_path):
    result = run_with(tracking_uri, experiment, *MOONS[:2], "train.iterations=20", "train.log_every=10")
    folder, found = artifacts(client, result.run_id, tmp_path)
    assert found == [] and not (folder / record.PLOTS_DIR).exists()
    assert (folder / record.TEST_PREDICTIONS_FILE).exists()


@pytest.mark.parametrize("outputs", [
    np.array([[0.2], [0.7], [0.51], [0.5], [0.9]]),  # one sigmoid output: > 0.5 is class 1
    np.array([[0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.2, 0.6], [0.3, 0.4, 0.3], [0.5, 0.1, 0.4]]),
])
def test_confusion_counts_match_a_plain_count(outputs):
    y = np.array([[0], [1], [1], [1], [0]]) if outputs.shape[1] == 1 else np.eye(3)[[1, 0, 2, 2, 1]]
    counts = plots.confusion_counts(y, outputs, max(2, outputs.shape[1]))
    assert counts.tolist() == plain_confusion(y, outputs, max(2, outputs.shape[1]))
    assert counts.sum() == 5


def test_error_curve_keeps_only_what_a_log_axis_can_show():
    steps, values = plots.log_scale_points([0, 10, 20, 30, 40], [0.5, float("nan"), 0.0, 0.01, float("inf")])
    assert (steps, values) == ([0, 30], [0.5, 0.01])

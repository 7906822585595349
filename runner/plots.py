"""A run's pictures as PNG files: the error curve, the decision boundary, the confusion matrix.

matplotlib draws them headless with its Agg renderer through the object API (no pyplot: no
global figure state, no GUI backend chosen), imported only when a picture is drawn since it
takes ~0.3 s. The network is evaluated with runner.nn.network.predict; nothing here knows MLflow.
"""

import json
import math
import os

import numpy as np

from runner.nn.metrics import predicted_classes
from runner.nn.network import predict
from runner.tracking import record

DPI = 100
GRID = 150  # grid points per axis on which the decision boundary is evaluated
MARGIN = 0.15  # share of each feature's range added on both sides of the decision-boundary plot
REGION_TINT = 0.3  # how much of its class's colour a region of the decision boundary takes (on white)
SPLIT_MARKERS = {"training": "o", "validation": "s", "test": "^"}  # decision-boundary points of each split
MAX_ANNOTATED_CLASSES = 20  # confusion matrices up to this size print their counts in the cells


def new_figure(width, height, right=0.97):
    """A Figure (width x height inches) with one Axes, rendered by Agg on savefig; pyplot is never imported.

    The margins are fixed (`right`: where the axes end, as a share of the width) rather than
    computed by a layout engine, which would double the drawing time.
    """
    from matplotlib.figure import Figure  # matplotlib (~0.4 s): only when drawing

    figure = Figure(figsize=(width, height), dpi=DPI)
    figure.subplots_adjust(left=0.8 / width, right=right, bottom=0.5 / height, top=1 - 0.35 / height)
    return figure, figure.subplots()


def plain_log_axis(axis, values):
    """Log-scale tick labels as plain numbers (0.01, 0.2); matplotlib's default, math text, costs ~0.1 s to set up.

    Powers of ten are labelled; the ticks between them too when `values` span less than a decade
    (a range that spans a decade holds a power of ten).
    """
    from matplotlib.ticker import (  # matplotlib (~0.4 s): only when drawing
        FuncFormatter,
        NullFormatter,
    )

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain if values and max(values) < 10 * min(values) else NullFormatter())


def log_scale_points(steps, values):
    """The (step, value) pairs a log axis can show: finite values > 0."""
    points = [(s, v) for s, v in zip(steps, values) if v is not None and math.isfinite(v) and v > 0]
    return [s for s, _ in points], [v for _, v in points]


MAX_CURVES = 300  # a comparison plot draws at most this many runs' curves; the others are summarised
BAND = (10, 90)  # the percentiles of every run's value at each step that a plot of more runs shades


def plot_other_curves(axes, curves, named, log=True):
    """Draw the curves of a comparison's runs after its `named` ones (coloured, drawn by the caller); returns the
    values shown.

    `curves` are [(step, value)] lists in rank order; `log`: the axis is a log scale, which shows only
    values > 0, else every finite value is shown. They are thin grey lines under one legend
    entry, drawn as one line with a gap (NaN) between two runs' curves, ~10x faster than a line
    each; when there are more than MAX_CURVES runs in all, only MAX_CURVES - `named` of them,
    evenly spread over the ranks, and every run's values are summarised at each step by their
    median (a line) and the BAND percentiles (a shaded band): thousands of lines are a grey blot,
    slow to draw.
    """
    total = named + len(curves)
    drawn = curves
    if total > MAX_CURVES:
        room = max(MAX_CURVES - named, 0)
        drawn = [curves[round(n * (len(curves) - 1) / max(room - 1, 1))] for n in range(room)] if room else []
    shown, all_steps, all_values = [], [], []
    for curve in drawn:
        steps, values = shown_points(curve, log)
        shown += values
        all_steps += [*steps, math.nan]  # a gap between two runs' curves: one line draws them all, ~10x faster
        all_values += [*values, math.nan]
    if drawn:
        label = (f"the other {len(curves)} runs" if drawn is curves
                 else f"{len(drawn)} of the other {len(curves)} runs, evenly by rank")
        axes.plot(all_steps, all_values, color="0.75", linewidth=0.5, zorder=1, label=label)
    if total > MAX_CURVES:
        steps, low, median, high = step_percentiles(curves, BAND, log)
        if len(steps):
            axes.fill_between(steps, low, high, color="tab:blue", alpha=0.3, linewidth=0, zorder=1.5,
                              label=f"{BAND[0]}-{BAND[1]}% of the other {len(curves)} runs at each step")
            axes.plot(steps, median, color="black", linewidth=1.2, linestyle="--", zorder=3,
                      label=f"median of the other {len(curves)} runs")
            shown += [*low, *high]
    return shown


def shown_points(curve, log=True):
    """(steps, values) of the [(step, value)] points of `curve` an axis can show: finite, and > 0 on a log axis."""
    if log:
        return log_scale_points(*zip(*curve)) if curve else ([], [])
    points = [(s, v) for s, v in curve if v is not None and math.isfinite(v)]
    return [s for s, _ in points], [v for _, v in points]


def step_percentiles(curves, band, log=True):
    """(steps, low, median, high): at each step some curve has a point the axis shows (shown_points), the `band`
    percentiles and the median of the curves' values there."""
    points = [point for curve in curves for point in zip(*shown_points(curve, log))]
    if not points:
        return np.array([]), np.array([]), np.array([]), np.array([])
    steps, values = np.array(points, dtype=float).T
    order = np.lexsort((values, steps))
    steps, values = steps[order], values[order]
    unique, starts = np.unique(steps, return_index=True)
    groups = np.split(values, starts[1:])
    low, median, high = (np.array([np.percentile(g, q) for g in groups]) for q in (band[0], 50, band[1]))
    return unique, low, median, high


def class_colour(k):
    """RGB of class k: matplotlib's tab10 colours, in class order."""
    from matplotlib import colormaps  # matplotlib (~0.4 s): only when drawing

    return np.array(colormaps["tab10"](k % 10)[:3])


def plot_error_curve(path, steps, errors, test_errors=None, title="", val_errors=None):
    """The error on each split given (training; validation, test if given) against the iteration, on a log scale.

    Each curve's label names its split and its metric: `training split: error`, `validation split: val_error`.
    """
    figure, axes = new_figure(6.4, 4.0)
    shown = []
    for split, metric, values in (("training", record.ERROR_METRIC, errors),
                                  ("validation", record.VAL_ERROR_METRIC, val_errors),
                                  ("test", record.TEST_ERROR_METRIC, test_errors)):
        if values is not None:
            xs, ys = log_scale_points(steps, values)
            axes.plot(xs, ys, marker=".", label=f"{split} split: {metric}")
            shown += ys
    axes.set_yscale("log")
    plain_log_axis(axes.yaxis, shown)
    axes.set_xlabel("iteration")
    axes.set_ylabel("mean |y - prediction|")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.savefig(path)


def real_features(X, bias):
    """How many columns of X are data features: all but the trailing bias column when `bias`."""
    return X.shape[1] - (1 if bias else 0)


def has_two_features(data, bias):
    """A decision boundary can be drawn: two data features and 0/1 targets (classes or a 0/1 table)."""
    targets = np.vstack([y for y in (data.y, data.y_val, data.y_test) if y is not None])
    return real_features(data.X, bias) == 2 and bool(np.isin(targets, (0.0, 1.0)).all())


def boundary_grid(points, resolution=GRID):
    """Axes of the plotted area: `resolution` values per feature over the points' range plus MARGIN each side."""
    low, high = points.min(axis=0), points.max(axis=0)
    pad = np.where(high > low, (high - low) * MARGIN, 0.5)
    return [np.linspace(lo, hi, resolution) for lo, hi in zip(low - pad, high + pad)]


def grid_classes(weights, xs, ys, bias, hidden_activation, output_activation):
    """Predicted class (metrics.predicted_classes) at every grid point: array [len(ys), len(xs)]."""
    gx, gy = np.meshgrid(xs, ys)
    columns = [gx.ravel(), gy.ravel()] + ([np.ones(gx.size)] if bias else [])
    outputs = predict(weights, np.column_stack(columns), hidden_activation, output_activation)
    return predicted_classes(outputs).reshape(gx.shape)


def class_names(data):
    """The data's class names; for 0/1 target columns without names, "0" and "1" (one column) or the column numbers."""
    if data.classes is not None:
        return data.classes
    return ["0", "1"] if data.y.shape[1] == 1 else [str(k) for k in range(data.y.shape[1])]


def plot_decision_boundary(path, weights, data, bias, hidden_activation, output_activation, title=""):
    """The class regions the network predicts over the two features, with the points of each split (its own marker)."""
    splits = [(split, X, y) for split, X, y in (("training", data.X, data.y), ("validation", data.X_val, data.y_val),
                                                  ("test", data.X_test, data.y_test)) if X is not None]
    points = np.vstack([X[:, :2] for _, X, _ in splits])
    xs, ys = boundary_grid(points)
    classes = grid_classes(weights, xs, ys, bias, hidden_activation, output_activation)
    names = class_names(data)
    palette = np.array([class_colour(k) for k in range(len(names))])
    regions = 1 - REGION_TINT * (1 - palette[classes])  # each class's colour, lightened towards white

    figure, axes = new_figure(6.4, 5.0, right=0.75)
    axes.imshow(regions, origin="lower", extent=(xs[0], xs[-1], ys[0], ys[-1]), aspect="auto",
                interpolation="nearest")
    for split, X, y in splits:
        marker = SPLIT_MARKERS[split]
        target = predicted_classes(y)
        axes.scatter(X[:, 0], X[:, 1], c=palette[target], marker=marker, s=18, edgecolors="black",
                     linewidths=0.4, label=f"{split} rows")
    from matplotlib.patches import Patch  # matplotlib (~0.4 s): only when drawing

    handles = axes.get_legend_handles_labels()[0]
    handles += [Patch(color=palette[k], label=f"class {name}") for k, name in enumerate(names[:10])]
    axes.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))
    axes.set_xlabel("x0")
    axes.set_ylabel("x1")
    axes.set_title(title)
    figure.savefig(path)


def confusion_counts(y, outputs, n_classes):
    """counts[i, j]: rows of target class i that the outputs put in class j (metrics.predicted_classes)."""
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (predicted_classes(y), predicted_classes(outputs)), 1)
    return counts


def plot_confusion_matrix(path, counts, names, title=""):
    """The counts as a heat map, target class down, predicted class across."""
    n = len(names)
    figure, axes = new_figure(max(4.0, 0.45 * n + 2.5), max(3.5, 0.45 * n + 2.0), right=0.95)
    image = axes.imshow(counts, cmap="Blues", vmin=0)
    figure.colorbar(image, ax=axes, label="rows")
    if n <= MAX_ANNOTATED_CLASSES:
        middle = counts.max() / 2
        for i in range(n):
            for j in range(n):
                axes.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize="small",
                          color="white" if counts[i, j] > middle else "black")
    axes.set_xticks(range(n), names, rotation=45 if max(map(len, names)) > 3 else 0)
    axes.set_yticks(range(n), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("target class")
    axes.set_title(title)
    figure.savefig(path)


def write_confusion(folder, weights, data, hidden_activation, output_activation):
    """confusion_matrix.json and .png for the test split when there is one, else the validation split, else the
    training rows; both say which."""
    split, X, y = next((split, X, y) for split, X, y in (("test", data.X_test, data.y_test),
                                                         ("validation", data.X_val, data.y_val),
                                                         ("training", data.X, data.y)) if X is not None)
    counts = confusion_counts(y, predict(weights, X, hidden_activation, output_activation), len(data.classes))
    table = {"split": split, "rows": len(y), "classes": data.classes, "counts": counts.tolist(),
             "accuracy": float(np.trace(counts) / len(y))}
    with open(os.path.join(folder, record.CONFUSION_MATRIX_FILE), "w") as handle:
        json.dump(table, handle, indent=1)
    plot_confusion_matrix(os.path.join(folder, record.CONFUSION_MATRIX_PLOT), counts, data.classes,
                          f"{data.name}, {split} split ({len(y)} rows): accuracy {table['accuracy']:.3f}")


def write_run_plots(folder, result, data, bias, hidden_activation, output_activation):
    """Every picture that fits the run, under folder/plots/: returns their artifact paths.

    `result` is the runner.nn.training.TrainResult, `data` the runner.data.datasets.Dataset it was trained on.
    """
    os.makedirs(os.path.join(folder, record.PLOTS_DIR), exist_ok=True)
    test_errors = [s.test_error for s in result.history] if data.X_test is not None else None
    val_errors = [s.val_error for s in result.history] if data.X_val is not None else None
    plot_error_curve(os.path.join(folder, record.ERROR_CURVE_PLOT), result.steps, result.errors, test_errors,
                     f"{data.name}: error by iteration", val_errors)
    written = [record.ERROR_CURVE_PLOT]
    if has_two_features(data, bias):
        plot_decision_boundary(os.path.join(folder, record.DECISION_BOUNDARY_PLOT), result.weights, data, bias,
                               hidden_activation, output_activation, f"{data.name}: predicted class regions")
        written.append(record.DECISION_BOUNDARY_PLOT)
    if data.classes is not None:
        write_confusion(folder, result.weights, data, hidden_activation, output_activation)
        written += [record.CONFUSION_MATRIX_PLOT, record.CONFUSION_MATRIX_FILE]
    return written

"""`nn-compare`: rank a sweep's child runs by final error and log the comparison to its parent run.

The table has one row per child: the swept keys' values, the final error, the iterations trained,
the duration and the status. Finished runs come first, lowest final error first; then every run
that did not finish or whose error is not a finite number. The parent run gets the same table as
`comparison.csv` and every child's error curve, on a log scale, as `comparison.png`.
"""

import argparse
import csv
import json
import math
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runner import record

class CompareError(Exception):
    """No sweep to compare: the message says what was looked for, and where."""


@dataclass
class Row:
    """One child run of a sweep, as the comparison shows it."""

    run_id: str
    run_name: str
    values: dict  # swept key -> the value this run used, as text
    final_error: float  # final_error, else the last error point; NaN when the run logged no error
    iterations: int | None  # the last step with an error point: train.iterations once finished
    duration_s: float | None
    status: str
    curve: list  # [(step, error)]

    @property
    def ranked_first(self):
        return self.status == "FINISHED" and math.isfinite(self.final_error)


def swept_value(run, key):
    """The value `run` used for swept key `key`: its param, else its command-line override."""
    if key in run.data.params:
        return run.data.params[key]
    for override in json.loads(run.data.tags.get(record.OVERRIDES_TAG, "[]")):
        name, _, value = override.partition("=")
        if name.lstrip("+~") == key:
            return value
    return "-"


def rank(rows):
    """Finished runs with a finite final error, lowest first; then the others, lowest error first."""
    return sorted(rows, key=lambda r: (not r.ranked_first, math.isnan(r.final_error), r.final_error))


def sweep_rows(uri, parent):
    """The ranked rows of every child of the parent run `parent`, and the swept keys."""
    from runner.tracking import child_runs, metric_history

    keys = json.loads(parent.data.tags[record.SWEPT_KEYS_TAG])
    rows = []
    for child in child_runs(uri, parent):
        curve = metric_history(uri, child.info.run_id, record.ERROR_METRIC)
        # a run that ended early has no final_error: its last point is as far as it got
        final = child.data.metrics.get(record.final_metric(record.ERROR_METRIC), curve[-1][1] if curve else math.nan)
        end, start = child.info.end_time, child.info.start_time
        rows.append(Row(child.info.run_id, child.info.run_name, {k: swept_value(child, k) for k in keys}, final,
                        curve[-1][0] if curve else None, (end - start) / 1000 if end and start else None,
                        child.info.status, curve))
    return rank(rows), keys


def find_sweep(uri, experiment, parent_run_id=None):
    """The parent run to compare: `parent_run_id`, or the latest sweep of `experiment`."""
    from mlflow.exceptions import MlflowException

    from runner.tracking_uri import redact
    from runner.tracking import get_run, latest_run_with_tag

    if uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///"):]):  # MLflow would create it
        raise CompareError(f"no MLflow store at {uri} (a relative path means the working directory)")
    if parent_run_id is None:
        parent = latest_run_with_tag(uri, experiment, record.SWEEP_ID_TAG)
        if parent is None:
            raise CompareError(f"experiment {experiment!r} at {redact(uri)} has no sweep: run `nn-run -m ...` first")
        return parent
    try:
        parent = get_run(uri, parent_run_id)
    except MlflowException:
        raise CompareError(f"no run {parent_run_id} at {redact(uri)}") from None
    if record.SWEPT_KEYS_TAG not in parent.data.tags:
        raise CompareError(f"run {parent_run_id} is not a sweep's parent run (it has no {record.SWEPT_KEYS_TAG} tag)")
    return parent


def _cells(row, keys, rank_no):
    error = f"{row.final_error:.6g}"
    duration = "-" if row.duration_s is None else f"{row.duration_s:.2f}"
    iterations = "-" if row.iterations is None else str(row.iterations)
    return [str(rank_no), *(row.values[k] for k in keys), error, iterations, duration, row.status, row.run_id]


def format_table(rows, keys):
    """The ranking as aligned plain-text columns."""
    lines = [["rank", *keys, "final_error", "iterations", "duration_s", "status", "run_id"]]
    lines += [_cells(row, keys, n) for n, row in enumerate(rows, 1)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def write_csv(path, rows, keys):
    """comparison.csv: the table with full-precision errors and run names."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "run_id", "run_name", *keys, "final_error", "iterations", "duration_s", "status"])
        for n, row in enumerate(rows, 1):
            writer.writerow([n, row.run_id, row.run_name, *(row.values[k] for k in keys), repr(row.final_error),
                             "" if row.iterations is None else row.iterations,
                             "" if row.duration_s is None else row.duration_s, row.status])


def plot_curves(path, rows, keys, title):
    """comparison.png: every child's error against iteration, log scale, labelled by its swept values."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5))
    for row in rows:
        points = [(s, e) for s, e in row.curve if math.isfinite(e) and e > 0]  # what a log axis can show
        label = ", ".join(f"{k}={row.values[k]}" for k in keys) or row.run_name
        if row.status != "FINISHED":
            label += f" ({row.status})"
        axes.plot([s for s, _ in points], [e for _, e in points], marker=".", label=label)
    axes.set_yscale("log")
    axes.set_xlabel("iteration")
    axes.set_ylabel(f"{record.ERROR_METRIC}: mean |y - prediction|")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    if rows:
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1), ncol=1 + len(rows) // 25)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def compare_sweep(uri, parent, log_to_parent=True, out=sys.stdout):
    """Print the ranking of the sweep `parent`; log comparison.csv and comparison.png to it."""
    from runner.tracking_uri import redact
    from runner.tracking import log_artifact, ui_command

    rows, keys = sweep_rows(uri, parent)
    print(f"sweep {parent.info.run_name!r} (parent run {parent.info.run_id}, {parent.info.status}): "
          f"{len(rows)} runs ranked by final {record.ERROR_METRIC}", file=out)
    print(format_table(rows, keys), file=out)
    if log_to_parent:
        with tempfile.TemporaryDirectory() as folder:
            write_csv(Path(folder, record.COMPARISON_FILE), rows, keys)
            plot_curves(Path(folder, record.COMPARISON_PLOT), rows, keys, parent.info.run_name)
            log_artifact(uri, parent.info.run_id, str(Path(folder, record.COMPARISON_FILE)))
            log_artifact(uri, parent.info.run_id, str(Path(folder, record.COMPARISON_PLOT)))
        print(f"logged {record.COMPARISON_FILE} and {record.COMPARISON_PLOT} to parent run {parent.info.run_id}",
              file=out)
    print(f"open the UI: {ui_command(redact(uri))}", file=out)
    return rows


def config_defaults():
    """tracking.uri and tracking.experiment as nn-run composes them with no overrides."""
    from hydra import compose, initialize_config_dir

    from runner.app import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="config")
    return cfg.tracking.uri, cfg.tracking.experiment


def main(argv=None):
    uri, experiment = config_defaults()
    parser = argparse.ArgumentParser(
        prog="nn-compare", description="Rank the runs of an nn-run sweep (nn-run -m) by final training error, "
        "and log the ranking (comparison.csv) and the error curves (comparison.png) to the sweep's parent run.")
    parser.add_argument("parent_run_id", nargs="?", help="the sweep's parent run (default: the latest sweep of "
                        "--experiment)")
    parser.add_argument("--tracking-uri", default=uri, help=f"MLflow tracking URI (default: {uri})")
    parser.add_argument("--experiment", default=experiment, help=f"experiment whose latest sweep is compared "
                        f"when no run id is given (default: {experiment})")
    parser.add_argument("--no-log", action="store_true", help="only print the table; log nothing to the parent run")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        parent = find_sweep(args.tracking_uri, args.experiment, args.parent_run_id)
    except CompareError as error:
        print(f"nn-compare: {error}", file=sys.stderr)
        sys.exit(2)
    compare_sweep(args.tracking_uri, parent, log_to_parent=not args.no_log)

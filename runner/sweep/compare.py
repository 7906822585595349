"""`nn-compare`: rank a sweep's child runs by its objective and log the comparison to its parent run.

The ranking metric is the sweep's objective (runner/objective.py: the parent run's `objective`
tag; `error` for a sweep that has none) or the one asked for (`--metric`). The table has one row
per child: the swept keys' values, the metric's final value, the iterations trained, the duration
and the status. Finished runs come first, best first (lowest error, highest accuracy); then the runs
a search's pruner stopped early (status `pruned@STEP`), best first; then every run that did not
finish or whose value is not a finite number. Below it, the best run's score on the test split,
when the runs have one. The parent run gets the same table as `comparison.csv`
(`comparison_METRIC.csv` for another metric than `error`) and every child's curve of the metric
as `comparison.png` (`comparison_METRIC.png`).
"""

import csv
import json
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from runner.objective import direction
from runner.plots import log_scale_points, new_figure, plain_log_axis, plot_other_curves
from runner.tracking import record, run_owner
from runner.tracking.sweep_store import log_artifact, open_sweep_store
from runner.tracking.ui import runs_page
from runner.tracking.uri import NotInStore, check_store, redact


class CompareError(Exception):
    """No sweep to compare: the message says what was looked for, and where."""


@dataclass
class Row:
    """One child run of a sweep, as the comparison shows it."""

    run_id: str
    run_name: str
    values: dict  # swept key -> the value this run used, as text
    final_error: float  # the ranking metric's final_ value, else its last point; NaN when the run logged none
    iterations: int | None  # the last step with a point: train.iterations once finished
    duration_s: float | None
    status: str
    curve: list  # [(step, value)] of the ranking metric
    test_value: float | None = None  # the final value of its test-split counterpart (reported_test_metric), if logged
    pruned_at: int | None = None  # the step a search's pruner stopped it at (tag pruned_at_step), else None

    @property
    def ranked_first(self):
        return self.status == "FINISHED" and self.pruned_at is None and math.isfinite(self.final_error)

    @property
    def shown_status(self):
        """The status column: the run's status, `pruned@STEP` for a pruned run."""
        return self.status if self.pruned_at is None else f"pruned@{self.pruned_at}"


def swept_value(run, key):
    """The value `run` used for swept key `key`: its param, else its command-line override."""
    if key in run.data.params:
        return run.data.params[key]
    for override in json.loads(run.data.tags.get(record.OVERRIDES_TAG, "[]")):
        name, _, value = override.partition("=")
        if name.lstrip("+~") == key:
            return value
    return "-"


def running_notes(runs):
    """A line for each RUNNING run: whether its process still runs on this host, is gone, or cannot be seen."""
    notes = []
    for run in runs:
        if run.info.status != "RUNNING":
            continue
        gone, owner = run_owner.owner_gone(run.data.tags), run_owner.describe_owner(run.data.tags)
        if gone:
            state = f"its process ({owner}) is gone: it will never end by itself (a sweep's end marks such runs FAILED)"
        elif gone is False:
            state = f"its process ({owner}) is running"
        else:
            state = f"its process ({owner}) is not on this host: whether it still runs cannot be seen from here"
        notes.append(f"run {run.info.run_id} ({run.info.run_name}) is RUNNING: {state}")
    return notes


def rank(rows, metric=record.ERROR_METRIC):
    """Finished runs with a finite final value, best first (direction(metric)); then the pruned ones, then the
    others, each best first."""
    sign = -1 if direction(metric) == "maximize" else 1
    group = (lambda r: 0 if r.ranked_first else 1 if r.pruned_at is not None else 2)
    return sorted(rows, key=lambda r: (group(r), math.isnan(r.final_error), sign * r.final_error))


def sweep_objective(parent):
    """The metric the sweep of parent run `parent` optimises: its objective tag; `error` before there was one."""
    return parent.data.tags.get(record.OBJECTIVE_TAG, record.ERROR_METRIC)


def reported_test_metric(metric):
    """The test split's metric shown beside the best run of a ranking by `metric`; None for a test metric."""
    if metric.startswith("test_"):
        return None
    return record.TEST_ACCURACY_METRIC if metric.endswith("_accuracy") else record.TEST_ERROR_METRIC


CHILD_TAGS = (record.OVERRIDES_TAG, record.PRUNED_AT_TAG, *run_owner.OWNER_TAGS)  # what a comparison reads of a child


def read_children(uri, parent, metric=record.ERROR_METRIC, children=None):
    """(the children of the parent run `parent`, oldest first; {run id: [(step, value)] of `metric`}).

    Of each child only what its row needs is read (its swept params, its pruned step, the final
    values of `metric` and of its test split's counterpart), unless the caller has the `children`
    already; the rest of CHILD_TAGS (the overrides, the owner) only when a child needs them: a
    swept key that is no param (a config group), a RUNNING child.
    """
    test_metric = reported_test_metric(metric)
    keys = json.loads(parent.data.tags[record.SWEPT_KEYS_TAG])
    store = open_sweep_store(uri)
    try:
        if children is None:
            finals = [record.final_metric(m) for m in (metric, test_metric) if m]
            children = store.child_runs(parent, tags=[record.PRUNED_AT_TAG], params=keys, metrics=finals)
            if any(needs_more_tags(child, keys) for child in children):
                more = {run.info.run_id: run.data.tags for run in store.child_runs(parent, tags=CHILD_TAGS,
                                                                                   params=[], metrics=[])}
                for child in children:
                    child.data.tags.update(more.get(child.info.run_id, {}))
        curves = store.metric_histories(parent, [child.info.run_id for child in children], metric)  # one query
    finally:
        store.close()
    return children, curves


def needs_more_tags(child, keys):
    """Whether the row of `child`, read with the swept `keys`' params, needs its overrides or its owner's tags too."""
    tags = child.data.tags
    return (any(key not in child.data.params for key in keys) and record.OVERRIDES_TAG not in tags) or (
        child.info.status == "RUNNING" and not any(tag in tags for tag in run_owner.OWNER_TAGS))


def sweep_rows(uri, parent, metric=record.ERROR_METRIC, children=None):
    """The rows of every child of the parent run `parent`, ranked by `metric`, and the swept keys.

    `children` are the parent's child runs when the caller has them already.
    """
    return child_rows(parent, *read_children(uri, parent, metric, children), metric)


def child_rows(parent, children, curves, metric=record.ERROR_METRIC):
    """The rows of `children` of the parent run `parent`, their `metric` `curves` read_children's, ranked by `metric`,
    and the swept keys."""
    test_metric = reported_test_metric(metric)
    keys = json.loads(parent.data.tags[record.SWEPT_KEYS_TAG])
    rows = []
    for child in children:
        curve = curves[child.info.run_id]
        # a run that ended early has no final_ value: its last point is as far as it got
        final = child.data.metrics.get(record.final_metric(metric), curve[-1][1] if curve else math.nan)
        end, start = child.info.end_time, child.info.start_time
        test_value = child.data.metrics.get(record.final_metric(test_metric)) if test_metric else None
        pruned = child.data.tags.get(record.PRUNED_AT_TAG)
        rows.append(Row(child.info.run_id, child.info.run_name, {k: swept_value(child, k) for k in keys}, final,
                        curve[-1][0] if curve else None, (end - start) / 1000 if end and start else None,
                        child.info.status, curve, test_value, None if pruned is None else int(pruned)))
    return rank(rows, metric), keys


def find_sweep(uri, experiment, parent_run_id=None):
    """The parent run to compare: `parent_run_id`, or the latest sweep of `experiment`.

    Raises CompareError, or ServerUnreachable / ServerRefused for a tracking server that does not answer or let us in.
    """
    try:
        check_store(uri, experiment)  # MLflow would create a missing store
    except NotInStore as error:
        raise CompareError(str(error)) from None
    store = open_sweep_store(uri)
    try:
        if parent_run_id is None:
            parent = store.latest_run_with_tag(experiment, record.SWEEP_ID_TAG)
        else:
            parent = store.get_run(parent_run_id)
    finally:
        store.close()
    if parent_run_id is None:
        if parent is None:
            raise CompareError(f"experiment {experiment!r} at {redact(uri)} has no sweep: run `nn-run -m ...` first")
        return parent
    if parent is None:
        raise CompareError(f"no run {parent_run_id} at {redact(uri)}")
    if record.SWEPT_KEYS_TAG not in parent.data.tags:
        raise CompareError(f"run {parent_run_id} is not a sweep's parent run (it has no {record.SWEPT_KEYS_TAG} tag)")
    return parent


def _cells(row, keys, rank_no):
    error = f"{row.final_error:.6g}"
    duration = "-" if row.duration_s is None else f"{row.duration_s:.2f}"
    iterations = "-" if row.iterations is None else str(row.iterations)
    return [str(rank_no), *(row.values[k] for k in keys), error, iterations, duration, row.shown_status, row.run_id]


def format_table(rows, keys, metric=record.ERROR_METRIC):
    """The ranking as aligned plain-text columns."""
    lines = [["rank", *keys, record.final_metric(metric), "iterations", "duration_s", "status", "run_id"]]
    lines += [_cells(row, keys, n) for n, row in enumerate(rows, 1)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def write_csv(path, rows, keys, metric=record.ERROR_METRIC):
    """comparison.csv: the table with full-precision errors and run names."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["rank", "run_id", "run_name", *keys, record.final_metric(metric), "iterations", "duration_s",
                         "status"])
        for n, row in enumerate(rows, 1):
            writer.writerow([n, row.run_id, row.run_name, *(row.values[k] for k in keys), repr(row.final_error),
                             "" if row.iterations is None else row.iterations,
                             "" if row.duration_s is None else row.duration_s, row.shown_status])


NAMED_CURVES = 10  # a bigger sweep's plot names its best runs and draws the others in grey


def plot_curves(path, rows, keys, title, metric=record.ERROR_METRIC):
    """comparison.png: every child's `metric` against iteration (an error on a log scale); returns the legend's labels.

    `rows` are ranked. Up to NAMED_CURVES runs each get a colour and a legend entry with their
    swept values; beyond that the best NAMED_CURVES do, with their rank, and the others are thin
    grey lines under one entry (a legend of hundreds of runs is unreadable and slow to draw); above
    runner.plots.MAX_CURVES runs, a few hundred of them, with the others' median and spread.
    """
    figure, axes = new_figure(9, 5.5)
    named = rows if len(rows) <= NAMED_CURVES else rows[:NAMED_CURVES]
    shown, labels = [], []
    accuracy = metric.endswith("_accuracy")
    for rank_no, row in enumerate(named, 1):
        if accuracy:  # a fraction that may be 0: a linear axis
            steps, errors = ([s for s, _ in row.curve], [v for _, v in row.curve])
        else:
            steps, errors = log_scale_points(*zip(*row.curve)) if row.curve else ([], [])
        shown += errors
        label = ", ".join(f"{k}={row.values[k]}" for k in keys) or row.run_name
        if len(named) < len(rows):
            label = f"{rank_no}. {label}"
        if row.status != "FINISHED":
            label += f" ({row.status})"
        axes.plot(steps, errors, marker=".", label=label, zorder=2)
    shown += plot_other_curves(axes, [row.curve for row in rows[len(named):]], len(named), log=not accuracy)
    if not accuracy:
        axes.set_yscale("log")
        plain_log_axis(axes.yaxis, shown)
    axes.set_xlabel("iteration")
    axes.set_ylabel(f"{metric}: {'fraction of rows classified right' if accuracy else 'mean |y - prediction|'}")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    if rows:
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # in rank order, grey last
        labels = [text.get_text() for text in axes.get_legend().get_texts()]
    figure.savefig(path, bbox_inches="tight")  # the legend sits outside the axes
    return labels


NEEDS = {"val_": "a validation split: dataset.val_fraction > 0", "test_": "a held-out split: dataset.test_fraction > 0"}


def ranking_header(parent, count, metric):
    """The line above the table: the sweep, and which metric ranks it in which order (and that it is the objective)."""
    objective = " (the sweep's objective)" if metric == sweep_objective(parent) else ""
    order = "highest" if direction(metric) == "maximize" else "lowest"
    return (f"sweep {parent.info.run_name!r} (parent run {parent.info.run_id}, {parent.info.status}): "
            f"{count} runs ranked by final {metric}{objective}, {order} first")


def best_line(rows, metric):
    """The best finished run with its score on the test split beside the ranking metric's; None without one."""
    test_metric = reported_test_metric(metric)
    best = rows[0] if rows and rows[0].ranked_first else None
    if best is None or best.test_value is None:
        return None
    named = ", ".join(f"{key}={value}" for key, value in best.values.items()) or best.run_name
    return (f"best by {metric}: run {best.run_id} ({named}): {record.final_metric(metric)} "
            f"{best.final_error:.6g}, {record.final_metric(test_metric)} {best.test_value:.6g} (the test split: "
            "reported, not used to choose)")


def compare_sweep(uri, parent, log_to_parent=True, out=sys.stdout, metric=None, children=None):
    """Print the ranking of the sweep `parent` by final `metric`; log its table and plot to the parent.

    `metric` None is the sweep's objective (sweep_objective). `children`: the parent's child runs,
    if the caller has them. Raises CompareError when no child logged the `metric` asked for (not
    `error`) and none still runs (the data has no such split); otherwise when no child has logged
    a point of the metric yet, the table and its RUNNING runs are printed and nothing is logged.
    """
    asked, metric = metric is not None, sweep_objective(parent) if metric is None else metric
    children, curves = read_children(uri, parent, metric, children)
    rows, keys = child_rows(parent, children, curves, metric)
    logged = any(row.curve for row in rows)
    running = any(row.status == "RUNNING" for row in rows)
    if asked and rows and not logged and not running and metric != record.ERROR_METRIC:
        needs = next((text for prefix, text in NEEDS.items() if metric.startswith(prefix)), "")
        classes = " and classes" if metric.endswith("_accuracy") else ""
        raise CompareError(f"--metric {metric}: no run of sweep {parent.info.run_id} logged {metric} "
                           f"(it needs {needs}{classes})")
    print(ranking_header(parent, len(rows), metric), file=out)
    print(format_table(rows, keys, metric), file=out)
    best = best_line(rows, metric)
    if best is not None:
        print(best, file=out)
    for note in running_notes([parent, *children]):
        print(note, file=out)
    if rows and not logged:  # killed before any point reached the store, or every job failed at once
        print(f"no run of sweep {parent.info.run_id} has logged {metric} yet: nothing to rank, nothing logged "
              "to the parent run", file=out)
    elif log_to_parent:
        table, plot = record.comparison_files(metric)
        with tempfile.TemporaryDirectory() as folder:
            write_csv(Path(folder, table), rows, keys, metric)
            plot_curves(Path(folder, plot), rows, keys, parent.info.run_name, metric)
            for name in (table, plot):
                log_artifact(uri, parent, str(Path(folder, name)),
                             f"log to sweep parent run {parent.info.run_id} (--no-log only prints)")
        print(f"logged {table} and {plot} to parent run {parent.info.run_id}", file=out)
    print(f"runs page: {runs_page(uri, parent.info.experiment_id)}", file=out)
    return rows

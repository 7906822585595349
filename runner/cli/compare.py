"""The `nn-compare` command: rank a sweep's runs (runner/sweep/compare.py) and log the ranking to its parent run."""

import argparse
import os
import sys

from runner import console, exit_codes
from runner.config_files import plain_tracking_defaults
from runner.sweep.compare import CompareError, compare_sweep, find_sweep
from runner.tracking import record
from runner.tracking.store_lock import StoreError
from runner.tracking.uri import ServerRefused, ServerUnreachable


def composed_tracking_defaults():
    """(tracking.uri, tracking.experiment) as Hydra composes nn-run's config (~1.5 s: only where the files need it)."""
    from runner.config import tracking_defaults  # Hydra (~1.5 s): only when the files need its composition

    return tracking_defaults()


def main(argv=None):
    uri, experiment = plain_tracking_defaults() or composed_tracking_defaults()
    parser = argparse.ArgumentParser(
        prog="nn-compare", description="Rank the runs of an nn-run sweep (nn-run -m) by the final value of its "
        "objective (sweep.objective: the validation error when the data has a validation split, else the training "
        "error) or of --metric, and log the ranking (comparison.csv) and the curves (comparison.png) to the sweep's "
        "parent run.")
    parser.add_argument("parent_run_id", nargs="?", help="the sweep's parent run (default: the latest sweep of "
                        "--experiment)")
    parser.add_argument("--tracking-uri", default=uri, help=f"MLflow tracking URI (default: {uri})")
    parser.add_argument("--experiment", default=experiment, help=f"experiment whose latest sweep is compared "
                        f"when no run id is given (default: {experiment})")
    parser.add_argument("--metric", default=None, choices=record.RANKING_METRICS,
                        help="rank by this metric's final value, errors lowest first, accuracies highest first "
                        "(default: the sweep's objective, its parent run's `objective` tag, else error; error: on "
                        "the training data, val_*: the validation split, test_*: the test split; a metric other "
                        "than error logs comparison_METRIC.csv/.png)")
    parser.add_argument("--no-log", action="store_true", help="only print the table; log nothing to the parent run")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    console.configure()  # as nn-run: the table on stdout, warnings and errors on stderr
    try:
        parent = find_sweep(args.tracking_uri, args.experiment, args.parent_run_id)
        compare_sweep(args.tracking_uri, parent, log_to_parent=not args.no_log, metric=args.metric)
    except (CompareError, StoreError, ServerUnreachable, ServerRefused) as error:
        print(f"nn-compare: {error}", file=sys.stderr)
        sys.exit(exit_codes.BAD_INPUT)

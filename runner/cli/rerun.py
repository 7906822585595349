"""The `nn-rerun` command: train a recorded run's config again and prove the result identical (runner/rerun.py).

    nn-rerun RUN_ID                        reproduce an MLflow run and compare the two records
    nn-rerun RUN_ID --override KEY=VALUE   a new run from that run's config, changed (no comparison)
    nn-rerun outputs/DATE/TIME             the same from a Hydra output folder (.hydra/config.yaml)
    nn-rerun RUN_ID --no-rebuild           train in this process as it is, even where its numerics differ
    nn-rerun PARENT_RUN_ID                 rerun every child of a sweep and compare each (runner/sweep/rerun.py)

Progress and the verdict go to stdout, errors to stderr (runner/console.py). Exit 0: reproduced (or a
derived/uncompared run was made; of a sweep: every child reproduced); 1: not reproduced, or training
diverged (one line on stderr, the new run FAILED); 2: bad input, with one line on stderr and no new run.
"""

import argparse
import gc
import signal
import sys

from runner import console, exit_codes
from runner.config import ConfigError, tracking_defaults
from runner.nn.training import DivergenceError
from runner.rerun import RerunError, rerun
from runner.sweep.rerun import rerun_sweep, run_part, sweep_parent
from runner.tracking.store_lock import StoreError
from runner.tracking.uri import ServerRefused, ServerUnreachable


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="nn-rerun", description="Train a recorded nn-run run again: "
                                     "reproduce it exactly, or start from its config with overrides.")
    parser.add_argument("source", help="an MLflow run id, or a Hydra output folder (outputs/DATE/TIME)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: nn-run's tracking.uri; for an output folder, its config's)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="Hydra-style override of the source's config (repeatable); makes a new "
                        "run linked by the derived_from tag instead of a reproduction")
    parser.add_argument("--no-rebuild", action="store_true",
                        help="train in this process even when the source recorded another BLAS kernel, other "
                        "NumPy SIMD loops or other OPENBLAS_*/NPY_*/OMP_*/MKL_* values (default: rebuild "
                        "them in a child process)")
    parser.add_argument("--sweep-part", default=None, help=argparse.SUPPRESS)  # a rebuilt group of a sweep's rerun
    return parser.parse_args(argv)


def nn_rerun(argv=None):
    """nn-rerun with these arguments; returns the exit code."""
    # stored_run imports MLflow (~1.5 s): not before the arguments are read (`nn-rerun --help` stays quick)
    from runner.tracking.stored_run import NotInStore

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    console.configure()  # its lines look as nn-run's: plain on stdout, warnings and errors on stderr
    try:
        uri = args.tracking_uri or tracking_defaults()[0]
        if args.sweep_part:
            return run_part(args.source, uri, args.sweep_part)
        parent = sweep_parent(args.source, uri)
        if parent is not None:
            if args.override:
                raise RerunError(f"--override {' '.join(args.override)}: not allowed for a sweep's parent run "
                                 f"{args.source} (its rerun reproduces each child); use it on one child's run id")
            return rerun_sweep(parent, uri, rebuild=not args.no_rebuild)
        return rerun(args.source, args.tracking_uri, args.override, argv=None if args.no_rebuild else argv)
    except (RerunError, NotInStore, ConfigError, ServerUnreachable, ServerRefused, StoreError) as error:
        print(f"nn-rerun: {error}", file=sys.stderr)
        return exit_codes.BAD_INPUT
    except DivergenceError as error:  # as nn-run: the new run is already marked FAILED with this reason
        print(f"nn-rerun: {error}", file=sys.stderr)
        return exit_codes.FAILED


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (a batch system's stop) ends the new runs KILLED, as Ctrl-C does


def main():
    """Entry point of the `nn-rerun` console script."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = nn_rerun()
    except KeyboardInterrupt:
        print("nn-rerun: interrupted; the new run is marked KILLED with the metrics logged so far", file=sys.stderr)
        return exit_codes.INTERRUPTED
    gc.freeze()  # as nn-run: skip the interpreter's final collection over mlflow's objects
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The `nn-run` command: a Hydra app over conf/config.yaml that runs one job per config."""

import gc
import os
import signal
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.types import RunMode
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from runner import exit_codes
from runner.config import CONFIG_DIR, PRIMARY_CONFIG, ConfigError, unknown_key_message
from runner.hydra_private import command_line
from runner.job import run_job
from runner.nn.training import DivergenceError
from runner.output_folders import remove_made
from runner.progress import wanted
from runner.resume import ResumeError, resume_arguments
from runner.sweep.callback import end_after_error, job_context, note_interrupted
from runner.sweep.optuna_settings import SWEEPER_TARGET
from runner.sweep.pruning import trial_reporter
from runner.tracking.record import HYDRA_OUTPUT_DIR_TAG, TRIAL_NUMBER_TAG
from runner.tracking.store_lock import StoreError
from runner.tracking.uri import ServerRefused, ServerUnreachable

FULL_ERROR = "HYDRA_FULL_ERROR"  # set: Hydra lets an error through instead of printing its traceback


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name=PRIMARY_CONFIG)
def hydra_main(cfg):
    """Hand the composed config to run_job and return the final value of its objective (what sweepers optimise:
    sweep.objective, runner/objective.py).

    A single run ends with one line: exit 2 for a bad value or a tracking server that does not
    answer, 1 for divergence. In a sweep (`-m`) these fail only their own job (Hydra records it)
    and the other jobs go on. A single run in a terminal draws a progress bar.
    """
    return run_task(cfg)


def run_task(cfg, **job_options):
    """The body of nn-run's task function; `job_options` go to run_job (the batched launcher's `trained`)."""
    hydra_cfg = HydraConfig.get()
    sweep = job_context()  # None for a single run
    in_sweep = {"parent_run_id": sweep.parent_run_id, "experiment_id": sweep.experiment_id} if sweep else {}
    progress = wanted(sys.stderr, multirun=sweep is not None)
    output_dir = hydra_cfg.runtime.output_dir
    try:
        if sweep is None:
            refuse_unswept(hydra_cfg)
        tags = {HYDRA_OUTPUT_DIR_TAG: output_dir, **search_tags(hydra_cfg)}
        result = run_job(cfg, hydra_cfg.overrides.task, hydra_cfg.job.override_dirname or cfg.dataset.name,
                         progress=progress, **in_sweep, extra_tags=tags, output_dir=output_dir,
                         should_stop=trial_reporter(cfg, hydra_cfg), **job_options)
    # a diverged run is already FAILED
    except (ConfigError, ServerUnreachable, ServerRefused, StoreError, DivergenceError) as error:
        if sweep is not None:
            raise
        if not isinstance(error, DivergenceError):  # refused before any run: no folder left behind either
            remove_made(output_dir)
        print(f"nn-run: {error}", file=sys.stderr)
        sys.exit(exit_codes.FAILED if isinstance(error, DivergenceError) else exit_codes.BAD_INPUT)
    return result.objective_value


def search_tags(hydra_cfg):
    """The tags of a trial of nn_optuna's search on its child run: its trial number (the job's number)."""
    if hydra_cfg.mode != RunMode.MULTIRUN or hydra_cfg.sweeper.get("_target_") != SWEEPER_TARGET:
        return {}
    return {TRIAL_NUMBER_TAG: str(hydra_cfg.job.num)}


def refuse_unswept(hydra_cfg):
    """ConfigError for a sweep's config run without -m (`nn-run experiment=lr_sweep`) that leaves a swept key
    without a value of its own: it is a sweep. One job of it, every swept key given (`train.lr=0.3`), runs."""
    swept = list(hydra_cfg.sweeper.get("params") or {})
    given = {override.partition("=")[0].lstrip("+~") for override in hydra_cfg.overrides.task}
    unset = [key for key in swept if key not in given]
    if not unset:
        return
    preset = hydra_cfg.runtime.choices.get("experiment")
    what = f"experiment={preset} is a sweep" if preset else "this config is a sweep"
    raise ConfigError(f"{what} (hydra.sweeper.params sweeps {', '.join(swept)}): run it with "
                      f"`nn-run -m {' '.join(sys.argv[1:])}`, or set {', '.join(unset)} to one value"
                      f"{' each' if len(unset) > 1 else ''} to run one job")


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (`kill`, a cluster scheduler's time limit) ends a run as Ctrl-C does


def resume(argv):
    """`nn-run resume RUN_ID [--tracking-uri URI]`: the overrides that continue the run, or exit 2 with one line."""
    # stored_run imports MLflow (~1.5 s): only for this subcommand
    from runner.tracking.stored_run import NotInStore

    if len(argv) not in (1, 3) or (len(argv) == 3 and argv[1] != "--tracking-uri"):
        print("usage: nn-run resume RUN_ID [--tracking-uri URI]", file=sys.stderr)
        sys.exit(exit_codes.BAD_INPUT)
    try:
        return resume_arguments(argv[0], argv[2] if len(argv) == 3 else None)
    except (ResumeError, NotInStore, StoreError, ServerUnreachable, ServerRefused) as error:
        print(f"nn-run: {error}", file=sys.stderr)
        sys.exit(exit_codes.BAD_INPUT)


def refuse_mixed_modes(argv):
    """Exit 2 with one line when the command line asks Hydra for two things at once (`-m ... --cfg job`)."""
    args = command_line(argv)
    modes = [flag for flag, given in (("-m", args.multirun), ("--cfg", args.cfg is not None),
                                      ("--info", args.info is not None), ("--shell-completion", args.shell_completion),
                                      ("--run", args.run)) if given]
    if len(modes) > 1:
        print(f"nn-run: {' and '.join(modes)} cannot go together: each is a way to run nn-run (-m: a sweep; --cfg: "
              "show the config of one job, without running it; --info: Hydra's information); give one",
              file=sys.stderr)
        sys.exit(exit_codes.BAD_INPUT)
    if args.resolve and args.cfg is None and not args.help:
        print("nn-run: --resolve goes with --cfg (or --help): `nn-run --cfg job --resolve`", file=sys.stderr)
        sys.exit(exit_codes.BAD_INPUT)


def main():
    if sys.argv[1:2] == ["resume"]:
        sys.argv[1:] = resume(sys.argv[2:])
    refuse_mixed_modes(sys.argv[1:])
    signal.signal(signal.SIGTERM, _interrupt)
    # Hydra would print a traceback for any error that reaches it; nn-run reports errors itself (below)
    hydra_reports = bool(os.environ.get(FULL_ERROR))  # the user asked for Hydra's full traceback
    os.environ[FULL_ERROR] = "1"
    try:
        hydra_main()
    except KeyboardInterrupt:
        note_interrupted()
        print("nn-run: interrupted; the run is marked KILLED with the metrics logged so far", file=sys.stderr)
        sys.exit(exit_codes.INTERRUPTED)
    except CompactHydraException as error:  # a config that does not compose: Hydra's own one or two lines
        if hydra_reports:
            raise
        cause = error.__cause__
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(cause, "full_key", None):
            # a key no schema has, set without + (train.lrr=0.5): as nn-run says it of +train.lrr=0.5
            print(f"nn-run: {unknown_key_message(cause.full_key)}", file=sys.stderr)
        else:
            print(error, file=sys.stderr)
            if isinstance(cause, OmegaConfBaseException):
                print(cause, file=sys.stderr)
        sys.exit(exit_codes.BAD_INPUT)
    except Exception as error:
        lost = end_after_error(error)
        if lost is None or hydra_reports:  # not a sweep that a job or a launcher stopped: a bug, shown whole
            raise
        for line in lost:
            print(f"nn-run: {line}", file=sys.stderr)
        print(f"nn-run: the sweep stopped: {_first_line(error)}", file=sys.stderr)
        sys.exit(exit_codes.FAILED)
    finally:
        if not hydra_reports:
            os.environ.pop(FULL_ERROR, None)
    # Leave mlflow's large object graph to the OS: the interpreter's final garbage collection
    # over it costs about half a second at exit, and everything was flushed and closed above.
    gc.freeze()


def _first_line(error):
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"

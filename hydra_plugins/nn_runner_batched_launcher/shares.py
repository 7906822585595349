"""One share of a batched launch: train its part of every batch, then run each of its jobs through Hydra's run_job.

A share runs in the sweep's process, in a forked worker (forked_jobs.py) or as a submitit job
(submitted.py), and there possibly twice: a Slurm job preempted or at its time limit is requeued
by submitit and runs its share again. So before training, a job whose folder holds a checkpoint
note of its config (runner/checkpoint.py) leaves its batch: a FINISHED one is kept as it is, a
stopped one resumes its run (nn-run's task function does both, as in a continued sweep). The
others train again from their initial weights: training is deterministic, the bits are the same.

While the jobs run, submitit's preemption signal (SIGUSR2) is held until the job being logged
has ended (HeldSignal), so that a requeue never leaves a batched child half logged.
"""

import logging
import signal
import threading
from dataclasses import dataclass
from pathlib import Path

from hydra.core.utils import configure_log, filter_overrides, run_job
from omegaconf import open_dict

log = logging.getLogger(__name__)


@dataclass
class Sweep:
    """What every share of one launch needs (picklable: submitit sends it to its jobs)."""

    hydra_context: object  # hydra.types.HydraContext
    task_function: object
    config: object  # the sweep's config, as Hydra hands it to the launcher
    job_overrides: list  # each job's overrides, by position in this launch
    initial_job_idx: int
    batched: bool  # the task function is nn-run's: jobs that can train together are batched

    def job_config(self, composed, position):
        """A composed job config with Hydra's job id and number set, as Hydra's launchers set them."""
        with open_dict(composed):
            composed.hydra.job.id = composed.hydra.job.num = self.initial_job_idx + position
        return composed


class HeldSignal:
    """Holds SIGUSR2 while jobs run, when someone handles it (submitit: preemption or time limit).

    The signal is noted, and handed to its handler by `hand_over()` between two jobs. A job that
    trains alone takes it on itself (its Checkpointer saves, then hands it here and ends its run
    KILLED), so the share stops with that job's checkpoint in its folder; one that came while that
    job was recorded is handed here when the recording is done (runner.checkpoint.Checkpointer.release).
    """

    notes_only = True  # the handler (this object) only notes the signal: see Checkpointer.release

    def __init__(self):
        self.previous, self.pending = None, False

    def __enter__(self):
        handler = signal.getsignal(signal.SIGUSR2)
        if callable(handler) and threading.current_thread() is threading.main_thread():
            self.previous = handler
            signal.signal(signal.SIGUSR2, self)
        return self

    def __exit__(self, *exc):
        self._restore()
        return False

    def __call__(self, signum, frame):
        self.pending = True

    def _restore(self):
        if self.previous is not None:
            signal.signal(signal.SIGUSR2, self.previous)

    def hand_over(self):
        """If the signal came, hand it to its handler now (submitit checkpoints this share, requeues it, exits)."""
        if not self.pending:
            return
        handler, self.previous, self.pending = self.previous, None, False
        signal.signal(signal.SIGUSR2, handler)
        handler(signal.SIGUSR2, None)
        raise KeyboardInterrupt  # a handler that did not end the share: stop as Ctrl-C does


def begun(config):
    """Whether the folder of the job `config` (with its hydra node) holds a checkpoint note of this config."""
    # only nn-run's batched jobs get here: runner's modules are loaded already
    from runner.checkpoint import config_sha256, read_meta

    folder = Path(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir))
    meta = read_meta(folder)
    return meta is not None and meta.get("config_sha256") == config_sha256(config)


def run_share(sweep, share, configs, emit):
    """Run `share` ((batch parts, job positions) from runner.sweep.batches.share_out) of `sweep`.

    Each job's JobReturn is passed to `emit` as soon as the job has run. `configs` maps each
    position to its composed job config, or to None for a job whose config is composed when its
    turn comes (as the basic launcher composes it).
    """
    parts, positions = share
    if parts:
        fresh = {p for part in parts for p in part if not begun(configs[p])}
        parts = [[p for p in part if p in fresh] for part in parts]
    trained, shared = _train([part for part in parts if part], configs)
    try:
        with HeldSignal() as held:
            for position in positions:
                try:
                    emit(_run_one(sweep, position, configs[position], trained.pop(position, None)))
                except KeyboardInterrupt:
                    held.hand_over()  # a job that trained alone stopped on the held signal: hand it on
                    raise
                held.hand_over()
    finally:
        _release(shared)


def _run_one(sweep, position, config, done):
    """Run job `position` through Hydra's run_job: nn-run's task logs `done` (runner.job.Trained) if given."""
    idx, overrides = sweep.initial_job_idx + position, sweep.job_overrides[position]
    log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}{' (batched)' if done is not None else ''}")
    if config is None:  # composed now, as the basic launcher composes a job's config
        config = sweep.job_config(sweep.hydra_context.config_loader.load_sweep_config(sweep.config, list(overrides)),
                                  position)
    returned = run_job(hydra_context=sweep.hydra_context, config=config,
                       task_function=sweep.task_function if done is None else _logging_task(done),
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    configure_log(sweep.config.hydra.hydra_logging, sweep.config.hydra.verbose)  # after a job, as the basic launcher
    return returned


def _train(parts, configs):
    """Train each batch part of a share: ({job position: runner.job.Trained or None}, [each part's shared dict])."""
    trained, shared = {}, []
    if not parts:
        return trained, shared
    # only a share with a batch part trains here (an nn-run sweep): numpy's training code is imported then
    from runner.sweep.batches import train_batch

    for part in parts:
        results = train_batch([configs[p] for p in part])
        trained.update(zip(part, results))
        logged = [result for result in results if result is not None]
        if logged:
            shared.append(logged[0].shared)  # one dict for the whole part
    return trained, shared


def _release(shared):
    """Free what the jobs of each trained batch part shared, once they have run (runner.job.release_batch)."""
    if not shared:
        return
    # present only after training a batch part (an nn-run sweep): see _train
    from runner.job import release_batch

    for batch in shared:
        release_batch(batch)


def _logging_task(trained):
    """A task function that records `trained` (a runner.job.Trained) as the job's run, as nn-run's would."""
    # only for nn-run's own jobs, whose module is loaded already
    from runner.cli.run import run_task

    def log_trained(cfg):
        return run_task(cfg, trained=trained)

    return log_trained

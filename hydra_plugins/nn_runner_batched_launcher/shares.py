"""One share of a batched launch: train its part of every batch, then run each of its jobs through Hydra's run_job.

A share runs in the sweep's process, in a forked worker (forked_jobs.py) or as a submitit job
(submitted.py), and there possibly twice: a Slurm job preempted or at its time limit is requeued
by submitit and runs its share again. So before training, a job whose folder holds a checkpoint
note of its config (runner/checkpoint.py) leaves its batch: a FINISHED one is kept as it is, a
stopped one resumes its run (nn-run's task function does both, as in a continued sweep). The
others train again from their initial weights: training is deterministic, the bits are the same.

While the jobs run, submitit's preemption signal (SIGUSR2) is held until the job being logged
has ended (runner.held_signal.HeldSignal), so that a requeue never leaves a batched child half logged.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job
from omegaconf import open_dict

from runner.held_signal import HeldSignal

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


def begun(config):
    """Whether the folder of the job `config` (with its hydra node) holds a checkpoint note of this config."""
    # only nn-run's batched jobs get here: runner's modules are loaded already
    from runner.checkpoint import config_sha256, read_meta

    folder = Path(str(config.hydra.sweep.dir), str(config.hydra.sweep.subdir))
    meta = read_meta(folder)
    return meta is not None and meta.get("config_sha256") == config_sha256(config)


def run_share(sweep, share, compose, emit):
    """Run `share` ((batch parts, job positions) from runner.sweep.batches.share_out) of `sweep`.

    Each job's JobReturn is passed to `emit` as soon as the job has run. `compose` is the config
    loader's load_sweep_config to compose each job's config with (None: the config loader's own, as
    the basic launcher composes a job's config when its turn comes). The jobs run in order; a batch
    part trains when the turn of its first job comes, and what its jobs hold (their configs, the
    trained networks, what they share) is let go as each has run: a share holds one part's at a time.
    """
    parts, positions = share
    part_of = {p: n for n, part in enumerate(parts) for p in part}
    left = [len(part) for part in parts]  # jobs of each part not yet run
    configs, trained, shared = {}, {}, {}  # of the parts trained so far: by job position, and by part
    try:
        with HeldSignal() as held:
            for position in positions:
                n = part_of.get(position)
                if n is not None and n not in shared:
                    configs.update((p, job_config(sweep, compose, p)) for p in parts[n])
                    trained_part, shared[n] = _train(parts[n], configs)
                    trained.update(trained_part)
                config = configs.pop(position, None)
                if config is None:  # a lone job, or one of a part that left its batch
                    config = job_config(sweep, compose, position)
                try:
                    emit(_run_one(sweep, position, config, trained.pop(position, None)))
                except KeyboardInterrupt:
                    held.hand_over()  # a job that trained alone stopped on the held signal: hand it on
                    raise
                held.hand_over()
                if n is not None:
                    left[n] -= 1
                    if not left[n]:
                        _release(shared.pop(n))
    finally:
        for batch in shared.values():
            _release(batch)


def job_config(sweep, compose, position):
    """The config of job `position` of `sweep`, composed by `compose` (None: the config loader's load_sweep_config)."""
    compose = compose or sweep.hydra_context.config_loader.load_sweep_config
    return sweep.job_config(compose(master_config=sweep.config, sweep_overrides=list(sweep.job_overrides[position])),
                            position)


def _run_one(sweep, position, config, done):
    """Run job `position` through Hydra's run_job: nn-run's task logs `done` (runner.job.Trained) if given.

    An nn-run sweep's JobReturn comes back without the job's configs (slim_return).
    """
    idx, overrides = sweep.initial_job_idx + position, sweep.job_overrides[position]
    log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}{' (batched)' if done is not None else ''}")
    returned = run_job(hydra_context=sweep.hydra_context, config=config,
                       task_function=sweep.task_function if done is None else _logging_task(done),
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    configure_log(sweep.config.hydra.hydra_logging, sweep.config.hydra.verbose)  # after a job, as the basic launcher
    return slim_return(returned) if sweep.batched else returned


def slim_return(returned):
    """A JobReturn without the job's composed configs (cfg, hydra_cfg: ~110 KB of Python objects a job).

    The sweep's process keeps every JobReturn until the sweep ends (Hydra's sweepers return them
    all). What is left is what a sweeper reads: the status and return value (or the job's
    error), the overrides, the job's folder and name. The job's callbacks (on_job_end) and its
    `.hydra/` files had the full configs; the job's run in MLflow holds its whole config.
    """
    return JobReturn(overrides=returned.overrides, working_dir=returned.working_dir, task_name=returned.task_name,
                     status=returned.status, _return_value=returned._return_value)


def _train(part, configs):
    """Train a batch part of a share: ({job position: runner.job.Trained or None}, the part's shared dict or None).

    A job whose folder holds a checkpoint note of its config (begun) is left out: it runs on its own.
    """
    fresh = [p for p in part if not begun(configs[p])]
    if not fresh:
        return {}, None
    # only a share with a batch part trains here (an nn-run sweep): numpy's training code is imported then
    from runner.sweep.batches import train_batch

    results = train_batch([configs[p] for p in fresh])
    logged = [result for result in results if result is not None]
    return dict(zip(fresh, results)), (logged[0].shared if logged else None)  # one dict for the whole part


def _release(shared):
    """Free what the jobs of a trained batch part shared, once they have run (runner.job.release_batch)."""
    if shared is None:
        return
    # present only after training a batch part (an nn-run sweep): see _train
    from runner.job import release_batch

    release_batch(shared)


def _logging_task(trained):
    """A task function that records `trained` (a runner.job.Trained) as the job's run, as nn-run's would."""
    # only for nn-run's own jobs, whose module is loaded already
    from runner.cli.run import run_task

    def log_trained(cfg):
        return run_task(cfg, trained=trained)

    return log_trained

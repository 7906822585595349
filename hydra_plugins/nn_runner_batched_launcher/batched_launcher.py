"""A Hydra launcher that trains the jobs of a sweep that share a network shape in one NumPy computation.

Every job's config is the one Hydra composes (or derived from a composed one, derived_configs.py);
runner/sweep/batches.py groups the jobs that differ only in `seed` and `train.lr` and trains each
group at once (runner/nn/stacked.py).
Then every job, in order, goes through Hydra's own `run_job`, so its output folder, `.hydra/`
files, callbacks (the sweep's MLflow parent run, runner/sweep/callback.py) and JobReturn are those of any
launcher: a batched job's task function logs its precomputed result as the job's run, any other
job (a group of one, mini-batches, a rejected config, a network that diverged) runs nn-run's
task function as usual. The jobs run in `n_jobs` processes forked from the sweep's process
(forked_jobs.py); each trains its share of every batch, then runs its jobs in order. With
n_jobs=1 they run in this process, one after the other, as with the basic launcher.

Only nn-run's own task function has its jobs batched (batching hands a job's precomputed result to
nn-run's task function in place of the app's). The jobs of any other app run as Hydra's basic
launcher runs them, in the same workers: each config composed by Hydra's config loader when its
job's turn comes, the app's task function run through `run_job`, Hydra's logging set again after
each job. Nothing of nn-run's training or tracking (MLflow) is imported for them.
"""

import logging
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.utils import configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf, open_dict

from hydra_plugins.nn_runner_batched_launcher.derived_configs import DerivedConfigs
from hydra_plugins.nn_runner_batched_launcher.forked_jobs import (
    run_in_workers,
    workers_for,
)

log = logging.getLogger(__name__)


@dataclass
class BatchedLauncherConf:
    """hydra/launcher=batched; every key is documented in the README (Batched sweeps)."""

    _target_: str = "hydra_plugins.nn_runner_batched_launcher.batched_launcher.BatchedLauncher"
    max_batch: int = 1024  # most networks trained in one computation; a larger group is cut into batches
    n_jobs: int = -1  # processes that run the jobs (log the trained networks, train the others); -1: one per CPU


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf,
                             provider="nn_runner_batched_launcher")


class BatchedLauncher(Launcher):
    def __init__(self, max_batch=1024, n_jobs=-1):
        super().__init__()
        if max_batch < 1:
            raise ValueError(f"hydra.launcher.max_batch={max_batch} is not allowed: must be >= 1")
        if n_jobs < 1 and n_jobs != -1:
            raise ValueError(f"hydra.launcher.n_jobs={n_jobs} is not allowed: must be >= 1, or -1 for one per CPU")
        self.max_batch, self.n_jobs = max_batch, n_jobs
        self.config = self.task_function = self.hydra_context = self.composed = None

    def setup(self, *, hydra_context, task_function, config):
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        # another app's configs are Hydra's own, composed when their job runs (as the basic launcher does)
        self.composed = ComposedConfigs(hydra_context.config_loader) if is_nn_run(task_function) else None

    def launch(self, job_overrides, initial_job_idx):
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        count = len(job_overrides)
        if self.composed is None:
            log.info(f"Launching {count} jobs, none batched: the task function is not nn-run's")
            configs, task_configs, batches = [None] * count, None, []
            workers = workers_for(self.n_jobs, count)
            shares, after_fork = _in_turns(count, workers), None
        else:
            # nn-run's sweep modules import numpy's training code and MLflow: only an nn-run sweep needs them
            from runner.sweep.batches import plan_batches, share_out
            from runner.tracking.client import forget_inherited_connections

            log.info(f"Launching {count} jobs, batched")
            configs = [self._job_config(self.composed.take(self.config, list(overrides)), idx)
                       for idx, overrides in enumerate(job_overrides, start=initial_job_idx)]
            task_configs = [_without_hydra(cfg) for cfg in configs]
            batches = plan_batches(task_configs, self.max_batch)
            for batch in batches:
                log.info(f"Training {len(batch)} networks together: jobs "
                         f"#{', #'.join(str(initial_job_idx + p) for p in batch)}")
            workers = workers_for(self.n_jobs, count)
            shares, after_fork = share_out(batches, count, workers), forget_inherited_connections
        if workers > 1:
            log.info(f"Running the jobs in {workers} processes"
                     f"{'' if self.composed is None else ', each training its share of every batch'}")

        def run_share(share):
            """Train this share's part of every batch, then run its jobs through Hydra's run_job, in order."""
            parts, positions = share
            trained, shared = _train(parts, task_configs)
            runs = []
            try:
                for position in positions:
                    idx = initial_job_idx + position
                    done = trained.pop(position, None)
                    log.info(f"\t#{idx} : {' '.join(filter_overrides(job_overrides[position]))}"
                             f"{' (batched)' if done is not None else ''}")
                    config = configs[position]
                    if config is None:  # composed now, as the basic launcher composes a job's config
                        loader = self.hydra_context.config_loader
                        config = self._job_config(loader.load_sweep_config(self.config, list(job_overrides[position])),
                                                  idx)
                    runs.append(run_job(hydra_context=self.hydra_context, config=config,
                                        task_function=self.task_function if done is None else _logging_task(done),
                                        job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
                    configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)  # after a job, as basic
            finally:
                _release(shared)
            return runs

        done = run_in_workers([partial(run_share, share) for share in shares], after_fork=after_fork)
        by_position = dict(zip((p for _, positions in shares for p in positions), (r for runs in done for r in runs)))
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [by_position[p] for p in range(count)]

    @staticmethod
    def _job_config(sweep_config, idx):
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
        return sweep_config


def is_nn_run(task_function):
    """Whether `task_function` is nn-run's own (runner/cli/run.py), the only one whose jobs can be batched.

    Hydra hands launchers the function under `@hydra.main`, which the decorated one wraps. When
    nn-run's module is not loaded, the task cannot be nn-run's (and nothing of nn-run is imported).
    """
    module = sys.modules.get("runner.cli.run")
    main = getattr(module, "hydra_main", None)
    return main is not None and task_function is getattr(main, "__wrapped__", main)


def _in_turns(count, workers):
    """Jobs 0..count-1 dealt in turns among `workers` processes, as runner.sweep.batches.share_out deals lone jobs."""
    return [([], list(range(worker, count, workers))) for worker in range(min(workers, count))]


def _train(parts, task_configs):
    """Train each batch part of a share: ({job position: runner.job.Trained or None}, [each part's shared dict])."""
    trained, shared = {}, []
    if not parts:
        return trained, shared
    # only a share with a batch part trains here (an nn-run sweep): numpy's training code is imported then
    from runner.sweep.batches import train_batch

    for part in parts:
        results = train_batch([task_configs[p] for p in part])
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


class ComposedConfigs:
    """Keeps the configs the sweeper composes to validate a batch, so that the launcher need not compose them again.

    Hydra's sweepers compose every job of a batch before launching it (Sweeper.validate_batch_is_legal)
    and throw the result away; composing costs ~75 ms a job here, as much as training a seed network
    in a batch. This wraps the config loader's load_sweep_config (the one both call) to remember what
    it returned for each job's overrides; `take` hands it out once, and composes when there is none.
    Jobs that differ from a composed one only in values get a derived config (derived_configs.py).
    """

    def __init__(self, config_loader):
        self.loader, self.kept = config_loader, {}
        compose = DerivedConfigs(config_loader, config_loader.load_sweep_config).load_sweep_config

        def load_sweep_config(master_config, sweep_overrides):
            composed = compose(master_config=master_config, sweep_overrides=sweep_overrides)
            self.kept[(id(master_config), tuple(sweep_overrides))] = composed
            return composed  # sweepers only check that it composes; the launcher sets the job's number on it

        self.compose = compose
        config_loader.load_sweep_config = load_sweep_config

    def take(self, master_config, overrides):
        kept = self.kept.pop((id(master_config), tuple(overrides)), None)
        return kept if kept is not None else self.compose(master_config=master_config, sweep_overrides=overrides)


def _without_hydra(sweep_config):
    cfg = OmegaConf.masked_copy(sweep_config, [key for key in sweep_config if key != "hydra"])
    return cfg


def _logging_task(trained):
    """A task function that records `trained` (a runner.job.Trained) as the job's run, as nn-run's would."""
    from runner.cli.run import run_task

    def log_trained(cfg):
        return run_task(cfg, trained=trained)

    return log_trained

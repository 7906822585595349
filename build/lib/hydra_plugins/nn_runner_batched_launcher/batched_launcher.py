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
"""

import logging
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
        self.config = self.task_function = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config):
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.composed = ComposedConfigs(hydra_context.config_loader)

    def launch(self, job_overrides, initial_job_idx):
        from runner.job import release_batch
        from runner.sweep.batches import plan_batches, share_out, train_batch
        from runner.tracking.client import forget_inherited_connections

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs, batched")
        configs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            sweep_config = self.composed.take(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            configs.append(sweep_config)
        task_configs = [_without_hydra(cfg) for cfg in configs]
        batches = plan_batches(task_configs, self.max_batch)
        for batch in batches:
            log.info(f"Training {len(batch)} networks together: jobs "
                     f"#{', #'.join(str(initial_job_idx + p) for p in batch)}")
        workers = workers_for(self.n_jobs, len(configs))
        if workers > 1:
            log.info(f"Running the jobs in {workers} processes, each training its share of every batch")
        shares = share_out(batches, len(configs), workers)

        def run_share(share):
            """Train this share's part of every batch, then run its jobs through Hydra's run_job, in order."""
            parts, positions = share
            trained, shared = {}, []
            for part in parts:
                results = train_batch([task_configs[p] for p in part])
                trained.update(zip(part, results))
                logged = [result for result in results if result is not None]
                if logged:
                    shared.append(logged[0].shared)  # one dict for the whole part
            runs = []
            try:
                for position in positions:
                    done = trained.pop(position, None)
                    log.info(f"\t#{initial_job_idx + position} : "
                             f"{' '.join(filter_overrides(job_overrides[position]))}"
                             f"{' (batched)' if done is not None else ''}")
                    runs.append(run_job(hydra_context=self.hydra_context, config=configs[position],
                                        task_function=self.task_function if done is None else _logging_task(done),
                                        job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
            finally:
                for batch in shared:
                    release_batch(batch)
            return runs

        done = run_in_workers([partial(run_share, share) for share in shares], after_fork=forget_inherited_connections)
        by_position = dict(zip((p for _, positions in shares for p in positions), (r for runs in done for r in runs)))
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [by_position[p] for p in range(len(configs))]


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

"""A Hydra launcher that trains the jobs of a sweep that share a network shape in one NumPy computation.

Every job's config is the one Hydra composes (or derived from a composed one, derived_configs.py);
runner/sweep_batches.py groups the jobs that differ only in `seed` and `train.lr` and trains each
group at once (runner/batched.py).
Then every job, in order, goes through Hydra's own `run_job`, so its output folder, `.hydra/`
files, callbacks (the sweep's MLflow parent run, runner/sweep.py) and JobReturn are those of any
launcher: a batched job's task function logs its precomputed result as the job's run, any other
job (a group of one, mini-batches, a rejected config, a network that diverged) runs nn-run's
task function as usual. Jobs run in this process, one after the other, as with the basic launcher.
"""

import logging
from dataclasses import dataclass
from pathlib import Path

from hydra.core.config_store import ConfigStore
from hydra.core.utils import configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf, open_dict

from hydra_plugins.nn_runner_batched_launcher.derived_configs import DerivedConfigs

log = logging.getLogger(__name__)


@dataclass
class BatchedLauncherConf:
    """hydra/launcher=batched; every key is documented in the README (Batched sweeps)."""

    _target_: str = "hydra_plugins.nn_runner_batched_launcher.batched_launcher.BatchedLauncher"
    max_batch: int = 1024  # most networks trained in one computation; a larger group is cut into batches


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf,
                             provider="nn_runner_batched_launcher")


class BatchedLauncher(Launcher):
    def __init__(self, max_batch=1024):
        super().__init__()
        if max_batch < 1:
            raise ValueError(f"hydra.launcher.max_batch={max_batch} is not allowed: must be >= 1")
        self.max_batch = max_batch
        self.config = self.task_function = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config):
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.composed = ComposedConfigs(hydra_context.config_loader)

    def launch(self, job_overrides, initial_job_idx):
        from runner.sweep_batches import plan_batches, train_batch

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
        batch_of, trained = {}, {}
        for batch in plan_batches(task_configs, self.max_batch):
            for position in batch:
                batch_of[position] = batch
        runs = []
        for position, (overrides, sweep_config) in enumerate(zip(job_overrides, configs)):
            batch = batch_of.get(position)
            if batch is not None and position not in trained:  # the batch's first job: train them all now
                log.info(f"Training {len(batch)} networks together: jobs "
                         f"#{', #'.join(str(initial_job_idx + p) for p in batch)}")
                trained.update(zip(batch, train_batch([task_configs[p] for p in batch])))
            done = trained.pop(position, None)
            log.info(f"\t#{initial_job_idx + position} : {' '.join(filter_overrides(overrides))}"
                     f"{' (batched)' if done is not None else ''}")
            runs.append(run_job(hydra_context=self.hydra_context, config=sweep_config,
                                task_function=self.task_function if done is None else _logging_task(done),
                                job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return runs


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
    from runner.app import run_task

    def log_trained(cfg):
        return run_task(cfg, trained=trained)

    return log_trained

"""A Hydra launcher that trains the jobs of a sweep that share a network shape in one NumPy computation.

Every job's config is the one Hydra composes (or derived from a composed one, derived_configs.py);
runner/sweep/batches.py groups the jobs that differ only in `seed` and `train.lr` and trains each
group at once (runner/nn/stacked.py).
Then every job, in order, goes through Hydra's own `run_job`, so its output folder, `.hydra/`
files, callbacks (the sweep's MLflow parent run, runner/sweep/callback.py) and JobReturn are those of any
launcher: a batched job's task function logs its precomputed result as the job's run, any other
job (a group of one, mini-batches, a rejected config, a network that diverged) runs nn-run's
task function as usual. The jobs run in `n_jobs` processes forked from the sweep's process
(forked_jobs.py); each trains its share of every batch, then runs its jobs in order (shares.py).
With n_jobs=1 they run in this process, one after the other, as with the basic launcher. With
`executor=local|slurm` each share is a submitit job instead (submitted.py): a Slurm sweep of a
thousand seeds is `n_jobs` Slurm jobs, each logging its children under the one parent run.

Only nn-run's own task function has its jobs batched (batching hands a job's precomputed result to
nn-run's task function in place of the app's). The jobs of any other app run as Hydra's basic
launcher runs them, in the same workers: each config composed by Hydra's config loader when its
job's turn comes, the app's task function run through `run_job`, Hydra's logging set again after
each job. Nothing of nn-run's training or tracking (MLflow) is imported for them.
"""

import logging
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from hydra.core.utils import configure_log, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import OmegaConf

from hydra_plugins.nn_runner_batched_launcher.derived_configs import DerivedConfigs
from hydra_plugins.nn_runner_batched_launcher.forked_jobs import (
    run_in_workers,
    workers_for,
)
from hydra_plugins.nn_runner_batched_launcher.shares import Sweep, run_share
from hydra_plugins.nn_runner_batched_launcher.submitted import EXECUTORS, run_submitted

log = logging.getLogger(__name__)


@dataclass
class BatchedLauncherConf:
    """hydra/launcher=batched; docs/sweeps.md (Batched sweeps) and docs/slurm.md say more."""

    _target_: str = "hydra_plugins.nn_runner_batched_launcher.batched_launcher.BatchedLauncher"
    max_batch: int = 1024  # most networks trained in one computation; a larger group is cut into batches
    # processes that run the jobs (log the trained networks, train the others); -1: one per CPU.
    # With an executor: how many submitit jobs (-1: one per max_batch jobs)
    n_jobs: int = -1
    executor: Optional[str] = None  # null: forked processes here; local or slurm: each share is a submitit job
    # the keys below are hydra-submitit-launcher's (SlurmQueueConf), used with an executor; local takes the first 7
    submitit_folder: str = "${hydra.sweep.dir}/.submitit/%j"  # submitit's job files (pickles, logs)
    timeout_min: int = 60  # time limit of each job, in minutes
    cpus_per_task: Optional[int] = None  # CPUs of each job
    gpus_per_node: Optional[int] = None  # GPUs of each job (NumPy uses none)
    mem_gb: Optional[int] = None  # memory of each job, in GB
    name: str = "${hydra.job.name}"  # the jobs' name
    stderr_to_stdout: bool = False  # one log file per job instead of two
    partition: Optional[str] = None  # Slurm: sbatch --partition
    qos: Optional[str] = None  # Slurm: --qos
    comment: Optional[str] = None  # Slurm: --comment
    constraint: Optional[str] = None  # Slurm: --constraint
    exclude: Optional[str] = None  # Slurm: --exclude (nodes)
    gres: Optional[str] = None  # Slurm: --gres
    cpus_per_gpu: Optional[int] = None  # Slurm: --cpus-per-gpu
    gpus_per_task: Optional[int] = None  # Slurm: --gpus-per-task
    mem_per_gpu: Optional[str] = None  # Slurm: --mem-per-gpu
    mem_per_cpu: Optional[str] = None  # Slurm: --mem-per-cpu
    account: Optional[str] = None  # Slurm: --account
    signal_delay_s: int = 120  # Slurm: USR2 this many seconds before the time limit (submitit then requeues)
    max_num_timeout: int = 0  # Slurm: how many times a job that reached its time limit is requeued
    additional_parameters: Dict[str, Any] = field(default_factory=dict)  # Slurm: other sbatch options {name: value}
    array_parallelism: int = 256  # Slurm: most jobs of the launch running at once
    setup: Optional[List[str]] = None  # Slurm: shell lines run before the job starts (module load ...)


ConfigStore.instance().store(group="hydra/launcher", name="batched", node=BatchedLauncherConf,
                             provider="nn_runner_batched_launcher")


class BatchedLauncher(Launcher):
    def __init__(self, max_batch=1024, n_jobs=-1, executor=None, **submitit_settings):
        super().__init__()
        if max_batch < 1:
            raise ValueError(f"hydra.launcher.max_batch={max_batch} is not allowed: must be >= 1")
        if n_jobs < 1 and n_jobs != -1:
            raise ValueError(f"hydra.launcher.n_jobs={n_jobs} is not allowed: must be >= 1, or -1 for one per CPU "
                             "(with an executor: one job per max_batch jobs)")
        if executor is not None and executor not in EXECUTORS:
            raise ValueError(f"hydra.launcher.executor={executor} is not allowed: must be null (forked processes "
                             f"here) or one of submitit's {', '.join(EXECUTORS)}")
        self.max_batch, self.n_jobs, self.executor = max_batch, n_jobs, executor
        self.submitit = {key: OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
                         for key, value in submitit_settings.items()}
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
        sweep = Sweep(self.hydra_context, self.task_function, self.config, [list(o) for o in job_overrides],
                      initial_job_idx, batched=self.composed is not None)
        workers = self._workers(count)
        if self.composed is None:
            log.info(f"Launching {count} jobs, none batched: the task function is not nn-run's")
            compose, shares, after_fork = None, _in_turns(count, workers), None
        else:
            # nn-run's sweep modules import numpy's training code and MLflow: only an nn-run sweep needs them
            from runner.sweep.batches import group_batches, share_out
            from runner.tracking.client import forget_inherited_connections

            log.info(f"Launching {count} jobs, batched")
            keys = [self.composed.take_key(self.config, overrides) for overrides in sweep.job_overrides]
            batches = group_batches(keys, self.max_batch)
            self.composed.forget_texts()
            for batch in batches:
                log.info(f"Training {len(batch)} networks together: jobs "
                         f"#{', #'.join(str(initial_job_idx + p) for p in batch)}")
            compose, shares, after_fork = self.composed.compose, share_out(batches, count, workers), \
                forget_inherited_connections
        if self.executor is not None:
            done = run_submitted(self.executor, self.submitit, sweep, shares)
        else:
            if workers > 1:
                log.info(f"Running the jobs in {workers} processes"
                         f"{'' if self.composed is None else ', each training its share of every batch'}")
            done = run_in_workers([partial(run_share, sweep, share, compose) for share in shares],
                                  after_fork=after_fork)
        by_position = dict(zip((p for _, positions in shares for p in positions), (r for runs in done for r in runs)))
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [by_position[p] for p in range(count)]

    def _workers(self, count):
        """How many shares: processes here, or submitit jobs (-1: one per max_batch jobs) with an executor."""
        if self.executor is None:
            return workers_for(self.n_jobs, count)
        return min(count, -(-count // self.max_batch) if self.n_jobs == -1 else self.n_jobs)


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


class ComposedConfigs:
    """Composes nn-run's job configs, and keeps of those the sweeper composes only each job's batch key.

    Hydra's sweepers compose every job of a batch before launching it (Sweeper.validate_batch_is_legal)
    and throw the result away. This wraps the config loader's load_sweep_config (the one both call)
    so that a job that differs from a composed one only in values gets a derived config
    (derived_configs.py: ~3 ms against Hydra's ~75 ms), and remembers, for each job's overrides,
    its batch key (runner.sweep.batches.batch_key), from which the launcher plans the batches. The
    workers compose each job's config again when its batch part trains or its turn comes (a
    derived copy). A whole config kept for every job (~110 KB of Python objects) made the sweep's
    process grow with the sweep; a key is a few dozen bytes, as the jobs of one batch share its text.
    """

    def __init__(self, config_loader):
        # only nn-run's sweeps have ComposedConfigs (is_nn_run): runner's modules are loaded already
        from runner.sweep.batches import batch_key

        self.batch_key = batch_key
        self.keys = {}  # (id of the master config, the job's overrides) -> its batch key, until launched
        self.texts = {}  # each batch key's text once, shared by the jobs of its batch
        self.compose = DerivedConfigs(config_loader, config_loader.load_sweep_config).load_sweep_config

        def load_sweep_config(master_config, sweep_overrides):
            composed = self.compose(master_config=master_config, sweep_overrides=sweep_overrides)
            self.keys[(id(master_config), tuple(sweep_overrides))] = self._key(composed)
            return composed  # sweepers only check that it composes

        config_loader.load_sweep_config = load_sweep_config

    def _key(self, config):
        key = self.batch_key(config)
        return None if key is None else self.texts.setdefault(key, key)

    def take_key(self, master_config, overrides):
        """The batch key of the job `overrides`: the one remembered when the sweeper composed it, else composed now."""
        key = self.keys.pop((id(master_config), tuple(overrides)), self)
        if key is self:
            key = self._key(self.compose(master_config=master_config, sweep_overrides=list(overrides)))
        return key

    def forget_texts(self):
        """The batches are planned: the keys' texts need not be kept for the next launch."""
        self.texts = {}

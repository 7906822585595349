"""A batched launch's shares as submitit jobs (`hydra.launcher.executor=local|slurm`): one job per share.

The launch is one submitit array (`executor.map_array`), as Hydra's submitit launcher submits
one; each of its jobs runs one share (shares.py): composes its jobs' configs again where it runs
(the first of a shape with Hydra, the others derived: derived_configs.py), trains its part of
every batch, logs its children under the sweep's parent run and returns their JobReturns.
The callable has a `checkpoint` method, as hydra-submitit-launcher's has: a job sent SIGUSR2
(preemption, or its time limit near) is requeued by submitit and runs its share again (shares.py
says what it keeps).
"""

import copy
import gc
import logging
from dataclasses import replace

from hydra.core.singleton import Singleton
from hydra.core.utils import configure_log, setup_globals
from hydra.types import HydraContext

from hydra_plugins.nn_runner_batched_launcher.derived_configs import DerivedConfigs
from hydra_plugins.nn_runner_batched_launcher.shares import run_share

log = logging.getLogger(__name__)

EXECUTORS = ("local", "slurm")
# what hydra-submitit-launcher's BaseQueueConf holds (keys every executor takes); the rest are Slurm's
BASE_KEYS = ("timeout_min", "cpus_per_task", "gpus_per_node", "mem_gb", "name", "stderr_to_stdout")
INIT_KEYS = ("max_num_timeout",)  # given to the executor's constructor, as hydra-submitit-launcher does


def executor_parameters(executor, settings):
    """(constructor keywords, update_parameters keywords) of submitit's AutoExecutor for `settings`.

    Keys are named as in hydra-submitit-launcher's configs; Slurm's own are prefixed `slurm_` as
    submitit's AutoExecutor wants them. A local executor takes only the keys every executor takes.
    """
    init = {f"{executor}_{key}": settings[key] for key in INIT_KEYS if executor == "slurm"}
    params = {}
    for key, value in settings.items():
        if key in INIT_KEYS:
            continue
        if key in BASE_KEYS:
            params[key] = value
        elif executor == "slurm":
            params[f"slurm_{key}"] = value
    return init, params


class SubmittedShare:
    """The callable submitit runs in each job: one share of the launch (picklable)."""

    def __init__(self, sweep, singleton_state):
        self.sweep, self.singleton_state = sweep, singleton_state

    def __call__(self, share):
        Singleton.set_state(self.singleton_state)
        setup_globals()
        sweep = self.sweep
        configure_log(sweep.config.hydra.hydra_logging, sweep.config.hydra.verbose)
        compose = None  # another app's configs: composed by Hydra's config loader when their turn comes
        if sweep.batched:  # the first of a shape composed with Hydra, the others derived
            loader = sweep.hydra_context.config_loader
            compose = DerivedConfigs(loader, loader.load_sweep_config).load_sweep_config
        gc.freeze()  # a fresh process: its modules are long-lived (see forked_jobs.py)
        runs = []
        run_share(sweep, share, compose, runs.append)
        return runs

    def checkpoint(self, *args, **kwargs):
        """Resubmit this share as it was submitted (submitit calls this on SIGUSR2, then requeues the job)."""
        # submitit is imported only by a launch that submits (it is not needed to list the launcher)
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def portable_context(hydra_context):
    """The HydraContext with the config loader as Hydra made it (the launcher wraps its load_sweep_config)."""
    loader = copy.copy(hydra_context.config_loader)
    vars(loader).pop("load_sweep_config", None)
    return HydraContext(config_loader=loader, callbacks=hydra_context.callbacks)


def run_submitted(executor, settings, sweep, shares):
    """Submit each share as a job of `executor` (local or slurm) and wait for them; their JobReturns, share by share.

    `settings` are the launcher's submitit keys (executor_parameters), `submitit_folder` included.
    """
    # submitit is imported only by a launch that submits (it is not needed to list the launcher)
    import submitit

    settings = dict(settings)
    folder = settings.pop("submitit_folder")
    init, params = executor_parameters(executor, settings)
    submitter = submitit.AutoExecutor(folder=folder, cluster=executor, **init)
    submitter.update_parameters(**params)
    call = SubmittedShare(replace(sweep, hydra_context=portable_context(sweep.hydra_context)), Singleton.get_state())
    jobs = submitter.map_array(call, shares)
    log.info(f"Submitted {len(jobs)} submitit {executor} job{'s' if len(jobs) > 1 else ''}, one per share: "
             f"{', '.join(job.job_id for job in jobs)}")
    try:
        return [job.results()[0] for job in jobs]
    except BaseException:
        for job in jobs:  # Ctrl-C, or a job that failed outside Hydra's run_job: the others are not waited for
            if not job.done():
                job.cancel(check=False)
        raise

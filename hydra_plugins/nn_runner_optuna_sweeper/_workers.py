"""Distributed workers of an nn_optuna search (`hydra.sweeper.workers=N`): N launcher jobs share one study.

The sweeper launches N worker jobs through the sweep's own launcher (submitit local or Slurm: one job array;
joblib: N processes), each running `WorkerLoop` as its task function (submitit and joblib pickle it). A worker
is a loop in its job's process:

- first it takes back its own trial left RUNNING (a preempted worker requeued by submitit runs the same
  WorkerLoop again: its trial's job folder holds the checkpoint, so the trial continues as the same child run,
  bit for bit, with the tag resumed_at);
- then, while the study holds fewer than n_trials trials, it asks one (under an flock on ASK_LOCK in the sweep
  folder, so the study never holds more than n_trials), marks it with its owner (OWNER_ATTR: host, pid, this
  launch's id, the worker's index, the Slurm job), composes the trial's config as Hydra's launchers compose a
  job's (hydra.job.num = the trial's number: its own job folder and checkpoint), runs it as an nn-run job with
  Hydra's run_job (its child run under the sweep's parent; pruning as in any trial: runner/sweep/pruning.py),
  and tells the study how it ended (_search.outcome). No worker waits for another.

A worker stops once more than max_failure_rate * n_trials trials failed (its job fails with the trial's error).
Trials that a worker which died leaves RUNNING are the sweeper's once every worker has returned (_search.py).
"""

import fcntl
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import configure_log, run_job
from optuna.trial import TrialState

from hydra_plugins.nn_runner_optuna_sweeper._search import (
    OWNER_ATTR,
    counted_failures,
    fail_child_run,
    job_checkpoint,
    job_config,
    outcome,
    prepare,
    said,
    stop_if_too_many_failed,
    tell,
    trial_attrs,
)
from runner import checkpoint
from runner.held_signal import HeldSignal
from runner.sweep import optuna_private
from runner.sweep.optuna_settings import SEED_LIMIT, make_sampler, open_storage, storage_url, study_name
from runner.tracking import run_owner

log = logging.getLogger(__name__)

ASK_LOCK = ".optuna_ask.lock"  # in the sweep folder: one worker at a time counts the study's trials and asks one
WORKERS_SUBDIR = "workers"  # a worker job's own Hydra folder: hydra.sweep.subdir=workers/INDEX (trials use NUMBER)
LAUNCH_KEY, WORKER_KEY, SLURM_KEY = "launch", "worker", "slurm_job"  # OWNER_ATTR's keys besides run_owner's tags
SEED_STRIDE = 1_000_003  # worker i's sampler seed: seed + (i + 1) * SEED_STRIDE (workers must not draw alike)


def worker_overrides(count):
    """The overrides of the `count` worker jobs: each its own folder, workers/INDEX, apart from the trials'."""
    return [[f"hydra.sweep.subdir={WORKERS_SUBDIR}/{index}"] for index in range(count)]


def slurm_job():
    """This process's Slurm job as submitit names it (ARRAY_TASK in an array), or None outside Slurm."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def describe_worker(owner):
    """'pid 123 on host-a, Slurm job 45_1', as OWNER_ATTR records a worker."""
    slurm = owner.get(SLURM_KEY)
    return run_owner.describe_owner(owner) + (f", Slurm job {slurm}" if slurm else "")


def worker_sampler(settings, index, held):
    """Worker `index`'s sampler: a seeded one seeded apart from the other workers' (and past the `held` trials the
    study had when the workers were launched, as a continued search's sampler is, and past the trials it asked
    before it was requeued), so that workers do not draw alike nor a requeued worker its points again."""
    sampler = settings["sampler"]
    if sampler.get("seed") is None or sampler.get("name") == "grid":
        return None  # prepare's: unseeded, or the grid, which finds its next point from the study's trials
    return make_sampler({**sampler, "seed": (sampler["seed"] + (index + 1) * SEED_STRIDE + held) % SEED_LIMIT})


@contextmanager
def ask_lock(sweep_dir):
    """An exclusive flock on ASK_LOCK in the sweep folder (shared by every worker's node)."""
    with open(Path(sweep_dir, ASK_LOCK), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class WorkerLoop:
    """The task function of a worker job: see the module docstring. Picklable (submitit, joblib)."""

    def __init__(self, task_function, hydra_context, config, settings, arguments, launch_id, held):
        self.task_function, self.hydra_context, self.config = task_function, hydra_context, config
        self.settings, self.arguments, self.launch_id = settings, arguments, launch_id
        self.held = held  # trials the study held when the workers were launched (worker_sampler)

    def __call__(self, worker_cfg):
        index = HydraConfig.get().job.num
        space, sampler, pruner, n_trials = prepare(self.settings, self.arguments)
        cwd = str(self.config.hydra.runtime.cwd)
        sweep_dir = Path(cwd, str(self.config.hydra.sweep.dir))
        url = storage_url(self.settings, self.config.hydra.sweep.dir, cwd=cwd)
        name = study_name(self.settings, self.config.hydra.sweep.dir)
        owner = {**run_owner.owner_tags(), LAUNCH_KEY: self.launch_id, WORKER_KEY: index, SLURM_KEY: slurm_job()}
        storage = open_storage(url)
        try:
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
            own = self.own_trials(study, index, running=False)
            study.sampler = worker_sampler(self.settings, index, self.held + len(own)) or sampler
            ran = 0
            with HeldSignal() as held:  # submitit's USR2 stops a trial at a checkpoint, never between two steps here
                for trial in [t for t in own if t.state == TrialState.RUNNING]:  # left RUNNING by this worker
                    optuna_private.set_trial_attr(storage, name, trial.number, OWNER_ATTR, owner, system=True)
                    log.info(f"worker {index} ({describe_worker(owner)}): takes back trial {trial.number}")
                    self.end_unstarted_run(space, trial)
                    self.run_held(held, study, space, trial.number, trial.params, n_trials)
                    ran += 1
                while True:
                    with ask_lock(sweep_dir):
                        if len(study.get_trials(deepcopy=False)) >= n_trials:
                            break
                        trial = study.ask(space.distributions)
                        optuna_private.set_trial_attr(storage, name, trial.number, OWNER_ATTR, owner, system=True)
                    self.run_held(held, study, space, trial.number, trial.params, n_trials)
                    ran += 1
            log.info(f"worker {index} ({describe_worker(owner)}): {ran} trials, the study holds {n_trials}")
            return ran
        finally:
            optuna_private.close_storage(storage)

    def own_trials(self, study, index, running=True):
        """The study's trials (`running`: RUNNING ones) that this worker (this launch, this index) asked: those of
        the worker before it was requeued."""
        return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,) if running else None)
                if t.system_attrs.get(OWNER_ATTR, {}).get(LAUNCH_KEY) == self.launch_id
                and t.system_attrs[OWNER_ATTR].get(WORKER_KEY) == index]

    def end_unstarted_run(self, space, trial):
        """A trial taken back whose job folder holds no checkpoint of its config was stopped before its training
        began (its first safe point checkpoints): it runs again from its start, as a new child run, and the run
        its job had opened, if any, ends FAILED now, saying so, rather than at the sweep's end."""
        folder, sha = job_checkpoint(self.config, space.overrides(trial.params), trial.number, self.trial_config)
        meta = checkpoint.read_meta(folder)
        if meta is None or meta.get("config_sha256") != sha:
            fail_child_run(self.config, trial.number, "its worker was stopped before the trial's first checkpoint: "
                                                      "the trial ran again from its start as a new run")

    def trial_config(self, overrides, number):
        """The config Hydra's launchers compose for job `number` (_search.job_config)."""
        return job_config(self.hydra_context, self.config, overrides, number)

    def run_held(self, held, study, space, number, params, n_trials):
        """run_trial with SIGUSR2 held (runner.held_signal): one noted while the trial was asked or its run opened
        stops its training at the first safe point, with a checkpoint; one noted while it was told is handed on
        before the next trial is asked. Either way submitit requeues this worker, which takes the trial back."""
        try:
            self.run_trial(study, space, number, params, n_trials)
        except KeyboardInterrupt:  # the trial stopped at a checkpoint on the held signal: hand it on
            held.hand_over()
            raise
        held.hand_over()

    def run_trial(self, study, space, number, params, n_trials):
        """Run trial `number` as the sweep's job `number` and tell the study how it ended. A stop of this process
        (submitit's preemption, Ctrl-C: not an Exception) leaves the trial RUNNING, for the worker requeued."""
        try:
            config = self.trial_config(space.overrides(params), number)
            job = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=config,
                          job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            worker = HydraConfig.get()  # run_job restored the worker's: its lines go to its own log again
            configure_log(worker.job_logging, worker.verbose)
            attrs = trial_attrs(study, [_Number(number)])[number]
            state, value = outcome(job, attrs)
            tell(study, _Number(number), value, state)
        except Exception:  # this worker's own error (composing, the storage): the trial cannot be told otherwise
            study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
            raise
        log.info(f"trial {number}: {state.name}{said(job, value, attrs)}")
        if state == TrialState.FAIL:
            stop_if_too_many_failed(counted_failures(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))),
                                    self.settings, n_trials, job)


class _Number:
    """A trial known by its number only (what _search's trial_attrs and tell read of a trial)."""

    def __init__(self, number):
        self.number = number

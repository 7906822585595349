"""The search loop of nn_optuna: ask a batch of trials, launch them as Hydra jobs, tell Optuna how each ended.

The study lives in an Optuna RDB storage (runner/sweep/optuna_settings.py: by default optuna.db in the sweep
folder), so jobs in other processes (joblib, the batched launcher's workers, submitit, Slurm) can open their
trial there. Each batch is `n_jobs` trials asked at once, numbered consecutively, and launched with
initial_job_idx = the first trial's number: a job's `hydra.job.num` is its trial's number.

How a trial ends, decided from the job's JobReturn (its status and return value only: the batched launcher
may drop the JobReturn's configs) and from the study's storage once the job has returned:
- the job failed (an error, a rejected value): FAIL;
- the job set the user attribute `pruned_at_step` (record.PRUNED_AT_TAG) on its trial before returning
  (a pruned job: it opened its trial with runner/sweep/pruning.py's TrialReporter, reported intermediate
  values with trial.report, and its pruner said stop): PRUNED, whose value Optuna takes from the trial's last
  reported value; this is the hook of the pruning contract (`outcome`);
- the job returned no finite number: FAIL;
- else COMPLETE with the returned value.
The search stops (raising the failed job's error) once more than max_failure_rate * n_trials trials failed.
"""

import logging
import math
from pathlib import Path

import optuna
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from hydra_plugins.nn_runner_optuna_sweeper._search_space import grid, params_arguments, search_space
from runner.hydra_private import job_error
from runner.sweep.optuna_settings import (
    check_numbers,
    make_pruner,
    make_sampler,
    open_storage,
    storage_url,
    study_name,
)
from runner.tracking.record import PRUNED_AT_TAG
from runner.tracking.uri import redact

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"  # in the sweep folder: the best trial, as hydra-optuna-sweeper writes it


def prepare(settings, arguments):
    """(search space, sampler, pruner, n_trials) of the sweeper's `settings` (plain containers) and the command
    line's `arguments`; SettingsError for any value it cannot use. Makes nothing: the sweep callback calls it
    before the search's parent run exists."""
    check_numbers(settings["direction"], settings["n_trials"], settings["n_jobs"], settings["max_failure_rate"])
    space = search_space(params_arguments(settings["params"]) + list(arguments))
    sampler_settings = settings["sampler"]
    grid_values = grid(space) if sampler_settings.get("name") == "grid" else None
    sampler = make_sampler(sampler_settings, grid=grid_values)
    pruner = make_pruner(settings["pruner"])
    n_trials = settings["n_trials"]
    if grid_values is not None:  # the grid sampler runs each point once
        n_trials = min(n_trials, math.prod(len(values) for values in grid_values.values()))
    return space, sampler, pruner, n_trials


def run_search(settings, arguments, config, launcher, validate=None):
    """Run the search: see the module docstring. Writes RESULTS_FILE into the sweep folder. `validate`, if
    given, is called with the first batch's overrides (Hydra's Sweeper.validate_batch_is_legal: a key no config
    has stops the search before any job runs)."""
    space, sampler, pruner, n_trials = prepare(settings, arguments)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")  # as Hydra's basic sweeper does
    url, name = storage_url(settings, config.hydra.sweep.dir), study_name(settings, config.hydra.sweep.dir)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # nn-run's lines say what Optuna's INFO lines would
    try:
        study = optuna.create_study(storage=open_storage(url), sampler=sampler, pruner=pruner, study_name=name,
                                    direction=settings["direction"], load_if_exists=True)
        log.info(f"Optuna study {name!r} in {redact(url)}: {n_trials} trials, {settings['direction']}, sampler "
                 f"{type(sampler).__name__}, pruner {type(pruner).__name__}, {settings['n_jobs']} at a time")
        failed = 0
        for first in range(0, n_trials, settings["n_jobs"]):
            trials = [study.ask(space.distributions) for _ in range(min(settings["n_jobs"], n_trials - first))]
            try:
                for batch in consecutive(trials):
                    if validate is not None and first == 0:
                        validate([space.overrides(t.params) for t in batch])
                    returns = launcher.launch([space.overrides(t.params) for t in batch],
                                              initial_job_idx=batch[0].number)
                    failures = tell_batch(study, batch, returns)
                    failed += len(failures)
                    if failures and failed > settings["max_failure_rate"] * n_trials:
                        log.error(f"{failed} of {n_trials} trials failed, more than max_failure_rate="
                                  f"{settings['max_failure_rate']} allows")
                        raise_failure(failures[0])
            except BaseException:  # a failed search, a launcher's error, Ctrl-C: no trial of it stays RUNNING
                fail_unfinished(study, trials)
                raise
        write_results(study, sweep_dir / RESULTS_FILE)
    finally:
        optuna.logging.set_verbosity(verbosity)


def consecutive(trials):
    """The trials in runs of consecutive numbers (one run, unless another process asks trials of the same study)."""
    runs = []
    for trial in trials:
        if runs and trial.number == runs[-1][-1].number + 1:
            runs[-1].append(trial)
        else:
            runs.append([trial])
    return runs


def tell_batch(study, batch, returns):
    """Tell Optuna how each trial of a launched batch ended; returns the JobReturns of the failed ones."""
    attrs = trial_attrs(study, batch)
    failures = []
    for trial, job in zip(batch, returns):
        state, value = outcome(job, attrs[trial.number])
        tell(study, trial, value, state)
        log.info(f"trial {trial.number}: {state.name}{said(job, value, attrs[trial.number])}")
        if state == TrialState.FAIL:
            failures.append(job)
    return failures


def fail_unfinished(study, trials):
    """Tell FAIL for the trials of a batch that the search could not tell (best effort: it is stopping)."""
    for trial in trials:
        try:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        except Exception as error:  # noqa: BLE001  the search's own error is the one to report
            log.warning(f"trial {trial.number} could not be marked FAIL: {error}")


def trial_attrs(study, trials):
    """{trial number: user attributes} of `trials` as the storage holds them now (the jobs may have set some)."""
    numbers = {t.number for t in trials}
    found = {t.number: t.user_attrs for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
             if t.number in numbers}
    return {number: found.get(number, {}) for number in numbers}


def tell(study, trial, value, state):
    """study.tell; the grid sampler's study.stop() once its grid is done is no error here (the trial is stored)."""
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as error:  # Optuna allows Study.stop only inside study.optimize
        if "Study.stop" not in str(error):
            raise


def outcome(job, attrs):
    """(TrialState, value or None) of a trial whose job returned `job` (a JobReturn) and set `attrs`."""
    if job.status != JobStatus.COMPLETED:
        return TrialState.FAIL, None
    try:
        value = float(job.return_value)
    except (TypeError, ValueError):
        return TrialState.FAIL, None
    if PRUNED_AT_TAG in attrs:  # the pruning hook: the job stopped where its pruner said (see the docstring)
        return TrialState.PRUNED, None
    if not math.isfinite(value):
        return TrialState.FAIL, None
    return TrialState.COMPLETE, value


def said(job, value, attrs):
    """What the trial's log line adds to its state: its value, the step it was pruned at, or why it failed."""
    if value is not None:
        return f", value {value!r}"
    if PRUNED_AT_TAG in attrs:
        return f" at step {attrs[PRUNED_AT_TAG]}"
    error = job_error(job) if job.status != JobStatus.COMPLETED else None
    if error is not None:
        text = str(error).strip()
        return f" ({type(error).__name__}: {text.splitlines()[0] if text else ''})"
    return ""


def raise_failure(job):
    """Raise what made the job fail: its own error, or one saying what it returned instead of a number."""
    if job.status != JobStatus.COMPLETED:
        job.return_value  # noqa: B018  Hydra's JobReturn raises the job's exception
    raise ValueError(f"a trial's job returned {job.return_value!r}, not a finite number to optimise")


def write_results(study, path):
    """RESULTS_FILE: name, best_params, best_value (as hydra-optuna-sweeper), and the best trial's number."""
    try:
        best = study.best_trial
    except ValueError:  # no trial completed (all failed or pruned)
        log.warning(f"no trial completed: {path.name} is not written")
        return
    results = {"name": "optuna", "best_params": best.params, "best_value": best.value, "best_trial": best.number}
    OmegaConf.save(OmegaConf.create(results), path)
    log.info(f"Best trial {best.number}: value {best.value!r}, parameters {best.params}")

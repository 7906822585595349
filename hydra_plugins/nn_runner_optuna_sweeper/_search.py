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

A study that exists (the same search run again into its sweep folder, or a named storage and study) is
continued: n_trials counts all its trials, ended ones are kept, and new ones are asked until it holds
n_trials. A trial it holds RUNNING whose search process is gone (killed; or Ctrl-C, which leaves its trials
RUNNING for this) is launched again with its params and number, so into its own job folder, whose checkpoint
continues its child run bit for bit, and is told as usual; one whose job folder has no checkpoint is FAIL, with
the reason in its user attribute LOST_ATTR and on its child run, ended FAILED (resume_plan, fail_lost).
"""

import json
import logging
import math
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import optuna
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf, open_dict
from optuna.trial import TrialState

from hydra_plugins.nn_runner_optuna_sweeper._search_space import grid, params_arguments, search_space
from runner import checkpoint
from runner.hydra_private import job_error
from runner.job import mlflow_client
from runner.sweep import optuna_private
from runner.sweep.callback import SWEEP_FILE
from runner.sweep.optuna_settings import (
    SEED_LIMIT,
    check_numbers,
    make_pruner,
    make_sampler,
    open_storage,
    storage_url,
    study_name,
)
from runner.tracking import run_owner
from runner.tracking.record import PRUNED_AT_TAG, TRIAL_NUMBER_TAG
from runner.tracking.uri import redact

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"  # in the sweep folder: the best trial, as hydra-optuna-sweeper writes it
OWNER_ATTR = "nn_runner:search_process"  # a trial's system attribute: the search process that asked it (run_owner)
LOST_ATTR = "lost"  # a trial's user attribute: why it is FAIL, lost with its search's process (resume_plan)


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


def run_search(settings, arguments, config, launcher, validate=None, job_config=None, workers=None):
    """Run the search: see the module docstring. Writes RESULTS_FILE into the sweep folder. `validate`, if
    given, is called with the first batch's overrides (Hydra's Sweeper.validate_batch_is_legal: a key no config
    has stops the search before any job runs). `job_config(overrides, number)` is the config Hydra gives job
    `number` (where its folder is, to find an interrupted trial's checkpoint: `resume_plan`). `workers(arguments,
    launch_id, trials held)`, if given, launches the search's worker jobs (_workers.py) and returns their JobReturns: see
    `run_workers`."""
    space, sampler, pruner, n_trials = prepare(settings, arguments)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")  # as Hydra's basic sweeper does
    url, name = storage_url(settings, config.hydra.sweep.dir), study_name(settings, config.hydra.sweep.dir)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # nn-run's lines say what Optuna's INFO lines would
    try:
        storage = open_storage(url)
        held = held_trials(storage, name)  # before the study exists, or before it is continued
        reseeded = resumed_sampler_settings(settings["sampler"], len(held))
        if reseeded is not settings["sampler"]:
            sampler = make_sampler(reseeded)
        study = optuna.create_study(storage=storage, sampler=sampler, pruner=pruner, study_name=name,
                                    direction=settings["direction"], load_if_exists=True)
        resumed, lost = resume_plan(study, space, config, job_config)
        kept = [t for t in held if t.state.is_finished()]
        log.info(f"Optuna study {name!r} in {redact(url)}: {n_trials} trials, {settings['direction']}, sampler "
                 f"{type(sampler).__name__}, pruner {type(pruner).__name__}, "
                 + (f"{settings['workers']} workers" if workers is not None else f"{settings['n_jobs']} at a time")
                 + (f"; continued: {len(kept)} trials kept, {len(resumed)} resumed, {len(lost)} lost"
                    if held else ""))
        for trial in lost:
            fail_lost(study, storage, name, trial, config)
        # failures of this search's jobs count against max_failure_rate; a trial lost with the search's process not
        failed = [counted_failures(kept)]
        launched = [False]

        def run(trials):
            try:
                for batch in consecutive(trials):
                    overrides = [space.overrides(t.params) for t in batch]
                    if validate is not None and not launched[0]:
                        validate(overrides)
                    launched[0] = True
                    returns = launcher.launch(overrides, initial_job_idx=batch[0].number)
                    failures = tell_batch(study, batch, returns)
                    failed[0] += len(failures)
                    if failures:
                        stop_if_too_many_failed(failed[0], settings, n_trials, failures[0])
            except KeyboardInterrupt:  # Ctrl-C, SIGTERM: its trials stay RUNNING, for the search run again to resume
                raise
            except BaseException:  # a failed search, a launcher's error: no trial of it stays RUNNING
                fail_unfinished(study, trials)
                raise

        for first in range(0, len(resumed), settings["n_jobs"]):
            run(resumed[first:first + settings["n_jobs"]])
        if workers is not None and len(study.get_trials(deepcopy=False)) < n_trials:  # a full study: no worker
            launched[0] = True
            stopped = run_workers(workers, arguments, study, storage, name, space, config, job_config)
            for first in range(0, len(stopped[0]), settings["n_jobs"]):  # trials its dead workers left RUNNING
                run(stopped[0][first:first + settings["n_jobs"]])
            if stopped[1] is not None:  # a worker failed (its trials' failures, its own error): so does the search
                write_results(study, sweep_dir / RESULTS_FILE)
                raise_failure(stopped[1])
            failed[0] = counted_failures(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
        while True:
            missing = n_trials - len(study.get_trials(deepcopy=False))
            if missing <= 0:
                break
            trials = [study.ask(space.distributions) for _ in range(min(settings["n_jobs"], missing))]
            for trial in trials:
                optuna_private.set_trial_attr(storage, name, trial.number, OWNER_ATTR, run_owner.owner_tags(),
                                              system=True)
            run(trials)
        write_results(study, sweep_dir / RESULTS_FILE)
    finally:
        optuna.logging.set_verbosity(verbosity)


def run_workers(workers, arguments, study, storage, name, space, config, job_config):
    """Launch the worker jobs (`workers`, see run_search) and wait for all of them; then the trials still RUNNING
    are those of workers that died. Returns (those of them whose checkpoint resumes them, to launch again; the
    first failed worker's JobReturn or None); the others are told FAIL (fail_lost). A launcher that raises (a
    worker that died or its cluster cancelled: submitit's UncompletedJobError) stops the search once the other
    workers have ended (wait_for_workers), after the RUNNING trials of workers known to be gone (on this host)
    without a checkpoint are told FAIL; the others stay RUNNING, for the search run again (resume_plan)."""
    launch_id = uuid.uuid4().hex
    try:
        returns = workers(arguments, launch_id, len(study.get_trials(deepcopy=False)))
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the trials stay RUNNING, for the search run again to resume
        raise
    except BaseException:  # a worker the launcher reports failed (submitit: the first, in order, that died)
        wait_for_workers(study, launch_id)
        # only a trial whose worker is known gone (on this host, or its Slurm job) and has no checkpoint is FAIL
        _, lost = resume_plan(study, space, config, job_config)
        for trial in lost:
            if run_owner.owner_gone(trial[0].system_attrs.get(OWNER_ATTR, {})):
                fail_lost(study, storage, name, trial, config)
        raise
    resumed, lost = resume_plan(study, space, config, job_config, every=True)
    for trial in lost:
        fail_lost(study, storage, name, trial, config)
    failures = [job for job in returns if job.status != JobStatus.COMPLETED]
    for job in failures:
        log.error(f"a worker failed: {said(job, None, {}).strip(' ()')}")
    return resumed, (failures[0] if failures else None)


def wait_for_workers(study, launch_id, poll_seconds=1.0):
    """Wait while a worker of launch `launch_id` still runs a trial: the launcher stopped at a failed worker
    (submitit reads the workers' results in order), and the others go on filling the study. The search ends
    after their child runs, so that its parent's accounting counts them and none is logged after its end. A
    worker known to run is one whose process lives on this host, or whose Slurm job squeue still lists; one
    that cannot be seen (another host, no squeue) is not waited for. Two polls in a row with none: the end."""
    idle, said_once = 0, False
    while idle < 2:
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.system_attrs.get(OWNER_ATTR, {}).get("launch") == launch_id  # _workers.LAUNCH_KEY
                   and worker_runs(t.system_attrs[OWNER_ATTR])]
        idle = 0 if running else idle + 1
        if running and not said_once:
            log.warning(f"a worker failed: the search waits for the other workers' trials "
                        f"({', '.join(str(t.number) for t in running)} running) to end")
            said_once = True
        time.sleep(poll_seconds)


def worker_runs(owner):
    """Whether the worker `owner` (OWNER_ATTR) still runs: its process on this host, else its Slurm job in squeue."""
    gone = run_owner.owner_gone(owner)
    if gone is not None:
        return not gone
    job, squeue = owner.get("slurm_job"), shutil.which("squeue")  # _workers.SLURM_KEY
    if not job or squeue is None:
        return False
    listed = subprocess.run([squeue, "-h", "-j", str(job), "-o", "%T"], capture_output=True, text=True)
    return listed.returncode == 0 and bool(listed.stdout.strip())


def held_trials(storage, name):
    """The trials study `name` holds in `storage` ([] when there is no such study yet)."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return []
    return storage.get_all_trials(study_id, deepcopy=False)


def resumed_sampler_settings(settings, held):
    """The sampler settings of a study continued with `held` trials in it: a seeded sampler (but the grid and QMC
    ones, which find their next point from the study's trials) seeded with seed + held, so that it does not draw
    again the points it drew for the first trials, and a search continued twice draws the same ones."""
    if not held or settings.get("seed") is None or settings.get("name") in ("grid", "qmc"):
        return settings
    return {**settings, "seed": (settings["seed"] + held) % SEED_LIMIT}


def resume_plan(study, space, config, job_config, every=False):
    """(trials to launch again, trials lost) among the study's RUNNING trials whose search process is gone
    (OWNER_ATTR: a search killed mid-trial; a trial without it, asked by an older search, is taken as gone);
    `every`: all of them (every worker of the search has returned, so none runs them).

    A trial whose job folder holds a checkpoint of its config (checkpoint.json, RUNNING or FINISHED) is launched
    again with its params and number: run_job continues its run from the checkpoint, bit for bit, or keeps the
    finished one, and the trial is told as usual. One without is lost: nothing can continue it."""
    resumed, lost = [], []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not every and run_owner.owner_gone(trial.system_attrs.get(OWNER_ATTR, {})) is False:
            continue  # another search, alive, is running it
        if set(trial.params) != set(space.distributions):
            lost.append((trial, "the search space has changed since it was asked"))
            continue
        folder, sha = job_checkpoint(config, space.overrides(trial.params), trial.number, job_config)
        meta = checkpoint.read_meta(folder) if folder is not None else None
        if meta is not None and meta.get("config_sha256") == sha and meta.get("status") in (
                checkpoint.RUNNING, checkpoint.FINISHED):
            resumed.append(trial)
        else:
            owner = trial.system_attrs.get(OWNER_ATTR, {})
            lost.append((trial, f"{owner_words(owner)} ended during this trial, before its job wrote a checkpoint "
                                "to resume from"))
    return resumed, lost


def owner_words(owner):
    """Who asked a trial, for the reason it was lost: "the search's process (pid 1 on vm)", or its worker's."""
    if "worker" in owner:  # _workers.WORKER_KEY: a worker job asked it
        slurm = f", Slurm job {owner['slurm_job']}" if owner.get("slurm_job") else ""
        return f"its worker {owner['worker']} ({run_owner.describe_owner(owner)}{slurm})"
    return f"the search's process ({run_owner.describe_owner(owner)})"


def job_config(hydra_context, config, overrides, number):
    """The config Hydra's launchers compose for the sweep's job `number` with `overrides` (its folder, its
    fingerprint)."""
    composed = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(composed):
        composed.hydra.job.id = number
        composed.hydra.job.num = number
    return composed


def job_checkpoint(config, overrides, number, job_config):
    """(job `number`'s folder, its config's fingerprint) as Hydra's launcher makes them; (None, None) unknown."""
    if job_config is None:
        return None, None
    cfg = job_config(overrides, number)
    folder = Path(str(config.hydra.runtime.cwd), str(config.hydra.sweep.dir), str(cfg.hydra.sweep.subdir))
    return folder, checkpoint.config_sha256(cfg)


def fail_lost(study, storage, name, lost, config):
    """Tell FAIL for a trial lost with the search's process (`lost`: (trial, reason)), the reason in its user
    attribute LOST_ATTR, and end its child run (if it has one, left RUNNING) FAILED with the reason."""
    trial, reason = lost
    optuna_private.set_trial_attr(storage, name, trial.number, LOST_ATTR, reason)
    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
    log.warning(f"trial {trial.number}: FAIL ({reason})")
    fail_child_run(config, trial.number, reason)


def fail_child_run(config, number, reason):
    """End the child run of trial `number` in the sweep's parent run FAILED with `reason`, if it is RUNNING with
    its process gone (a search whose jobs do not log to MLflow, or whose parent is not known, has none)."""
    tracking_uri = OmegaConf.select(config, "tracking.uri")
    sweep_file = Path(str(config.hydra.runtime.cwd), str(config.hydra.sweep.dir), SWEEP_FILE)
    if tracking_uri is None or not sweep_file.exists():
        return
    client = mlflow_client()
    parent = client.get_run(tracking_uri, json.loads(sweep_file.read_text())["parent_run_id"])
    for child in client.child_runs(tracking_uri, parent):
        if (child.data.tags.get(TRIAL_NUMBER_TAG) == str(number) and child.info.status == "RUNNING"
                and run_owner.owner_gone(child.data.tags) is not False):
            client.fail_run(tracking_uri, child.info.run_id, reason)


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
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
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
        study.tell(trial.number, value, state=state)
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


def counted_failures(trials):
    """How many of `trials` failed in their job: FAIL, but not lost with a search's or worker's process (LOST_ATTR),
    which does not count against max_failure_rate."""
    return sum(1 for t in trials if t.state == TrialState.FAIL and LOST_ATTR not in t.user_attrs)


def stop_if_too_many_failed(failed, settings, n_trials, job):
    """Raise the failed `job`'s error (raise_failure) once `failed` trials are more than max_failure_rate allows."""
    if failed > settings["max_failure_rate"] * n_trials:
        log.error(f"{failed} of {n_trials} trials failed, more than max_failure_rate={settings['max_failure_rate']} "
                  "allows")
        raise_failure(job)


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

"""A search run by three worker jobs on a real Slurm (one job array; tests/slurm_cluster.py), one of them preempted
with USR2 mid-trial: real `nn-run -m`, real signals, submitit's requeue, a real MLflow SQLite store the jobs reach
(a file: a server logs a child ~10x slower here, see tests/test_batched_slurm.py), Optuna's SQLite study."""

import json
import multiprocessing
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor

import optuna
import pytest
from conftest import NN_RUN, runs_of
from optuna.trial import TrialState
from slurm_cluster import slurm  # noqa: F401 (fixture)
from test_slurm import diagnostics, state_is, uninterrupted, wait_for

from hydra_plugins.nn_runner_optuna_sweeper._search import OWNER_ATTR
from hydra_plugins.nn_runner_optuna_sweeper._workers import SLURM_KEY, WORKER_KEY
from runner import checkpoint
from runner.tracking import record

LONG = 1_000_000  # iterations of the one long trial (~6-15 s here); the others 2,000-14,000 (well under a second)
# random sampler seed 1003 (found by drawing each worker's sequence as _workers.worker_sampler seeds it): worker 0's
# first trial is the long one; none of its next 12 draws after a requeue, nor the first 12 of workers 1 and 2, is
SEARCH = ["hydra.sweeper.workers=3", "hydra.sweeper.n_trials=24", "hydra.sweeper.sampler.name=random",
          "hydra.sweeper.sampler.seed=1003",
          f"train.iterations=choice(2000,4000,6000,8000,10000,12000,14000,{LONG})", "train.lr=tag(log,interval(0.3,3))",
          "train.log_every=2000", "tracking.log_model=false", "hydra.callbacks.sweep_tracking.compare=false"]
SWEEP_TIMEOUT = 600


def study_trials(sweep_dir):
    try:
        return optuna.load_study(storage=f"sqlite:///{sweep_dir / 'optuna.db'}", study_name=str(sweep_dir)).trials
    except KeyError:  # the sweeper has not made the study yet
        return []


def long_trial_training(sweep_dir):
    """The long trial once its job trains (its checkpoint.json says RUNNING), else None."""
    if not (sweep_dir / ".submitit").exists():  # the workers are launched once the study exists: opening its
        return None  # storage before that would make its tables too, beside the sweeper (a UNIQUE constraint fails)
    for trial in study_trials(sweep_dir):
        if trial.state == TrialState.RUNNING and trial.params.get("train.iterations") == LONG:
            meta = checkpoint.read_meta(sweep_dir / str(trial.number))
            if meta is not None and meta.get("status") == checkpoint.RUNNING:
                return trial
    return None


@pytest.mark.slow
def test_three_slurm_workers_fill_24_trials_and_a_preempted_worker_resumes_its_trial_bit_for_bit(
        slurm, tracking_uri, experiment, client, tmp_path):
    sweep_dir, output = tmp_path / "search", tmp_path / "search.log"
    began = time.monotonic()
    with open(output, "w") as log:
        sweep = subprocess.Popen(
            [*NN_RUN, "-m", "hydra/sweeper=nn_optuna", "hydra/launcher=submitit_slurm",
             f"hydra.launcher.partition={slurm.partition}", "hydra.launcher.timeout_min=60",  # USR2: a preemption
             f"hydra.sweep.dir={sweep_dir}", f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}",
             *SEARCH], cwd=tmp_path, env=slurm.env, stdout=log, stderr=subprocess.STDOUT, text=True)
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            trial = wait_for("the long trial training", lambda: long_trial_training(sweep_dir), seconds=180)
            owner = trial.system_attrs[OWNER_ATTR]
            job = owner[SLURM_KEY]
            assert owner[WORKER_KEY] == 0 and job.endswith("_0"), owner  # the array's first task
            run_id = checkpoint.read_meta(sweep_dir / str(trial.number))["run_id"]
            expected = pool.submit(uninterrupted, [f"train.iterations={LONG}", "train.log_every=2000",
                                                   f"train.lr={trial.params['train.lr']}"])
            time.sleep(1.0)  # into its training
            slurm.cancel(job, "USR2")  # what Slurm sends before preempting a job
            wait_for("the worker requeued", lambda: state_is(slurm, job, "PENDING"), seconds=120)
            slurm.requeue_now(job)  # else Slurm starts it ~2 minutes later
            code = sweep.wait(timeout=SWEEP_TIMEOUT)
            seconds = time.monotonic() - began
            assert code == 0, f"nn-run -m exited with {code}"
            wait_for("the worker COMPLETED", lambda: state_is(slurm, job, "COMPLETED"), seconds=30)
            assert slurm.job(job)["Restarts"] == "1"
        except (AssertionError, ValueError, subprocess.TimeoutExpired) as error:
            text = output.read_text(errors="replace")
            raise AssertionError(f"{error}\n--- nn-run -m ---\n{text[-3000:]}\n{diagnostics(slurm, sweep_dir)}") \
                from error
        finally:
            if sweep.poll() is None:
                sweep.kill()
                sweep.wait()
        weights, points = expected.result()
    print(f"3 Slurm workers, 24 trials, one preempted and requeued: {seconds:.1f} s")

    # the workers were one Slurm array of three tasks
    tasks = sorted(j["id"] for j in slurm.squeue() if j["id"].startswith(job.split("_")[0] + "_"))
    assert tasks == [f"{job.split('_')[0]}_{n}" for n in range(3)], slurm.squeue()
    trials = study_trials(sweep_dir)
    assert [t.number for t in trials] == list(range(24)) and {t.state for t in trials} == {TrialState.COMPLETE}
    assert sum(t.params["train.iterations"] == LONG for t in trials) == 1

    runs = runs_of(client, experiment)
    (parent,) = [r for r in runs if record.SWEEP_ID_TAG in r.data.tags]
    children = [r for r in runs if r is not parent]
    assert parent.info.status == "FINISHED" and parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == 24
    assert all(r.info.status == "FINISHED" and r.data.tags["mlflow.parentRunId"] == parent.info.run_id
               for r in children)
    by_number = {int(r.data.tags[record.TRIAL_NUMBER_TAG]): r for r in children}
    assert len(children) == len(by_number) == 24
    for t in trials:
        assert by_number[t.number].data.metrics[record.final_metric(record.ERROR_METRIC)] == t.value

    # the preempted trial: one child, the run its job opened, continued from its checkpoint bit for bit
    resumed = [r for r in children if record.RESUMED_AT_TAG in r.data.tags]
    assert [r.info.run_id for r in resumed] == [run_id] == [by_number[trial.number].info.run_id]
    (step,) = json.loads(resumed[0].data.tags[record.RESUMED_AT_TAG])
    assert 0 < step < LONG
    assert resumed[0].data.tags[record.WEIGHTS_HASH_TAG] == record.weights_sha256(weights)
    history = client.get_metric_history(run_id, record.ERROR_METRIC)
    assert sorted((m.step, m.value) for m in history) == points
    assert trials[trial.number].value == points[-1][1]
    # the requeued worker took its trial back (then went on asking)
    said = "".join(p.read_text(errors="replace") for p in (sweep_dir / ".submitit").glob("*/*_log.out"))
    assert "worker 0 (" in said and f"Slurm job {job}): takes back trial {trial.number}" in said

"""A search run by worker jobs (hydra.sweeper.workers=N) sharing one study: real `nn-run -m` processes, submitit's
local executor (real processes, real pickling of the worker loop), a real MLflow SQLite store, Optuna's SQLite study.
The same on a real Slurm, with a worker preempted (USR2): tests/test_search_workers_slurm.py."""

import json
import os
import signal
import subprocess
import time

import optuna
import pytest
from conftest import NN_RUN, runs_of
from optuna.trial import TrialState
from servers import study_storage  # noqa: F401 (fixture)

from hydra_plugins.nn_runner_optuna_sweeper._search import OWNER_ATTR
from hydra_plugins.nn_runner_optuna_sweeper._workers import LAUNCH_KEY, WORKER_KEY
from runner import checkpoint, exit_codes
from runner.tracking import record

# uneven trials on the seed table: a few hundred to several thousand iterations
UNEVEN = ["train.iterations=choice(300,1000,3000,6000)", "train.log_every=300", "train.lr=tag(log,interval(0.1,10))"]


def nn_run_m(cwd, *args, timeout=300):
    return subprocess.run([*NN_RUN, "-m", "hydra/sweeper=nn_optuna", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def assert_one_child_per_trial(client, experiment, trials):
    """One parent FINISHED; each trial exactly one FINISHED child run under it, with the trial's params and value."""
    runs = runs_of(client, experiment)
    (parent,) = [r for r in runs if record.SWEEP_ID_TAG in r.data.tags]
    children = [r for r in runs if r is not parent]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == len(trials)
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert all(r.info.status == "FINISHED" for r in children)
    by_number = {int(r.data.tags[record.TRIAL_NUMBER_TAG]): r for r in children}
    assert len(children) == len(by_number) == len(trials) and sorted(by_number) == [t.number for t in trials]
    for trial in trials:
        run = by_number[trial.number]
        assert run.data.params["train.iterations"] == str(trial.params["train.iterations"])
        assert float(run.data.params["train.lr"]) == trial.params["train.lr"]
        assert run.data.metrics[record.final_metric(record.ERROR_METRIC)] == trial.value
    return parent, by_number


@pytest.mark.slow
def test_three_submitit_local_workers_fill_the_study_with_one_child_run_per_trial(tmp_path, tracking_uri,
                                                                                  experiment, client, study_storage):
    storage = [f"hydra.sweeper.storage={study_storage}"] if study_storage else []
    done = nn_run_m(tmp_path, "hydra/launcher=submitit_local", "hydra.sweeper.workers=3", "hydra.sweeper.n_trials=7",
                    "hydra.sweeper.sampler.name=random", "hydra.sweeper.sampler.seed=5", "hydra.sweep.dir=search",
                    *storage, f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}", *UNEVEN)
    assert done.returncode == 0, done.stderr[-3000:]
    url = study_storage or f"sqlite:///{tmp_path / 'search' / 'optuna.db'}"
    assert (tmp_path / "search" / "optuna.db").exists() == (study_storage is None)
    trials = optuna.load_study(storage=url, study_name="search").trials
    assert [t.number for t in trials] == list(range(7)) and {t.state for t in trials} == {TrialState.COMPLETE}
    owners = [t.system_attrs[OWNER_ATTR] for t in trials]
    assert len({o[LAUNCH_KEY] for o in owners}) == 1 and {o[WORKER_KEY] for o in owners} <= {0, 1, 2}
    assert len({(o[WORKER_KEY], o["pid"]) for o in owners}) == len({o[WORKER_KEY] for o in owners})  # a process each
    parent, children = assert_one_child_per_trial(client, experiment, trials)
    # each trial in its own job folder (hydra.job.num = its number); the workers in theirs
    assert {run.data.tags[record.HYDRA_OUTPUT_DIR_TAG] for run in children.values()} == {
        str(tmp_path / "search" / str(n)) for n in range(7)}
    assert sorted(p.name for p in (tmp_path / "search" / "workers").iterdir()) == ["0", "1", "2"]
    # three submitit jobs, one array; the worker lines in their logs
    logs = "".join(p.read_text() for p in (tmp_path / "search" / ".submitit").glob("*/*_log.out"))
    assert sorted(int(line.split(" trials, ")[0].rsplit(": ", 1)[1]) for line in logs.splitlines()
                  if " trials, the study holds 7" in line) == sorted(
        sum(1 for o in owners if o[WORKER_KEY] == w) for w in range(3))
    best = min(trials, key=lambda t: t.value)
    assert (tmp_path / "search" / "optimization_results.yaml").read_text().count(f"best_trial: {best.number}") == 1


@pytest.mark.parametrize("args, message", [
    (["hydra/launcher=joblib", "hydra.sweeper.workers=-1"],
     "hydra.sweeper.workers=-1 is not allowed: must be null or 0 (batches of n_jobs) or the number of worker jobs (>= 1)"),
    (["hydra.sweeper.workers=2"],
     "hydra.sweeper.workers=2 is not allowed with hydra/launcher=basic: workers run as jobs at the same time, on "
     "submitit_local, submitit_slurm, joblib"),
    (["hydra/launcher=batched", "hydra.sweeper.workers=2"],
     "hydra.sweeper.workers=2 is not allowed with hydra/launcher=batched: workers run as jobs at the same time, on "
     "submitit_local, submitit_slurm, joblib"),
], ids=["negative", "basic", "batched"])
def test_a_bad_workers_value_stops_the_search_in_one_line_before_any_run_or_folder(tmp_path, args, message):
    done = nn_run_m(tmp_path, "train.lr=interval(0.1,1)", *args, "tracking.uri=sqlite:///store.db",
                    "train.iterations=20")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"nn-run: the sweep cannot start: {message}"]
    assert list(tmp_path.iterdir()) == []  # no store (so no parent run), no sweep folder


LONG = 1_000_000  # iterations (~6-15 s here)
# by the worker to kill: (random sampler seed, n_trials, the other trials' iterations), each worker's sequence drawn
# as _workers.worker_sampler seeds it. Seed 51: worker 1's first trial is the long one, none of worker 0's first 7
# is. Seed 209: worker 0's first is, none of worker 1's first 20; worker 1's 7 trials of 600,000-900,000 iterations
# (~30 s here) outlast the 15 s submitit takes to report the dead worker 0: the search must wait for them
DYING_CASES = {1: (51, 6, "2000,4000,6000,8000"), 0: (209, 8, "600000,700000,800000,900000")}
DYING = ["hydra/launcher=submitit_local", "hydra.sweeper.workers=2",
         "hydra.sweeper.sampler.name=random", "hydra.sweep.dir=search", "train.log_every=2000",
         "tracking.log_model=false"]


@pytest.mark.slow
@pytest.mark.parametrize("dying", [1, 0], ids=["worker 1", "worker 0"])
def test_a_worker_killed_mid_trial_is_a_lost_job_and_the_search_run_again_resumes_its_trial(tmp_path, tracking_uri,
                                                                                           experiment, client, dying):
    """submitit reads the workers' results in order: worker 1 dead is reported once worker 0 has returned, worker 0
    dead at once, while worker 1 still fills the study; the search ends after it either way."""
    seed, n_trials, others = DYING_CASES[dying]
    cmd = [*NN_RUN, "-m", "hydra/sweeper=nn_optuna", *DYING, f"hydra.sweeper.sampler.seed={seed}",
           f"hydra.sweeper.n_trials={n_trials}", f"train.iterations=choice({others},{LONG})",
           "train.lr=tag(log,interval(0.3,3))",  # after train.iterations: the sampler draws them in this order
           f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"]
    sweep = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    storage = f"sqlite:///{tmp_path / 'search' / 'optuna.db'}"
    try:
        deadline, trial = time.monotonic() + 180, None
        while trial is None and time.monotonic() < deadline:
            time.sleep(0.3)
            if (tmp_path / "search" / ".submitit").exists():  # the study exists once the workers are launched
                # a trial just asked is RUNNING before Optuna's storage holds its parameters: .get, not []
                trial = next((t for t in optuna.load_study(storage=storage, study_name="search").trials
                              if t.state == TrialState.RUNNING and t.params.get("train.iterations") == LONG
                              and checkpoint.read_meta(tmp_path / "search" / str(t.number)) is not None), None)
        assert trial is not None, f"worker {dying}'s long trial did not start"
        owner = trial.system_attrs[OWNER_ATTR]
        assert owner[WORKER_KEY] == dying
        time.sleep(1.0)  # into its training
        os.kill(int(owner["pid"]), signal.SIGKILL)  # the worker's process: an OOM kill, a lost node
        out, err = sweep.communicate(timeout=300)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    # the other worker filled the study; the dead one is a lost job, as in any sweep
    assert sweep.returncode == exit_codes.FAILED, err[-3000:]
    trials = optuna.load_study(storage=storage, study_name="search").trials
    assert len(trials) == n_trials and trials[trial.number].state == TrialState.RUNNING  # a checkpoint: resumable
    assert {t.state for t in trials if t.number != trial.number} == {TrialState.COMPLETE}
    runs = runs_of(client, experiment)
    (parent,) = [r for r in runs if record.SWEEP_ID_TAG in r.data.tags]
    (lost,) = [r for r in runs if r.data.tags.get(record.TRIAL_NUMBER_TAG) == str(trial.number)]
    assert parent.info.status == "FAILED" and parent.data.metrics[record.CHILDREN_FAILED_METRIC] == 1
    assert parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == n_trials - 1  # the other worker's, all counted
    assert all(r.info.status != "RUNNING" and r.info.end_time <= parent.info.end_time for r in runs)  # none after
    assert lost.info.status == "FAILED" and lost.data.tags["error"].startswith(
        f"its process (pid {owner['pid']} on ") and "the launcher reported" in lost.data.tags["error"]
    assert f"nn-run: job {lost.info.run_name}: lost: {lost.data.tags['error']}" in err.splitlines(), err[-3000:]
    if dying == 0:
        return  # running the search again resumes the trial whichever worker died: once is enough (worker 1's)

    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = optuna.load_study(storage=storage, study_name="search").trials
    assert [t.number for t in trials] == list(range(n_trials)) and {t.state for t in trials} == {TrialState.COMPLETE}
    _, children = assert_one_child_per_trial(client, experiment, trials)
    resumed = children[trial.number]
    assert resumed.info.run_id == lost.info.run_id and json.loads(resumed.data.tags[record.RESUMED_AT_TAG])
    assert f"continued: {n_trials - 1} trials kept, 1 resumed, 0 lost" in again.stderr + again.stdout
    # submitit's jobs: the 2 workers, then the resumed trial as an ordinary job, and no worker for a full study
    assert len(list((tmp_path / "search" / ".submitit").glob("*/*_submitted.pkl"))) == 3

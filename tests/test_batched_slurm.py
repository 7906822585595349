"""The batched launcher's shares as submitit jobs (`hydra.launcher.executor=slurm|local`): a real single-node
Slurm (tests/slurm_cluster.py) and submitit's local executor, with a real SQLite store the jobs reach (a file
here; an `mlflow server` works the same, but logs a child ~10x slower here: 2-3 s, which 256 children cannot
afford in the suite; tests/test_slurm.py runs its jobs against one).

Each child must be the run its config gives alone: its weights np.array_equal to runner.job.train_job's
(the single-network code path), trained in this process.
"""

import subprocess
from functools import partial

import numpy as np
import pytest
from conftest import NN_RUN, compose_config, runs_of
from slurm_cluster import slurm  # noqa: F401 (fixture)
from test_slurm import diagnostics, state_is, wait_for

from runner.job import load_data, train_job
from runner.tracking import record

SEEDS = 256
TRAIN = ["train.iterations=2000", "train.log_every=1000"]  # a second of stacked training per 128 networks
# the children's weights are the point: no logged model (~50 ms a child), no ranking of 256 runs at the end
LEAN = ["tracking.log_model=false", "hydra.callbacks.sweep_tracking.compare=false"]
SWEEP_TIMEOUT = 420  # measured here: 256 seeds in 2 Slurm jobs, one preempted and requeued: ~50 s at load 3, ~2 min at 6


def single_runs(seeds):
    """{seed: weights} of each config trained alone through runner.job.train_job, as nn-run trains one job."""
    cfg = compose_config(*TRAIN)
    data, weights = load_data(cfg.dataset), {}
    for seed in seeds:
        cfg.seed = seed  # the config `seed=N` composes to (it is the only value that differs)
        weights[seed] = [w.copy() for w in train_job(cfg, data, lambda step, scores: None).weights]
    return weights


def stored_weights(client, folder, run):
    """The weights a run logged, as the store holds them."""
    path = client.download_artifacts(run.info.run_id, record.WEIGHTS_DIR, str(folder / run.info.run_id))
    return record.read_weights(path.rsplit("/", 1)[0])


def sweep_runs(client, experiment):
    everything = runs_of(client, experiment)
    (parent,) = [r for r in everything if record.SWEEP_ID_TAG in r.data.tags]
    return parent, [r for r in everything if r is not parent]


def assert_children_are_single_runs(parent, children, expected, read_weights):
    assert parent.info.status == "FINISHED", parent.data.tags
    assert parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == len(expected)
    assert parent.data.metrics[record.CHILDREN_FAILED_METRIC] == 0
    assert sorted(int(c.data.params["seed"]) for c in children) == sorted(expected)  # each job once
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    for child in children:
        weights, alone = read_weights(child), expected[int(child.data.params["seed"])]
        assert len(weights) == len(alone) == 2
        assert all(np.array_equal(a, b) for a, b in zip(weights, alone)), child.data.params["seed"]
        assert child.data.tags[record.WEIGHTS_HASH_TAG] == record.weights_sha256(alone)


@pytest.mark.slow
def test_256_seeds_are_two_slurm_jobs_and_a_preempted_one_resumes_with_the_same_bits(
        slurm, tracking_uri, experiment, client, tmp_path):
    sweep_dir, earlier = tmp_path / "sweep", {j["id"] for j in slurm.squeue()}
    log = open(tmp_path / "nn-run.log", "w")
    sweep = subprocess.Popen(
        [*NN_RUN, "-m", "hydra/launcher=batched", "hydra.launcher.executor=slurm", "hydra.launcher.n_jobs=2",
         f"hydra.launcher.partition={slurm.partition}",
         # above 10 minutes: submitit calls a USR2 in the first minutes a preemption (docs/slurm.md)
         "hydra.launcher.timeout_min=60", f"hydra.sweep.dir={sweep_dir}", f"seed=range(0,{SEEDS})", *TRAIN, *LEAN,
         f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"],
        cwd=tmp_path, env=slurm.env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        expected = single_runs(range(SEEDS))  # meanwhile, in this process

        def first_child_finished():  # share 0 (Slurm array task _0) logs seeds 0-127 in order
            found = client.get_experiment_by_name(experiment)
            return found is not None and client.search_runs(
                [found.experiment_id], "params.seed = '0' and attributes.status = 'FINISHED'", max_results=1)

        wait_for("seed 0's child FINISHED", first_child_finished, seconds=180)
        (job,) = [j["id"] for j in slurm.squeue() if j["id"] not in earlier and j["id"].endswith("_0")]
        slurm.cancel(job, "USR2")  # mid-logging: the child being logged ends, then submitit requeues the job
        wait_for("requeued job", lambda: state_is(slurm, job, "PENDING"))
        before = {r.info.run_id: r.info.end_time for r in runs_of(client, experiment)
                  if record.SWEEP_ID_TAG not in r.data.tags and r.info.status == "FINISHED"}
        slurm.requeue_now(job)  # else Slurm starts it ~2 minutes later
        code = sweep.wait(timeout=SWEEP_TIMEOUT)
        assert code == 0, f"nn-run -m exited with {code}"
        tasks = [j for j in slurm.squeue() if j["id"] not in earlier]
        wait_for("both jobs COMPLETED", lambda: {j["state"] for j in slurm.squeue() if j["id"] not in earlier}
                 == {"COMPLETED"}, seconds=30)
    except (AssertionError, ValueError, subprocess.TimeoutExpired) as error:
        output = (tmp_path / "nn-run.log").read_text(errors="replace")
        raise AssertionError(f"{error}\nsqueue: {slurm.squeue()}\n--- nn-run -m ---\n{output[-3000:]}\n"
                             f"{diagnostics(slurm, sweep_dir)}") from error
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
        log.close()

    # 256 jobs were two Slurm jobs: one array of two tasks, the preempted one started twice
    assert sorted(j["id"].rsplit("_", 1)[1] for j in tasks) == ["0", "1"], tasks
    assert slurm.job(job)["Restarts"] == "1"
    parent, children = sweep_runs(client, experiment)
    assert parent.data.tags[record.LAUNCHER_TAG] == "batched"
    assert len(children) == SEEDS  # nothing logged twice
    # the children logged before the requeue are kept as they were; share 0 logged the others after it
    kept = {c.info.run_id: c.info.end_time for c in children if c.info.run_id in before}
    assert kept == before
    assert 0 < sum(int(c.data.params["seed"]) < SEEDS // 2 for c in children if c.info.run_id in before) < SEEDS // 2

    assert_children_are_single_runs(parent, children, expected, partial(stored_weights, client, tmp_path))


def test_a_local_executor_sweep_runs_each_share_as_a_submitit_job(tmp_path, tracking_uri, experiment, client):
    seeds = range(5)
    sweep_dir = tmp_path / "sweep"
    done = subprocess.run(
        [*NN_RUN, "-m", "hydra/launcher=batched", "hydra.launcher.executor=local", "hydra.launcher.n_jobs=2",
         f"hydra.sweep.dir={sweep_dir}", f"seed=range(0,{len(seeds)})", *TRAIN, *LEAN, f"tracking.uri={tracking_uri}",
         f"tracking.experiment={experiment}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=SWEEP_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Training 5 networks together: jobs #0, #1, #2, #3, #4" in done.stdout
    (line,) = [line for line in done.stdout.splitlines() if "Submitted 2 submitit local jobs" in line]
    jobs = line.rsplit(": ", 1)[1].split(", ")
    # each job ran its share in a process of its own: its result file holds its jobs' JobReturns
    assert all((sweep_dir / ".submitit" / job / f"{job}_0_result.pkl").exists() for job in jobs)
    parent, children = sweep_runs(client, experiment)

    assert_children_are_single_runs(parent, children, single_runs(seeds), partial(stored_weights, client, tmp_path))

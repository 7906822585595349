"""nn-run on a real Slurm: a throwaway single-node cluster (tests/slurm_cluster.py) and a real `mlflow server`.

The cluster has accounting (slurmdbd over its own MariaDB), so submitit sees from `sacct` that a
job ended without its result (scancel, a time limit). Skipped, with the reason, where Debian's
slurmctld/slurmd/slurmdbd/slurm-client/munge/mariadb-server are not installed (`.ci/run` installs
them) or the tests do not run as root.
"""

import json
import multiprocessing
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import NN_RUN, compose_config, runs_of
from servers import mlflow_server
from slurm_cluster import (  # noqa: F401 (fixture)
    pid_alive,
    read_pid,
    slurm,
    slurm_cluster,
    slurm_missing,
    step_daemons,
)

from runner import checkpoint, exit_codes
from runner.tracking import record

SWEEP_TIMEOUT = 240  # measured here: 15-18 s for the 3-job sweep below (2 CPUs: two jobs, then the third)
WAIT_SECONDS = 60
PREEMPTED_SWEEP_TIMEOUT = 300


def wait_for(what, check, seconds=WAIT_SECONDS):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no {what} within {seconds} s")


def state_is(cluster, job, state):
    return [j["state"] for j in cluster.squeue(job)] == [state]


def task_pids(program, *args):
    """PIDs of live processes running `program` (any path to it) with exactly these arguments."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")[:-1]
        except (OSError, UnicodeDecodeError):
            continue
        if argv and Path(argv[0]).name == program and argv[1:] == list(args):
            found.append(int(entry.name))
    return [pid for pid in found if pid_alive(pid)]


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A real `mlflow server` on loopback with a SQLite store; yields its url."""
    folder = tmp_path_factory.mktemp("slurm-server")
    with mlflow_server(f"sqlite:///{folder}/mlflow.db", folder) as (url, _artifacts):
        yield url


def test_the_cluster_runs_a_job_requeues_it_at_once_and_stops_leaving_no_daemon(tmp_path):
    reason = slurm_missing()
    if reason:
        pytest.skip(reason)
    with slurm_cluster(tmp_path / "cluster") as cluster:
        assert cluster.node_state() == "idle" and cluster.env["SLURM_CONF"] == str(cluster.conf)
        daemons = ("slurmctld", "slurmd", "slurmdbd", "mariadb")
        pids = {name: read_pid(cluster.folder / f"{name}.pid") for name in daemons}
        assert all(pid_alive(pid) for pid in pids.values())
        out = cluster.run("sbatch", "--parsable", "--requeue", "-o", str(tmp_path / "job-%j.out"),
                          "--wrap", "srun sleep 317").stdout
        job = out.strip().split(";")[0]
        wait_for("running job", lambda: state_is(cluster, job, "RUNNING"))

        # a requeued job waits for its BeginTime (~2 minutes); requeue_now makes it eligible at once
        cluster.run("scontrol", "requeue", job)
        wait_for("requeued job", lambda: state_is(cluster, job, "PENDING"))
        assert cluster.job(job)["Restarts"] == "1"
        cluster.requeue_now(job)
        wait_for("restarted job", lambda: state_is(cluster, job, "RUNNING"), seconds=30)
        # accounting (slurmdbd) has it too: what submitit asks when a job ends without its result
        wait_for("the job in sacct", lambda: [r["state"] for r in cluster.sacct(job)] == ["RUNNING"], seconds=30)
        tasks = wait_for("job's task", lambda: task_pids("sleep", "317"))
        # leaving the block with the job still running: its steps are cancelled, the daemons stopped
    assert not any(pid_alive(pid) for pid in pids.values())
    assert step_daemons(tmp_path / "cluster") == []
    assert [pid for pid in tasks if pid_alive(pid)] == []
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "cluster")], capture_output=True, text=True).stdout
    assert [pid for pid in map(int, left.split()) if pid_alive(pid)] == []  # zombies wait for init to reap them


def assert_equals_uninterrupted(client, run, weights, points, folder):
    """The run's weights hash, stored weights and error history are the uninterrupted run's, bit for bit."""
    assert run.data.tags[record.WEIGHTS_HASH_TAG] == record.weights_sha256(weights)
    stored = record.read_weights(client.download_artifacts(run.info.run_id, record.WEIGHTS_DIR, str(folder))
                                 .rsplit("/", 1)[0])
    assert len(stored) == len(weights) and all(np.array_equal(a, b) for a, b in zip(stored, weights))
    history = client.get_metric_history(run.info.run_id, record.ERROR_METRIC)
    assert sorted((m.step, m.value) for m in history) == points  # each step once, the same bits


def diagnostics(cluster, sweep_dir):
    logs = [cluster.logs()]
    for log in sorted(sweep_dir.glob(".submitit/*/*_log.*"))[-6:]:
        logs.append(f"--- {log} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
    return "\n".join(logs)


@pytest.mark.slow
def test_a_submitit_slurm_sweep_lands_three_finished_children_under_one_parent(slurm, tracking_server, tmp_path,
                                                                             experiment):
    import mlflow

    sweep_dir = tmp_path / "sweep"
    began = time.monotonic()
    done = subprocess.run(
        [*NN_RUN, "-m", "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={slurm.partition}",
         "hydra.launcher.timeout_min=10", f"hydra.sweep.dir={sweep_dir}", "seed=1,2,3",
         "train.iterations=200", "train.log_every=100", f"tracking.uri={tracking_server}",
         f"tracking.experiment={experiment}"],
        cwd=tmp_path, env=slurm.env, capture_output=True, text=True, timeout=SWEEP_TIMEOUT)
    seconds = time.monotonic() - began
    assert done.returncode == 0, done.stderr[-3000:] + diagnostics(slurm, sweep_dir)
    print(f"3-job submitit_slurm sweep: {seconds:.1f} s")

    # the jobs were Slurm's: one array of three tasks, all COMPLETED, each with submitit's files
    def array_tasks():
        return [j for j in slurm.squeue() if "_" in j["id"]]

    jobs = array_tasks()
    assert sorted(j["id"].split("_")[1] for j in jobs) == ["0", "1", "2"], slurm.squeue()
    # submitit reads a job's result file as soon as it is written: its Slurm job may still be ending then
    wait_for("all tasks COMPLETED", lambda: {j["state"] for j in array_tasks()} == {"COMPLETED"}, seconds=30)
    array = jobs[0]["id"].split("_")[0]
    assert all((sweep_dir / ".submitit" / f"{array}_{n}" / f"{array}_{n}_0_result.pkl").exists() for n in range(3))

    client = mlflow.MlflowClient(tracking_server)
    everything = runs_of(client, experiment)
    (parent,) = [r for r in everything if record.SWEEP_ID_TAG in r.data.tags]
    children = [r for r in everything if r is not parent]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == 3
    assert parent.data.tags[record.LAUNCHER_TAG] == "submitit_slurm"
    assert parent.data.tags[record.SWEEP_DIR_TAG] == str(sweep_dir)
    assert len(children) == 3
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children)
    assert all(r.info.status == "FINISHED" for r in children)
    assert sorted(r.data.params["seed"] for r in children) == ["1", "2", "3"]
    for run in children:
        history = client.get_metric_history(run.info.run_id, record.ERROR_METRIC)
        assert sorted(m.step for m in history) == [0, 100, 200]
        assert run.data.tags[record.WEIGHTS_HASH_TAG]


def start_sweep(slurm, tmp_path, tracking_server, experiment, *overrides, name="sweep"):
    """`nn-run -m` with the submitit_slurm launcher on the test cluster, in the background; returns
    (the process, its sweep folder `tmp_path`/`name`, its output file)."""
    sweep_dir, output = tmp_path / name, tmp_path / f"{name}.log"
    with open(output, "w") as log:  # the child keeps its own copy of the file descriptor
        sweep = subprocess.Popen(
            [*NN_RUN, "-m", "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={slurm.partition}",
             f"hydra.sweep.dir={sweep_dir}", *overrides, f"tracking.uri={tracking_server}",
             f"tracking.experiment={experiment}"],
            cwd=tmp_path, env=slurm.env, stdout=log, stderr=subprocess.STDOUT, text=True)
    return sweep, sweep_dir, output


def children_of(client, experiment):
    return [r for r in runs_of(client, experiment) if record.SWEEP_ID_TAG not in r.data.tags]


def has_trained(client, run):
    """Whether `run` is RUNNING with a point beyond step 0 on the server (it trains, and flushed once)."""
    return run.info.status == "RUNNING" and any(
        m.step > 0 for m in client.get_metric_history(run.info.run_id, record.ERROR_METRIC))


def explain(error, client, experiment, slurm, sweep_dir, output):
    runs = [(r.info.run_id, r.info.status, r.data.tags.get(record.RESUMED_AT_TAG), r.data.tags.get("error"))
            for r in runs_of(client, experiment)]
    text = Path(output).read_text(errors="replace")
    return AssertionError(f"{error}\nruns: {runs}\nsqueue: {slurm.squeue()}\n--- nn-run -m ---\n"
                          f"{text[-3000:]}\n{diagnostics(slurm, sweep_dir)}")


def submitted_job(sweep_dir):
    """The Slurm job id of a one-job submitit sweep (its folder under .submitit/), once submitted."""
    folders = [p.name for p in (sweep_dir / ".submitit").glob("*") if p.is_dir()]
    return folders[0] if len(folders) == 1 else None


def uninterrupted(overrides):
    """(weights, [(step, error)]) of the config `overrides` trained in one go, as runner/job.py's
    train_job trains it (runs in a process of its own, beside the Slurm job)."""
    from runner.job import load_data, train_job

    cfg = compose_config(*overrides)
    points = []
    result = train_job(cfg, load_data(cfg.dataset), lambda step, scores: points.append((step, scores.error)))
    return [w.copy() for w in result.weights], points


# seed 3 on the seed table: ~170,000 full-batch or ~115,000 mini-batch iterations/s here, so each job
# trains ~20 s, long enough to be preempted after its first points reach the server (flushed every 10 s)
PREEMPTED = {"full-batch": (0, 4_000_000), "mini-batches": (2, 2_500_000)}  # train.batch_size, train.iterations


@pytest.mark.slow
@pytest.mark.parametrize("batching", PREEMPTED)
def test_a_job_preempted_with_usr2_resumes_its_own_run_bit_for_bit(slurm, tracking_server, tmp_path, experiment,
                                                                   batching, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    batch_size, iterations = PREEMPTED[batching]
    overrides = ["seed=3", f"train.batch_size={batch_size}", f"train.iterations={iterations}",
                 "train.log_every=250000"]
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        expected = pool.submit(uninterrupted, overrides)  # trained meanwhile, on the other CPU
        # above 10 minutes: submitit calls any USR2 before min(80%, limit - 10 min) a preemption,
        # later ones (all of them when the limit is 10 minutes or less) a time-out (max_num_timeout=0: FAILED)
        sweep, sweep_dir, output = start_sweep(slurm, tmp_path, tracking_server, experiment,
                                               "hydra.launcher.timeout_min=60", *overrides)
        client = mlflow.MlflowClient(tracking_server)
        try:
            def child():
                found = children_of(client, experiment)
                return found[0] if len(found) == 1 else None

            def status_is(status):
                return lambda: (run := child()) is not None and run.info.status == status

            wait_for("child run with a point beyond step 0",
                     lambda: (run := child()) is not None and has_trained(client, run), seconds=120)
            job = submitted_job(sweep_dir)
            signalled = time.monotonic()
            slurm.cancel(job, "USR2")  # what Slurm sends before preempting the job or at its time limit
            wait_for("child run KILLED", status_is("KILLED"))
            killed = time.monotonic()
            wait_for("requeued job", lambda: state_is(slurm, job, "PENDING"))
            requeued = time.monotonic()
            slurm.requeue_now(job)  # else Slurm starts it ~2 minutes later
            wait_for("child run RUNNING again", status_is("RUNNING"))
            running = time.monotonic()
            code = sweep.wait(timeout=PREEMPTED_SWEEP_TIMEOUT)
            ended = time.monotonic()
            assert code == 0, f"nn-run -m exited with {code}"
            wait_for("the job COMPLETED", lambda: state_is(slurm, job, "COMPLETED"), seconds=30)
            assert slurm.job(job)["Restarts"] == "1"
        except (AssertionError, ValueError, subprocess.TimeoutExpired) as error:
            raise explain(error, client, experiment, slurm, sweep_dir, output) from error
        finally:
            if sweep.poll() is None:
                sweep.kill()
                sweep.wait()
        weights, points = expected.result()
    print(f"{batching}: USR2 -> run KILLED {killed - signalled:.1f} s, -> job PENDING {requeued - signalled:.1f} s; "
          f"requeue_now -> run RUNNING {running - requeued:.1f} s (USR2 -> RUNNING {running - signalled:.1f} s); "
          f"-> sweep ended {ended - running:.1f} s")

    everything = runs_of(client, experiment)
    (parent,) = [r for r in everything if record.SWEEP_ID_TAG in r.data.tags]
    (run,) = [r for r in everything if r is not parent]  # one child: the requeued job continued it
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == 1
    assert run.info.status == "FINISHED"
    resumed_at = json.loads(run.data.tags[record.RESUMED_AT_TAG])
    assert len(resumed_at) == 1 and 0 < resumed_at[0] < iterations, resumed_at
    assert_equals_uninterrupted(client, run, weights, points, tmp_path / "dl")

    # the job's folder keeps only a note that its run finished (a resumed sweep skips it)
    folder = Path(run.data.tags[record.HYDRA_OUTPUT_DIR_TAG])
    assert folder == sweep_dir / "0"
    assert json.loads((folder / "checkpoint.json").read_text()) == {
        "run_id": run.info.run_id, "config_sha256": checkpoint.config_sha256(
            compose_config(*overrides, f"tracking.experiment={experiment}")),
        "status": "FINISHED"}
    assert not (folder / "checkpoint.npz").exists()


@pytest.mark.slow
def test_a_cancelled_job_ends_its_run_killed_with_its_points_and_the_sweep_counts_it(slurm, tracking_server, tmp_path,
                                                                                    experiment):
    import mlflow

    # ~20 s of training here: cancelled once its first points are on the server
    overrides = ["seed=3", "train.iterations=4000000", "train.log_every=250000"]
    sweep, sweep_dir, output = start_sweep(slurm, tmp_path, tracking_server, experiment,
                                           "hydra.launcher.timeout_min=60", *overrides)
    client = mlflow.MlflowClient(tracking_server)
    try:
        wait_for("child run with a point beyond step 0",
                 lambda: [r for r in children_of(client, experiment) if has_trained(client, r)], seconds=120)
        job = submitted_job(sweep_dir)
        cancelled = time.monotonic()
        slurm.cancel(job)
        # accounting tells submitit the job ended without a result: the sweep ends (without it, it waited forever)
        code = sweep.wait(timeout=120)
        ended = time.monotonic()
        (state,) = [j["state"] for j in slurm.sacct(job)]
    except (AssertionError, ValueError, subprocess.TimeoutExpired) as error:
        raise explain(error, client, experiment, slurm, sweep_dir, output) from error
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    print(f"scancel -> nn-run -m ended {ended - cancelled:.1f} s (exit {code})")
    text = output.read_text(errors="replace")
    assert state.startswith("CANCELLED"), state
    assert code == exit_codes.FAILED, text[-3000:]

    everything = runs_of(client, experiment)
    (parent,) = [r for r in everything if record.SWEEP_ID_TAG in r.data.tags]
    (run,) = [r for r in everything if r is not parent]
    assert run.info.status == "KILLED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, record.ERROR_METRIC))
    assert steps[0] == 0 and steps[-1] > 0 and steps == list(range(0, steps[-1] + 1, 250000))  # its points, kept
    meta = checkpoint.read_meta(sweep_dir / "0")
    assert meta["run_id"] == run.info.run_id and meta["status"] == "RUNNING" and meta["step"] >= steps[-1]
    assert parent.info.status != "RUNNING"
    assert parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == 0
    assert parent.data.metrics[record.CHILDREN_FAILED_METRIC] == 1  # FAILED or KILLED
    # nn-run names the child, what Slurm said, and where it resumes from
    assert (f"nn-run: job {run.info.run_name}: KILLED (the launcher reported job {job} {state}); its checkpoint at "
            f"step {meta['step']} is kept in {sweep_dir / '0'}: the same sweep into the same folder resumes it"
            ) in text.splitlines(), text[-3000:]


# Slurm's shortest time limit is a minute. Its controller checks limits every 30 s and sends the warning signal
# at the first check within signal_delay_s + 30 s of the limit: with 1 s, 29-59 s into a job's first slot, and
# ~50 s into a requeued one (it starts a few seconds after the check that requeued it). Then submitit requeues
# the job or, past max_num_timeout, does not. (signal_delay_s=10 was tried: requeued slots got ~22 s each.)
TIME_LIMIT = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=1"]
ENDLESS = ["seed=1", "train.iterations=1000000000", "train.log_every=1000000"]
TRAIN_SECONDS = 70  # the timed-out job's training at this machine's speed now: more than a first slot holds


def iterations_for(seconds, *overrides):
    """How many iterations of this config train for about `seconds` here now (the machine is shared: its
    speed changes several times over with the load), measured on 200,000 of them, in 100,000s."""
    began = time.monotonic()
    uninterrupted([*overrides, "train.iterations=200000", "train.log_every=200000"])
    return max(1, round(seconds / (time.monotonic() - began) * 2)) * 100_000


@pytest.mark.slow
def test_a_job_at_its_time_limit_resumes_its_run_bit_for_bit_and_one_past_max_num_timeout_fails(
        slurm, tracking_server, tmp_path, experiment, monkeypatch):
    import mlflow

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    client = mlflow.MlflowClient(tracking_server)
    iterations = iterations_for(TRAIN_SECONDS, "seed=3")
    timed_out = ["seed=3", f"train.iterations={iterations}", f"train.log_every={iterations // 20}"]
    # two sweeps at once, one job each (max_num_timeout is the launcher's, one value per sweep):
    # `ending` may not be requeued after a time-out (0, the default), `resuming` up to ten times (a loaded machine)
    ending, ending_dir, ending_log = start_sweep(slurm, tmp_path, tracking_server, experiment, *TIME_LIMIT,
                                                 *ENDLESS, name="ending")
    resuming, resuming_dir, resuming_log = start_sweep(slurm, tmp_path, tracking_server, experiment, *TIME_LIMIT,
                                                       "hydra.launcher.max_num_timeout=10", *timed_out, name="resuming")
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            ending_job = wait_for("the ending sweep's job", lambda: submitted_job(ending_dir), seconds=120)
            resuming_job = wait_for("the resuming sweep's job", lambda: submitted_job(resuming_dir), seconds=120)
            ending_code = ending.wait(timeout=240)
            expected = pool.submit(uninterrupted, timed_out)  # on the CPU the ending job left
            nudged = 0
            while resuming.poll() is None:
                job = slurm.job(resuming_job)
                if job["JobState"] == "PENDING" and int(job["Restarts"]) > nudged:  # requeued after its time-out
                    slurm.requeue_now(resuming_job)  # else Slurm starts it ~2 minutes later
                    nudged = int(job["Restarts"])
                assert job["TimeLimit"] == "00:01:00", job
                time.sleep(0.5)
                if nudged > 10:
                    raise AssertionError(f"job {resuming_job} restarted {nudged} times")
            resuming_code = resuming.wait()
            wait_for("the job COMPLETED", lambda: state_is(slurm, resuming_job, "COMPLETED"), seconds=30)
            restarts = int(slurm.job(resuming_job)["Restarts"])
            states = {job: slurm.sacct(job)[0]["state"] for job in (ending_job, resuming_job)}
        except (AssertionError, ValueError, subprocess.TimeoutExpired) as error:
            raise explain(error, client, experiment, slurm, resuming_dir,
                          resuming_log if ending.poll() is not None else ending_log) from error
        finally:
            for sweep in (ending, resuming):
                if sweep.poll() is None:
                    sweep.kill()
                    sweep.wait()
        weights, points = expected.result()
    everything = runs_of(client, experiment)
    parents = {r.data.tags[record.SWEEP_DIR_TAG]: r for r in everything if record.SWEEP_ID_TAG in r.data.tags}
    children = {r.data.tags[record.HYDRA_OUTPUT_DIR_TAG]: r for r in everything
                if record.SWEEP_ID_TAG not in r.data.tags}
    assert len(parents) == len(children) == 2

    # past max_num_timeout: FAILED, saying why, with its checkpoint kept
    run, parent = children[str(ending_dir / "0")], parents[str(ending_dir)]
    meta = checkpoint.read_meta(ending_dir / "0")
    assert run.info.status == "FAILED" and parent.info.status == "FAILED"
    reason = (f"StopHandlerError: SIGUSR2 at step {meta['step']}, checkpoint kept in {ending_dir / '0'}; then "
              "UncompletedJobError: Job not requeued because: timed-out too many times.")
    assert run.data.tags["error"] == reason
    assert meta["run_id"] == run.info.run_id and meta["status"] == "RUNNING" and meta["step"] > 0
    text = ending_log.read_text(errors="replace")
    assert ending_code == exit_codes.FAILED
    assert f"nn-run: job {run.info.run_name}: FAILED: {reason}" in text.splitlines(), text[-3000:]
    assert parent.data.metrics[record.CHILDREN_FAILED_METRIC] == 1

    # within max_num_timeout: each time-out requeued, each slot continued the run, bit for bit
    run, parent = children[str(resuming_dir / "0")], parents[str(resuming_dir)]
    assert resuming_code == 0, resuming_log.read_text(errors="replace")[-3000:]
    assert states[resuming_job] == "COMPLETED" and restarts >= 1
    said = [line for path in sorted((resuming_dir / ".submitit").glob("*/*_log.out"))  # submitit's own lines
            for line in path.read_text(errors="replace").splitlines() if line.startswith("submitit ")]
    assert sum("this job is timed-out" in line for line in said) == restarts, said
    assert sum(f"Requeued job {resuming_job}" in line for line in said) == restarts, said
    assert run.info.status == "FINISHED" and parent.info.status == "FINISHED"
    resumed_at = json.loads(run.data.tags[record.RESUMED_AT_TAG])
    print(f"time limit: {iterations} iterations, job {resuming_job} restarted {restarts} times, resumed at "
          f"{resumed_at}; sacct: {states}")
    assert 1 <= len(resumed_at) <= restarts and resumed_at == sorted(set(resumed_at)), resumed_at
    assert 0 < resumed_at[0] and resumed_at[-1] < iterations
    assert_equals_uninterrupted(client, run, weights, points, tmp_path / "dl")

"""nn-run on a real Slurm: a throwaway single-node cluster (tests/slurm_cluster.py) and a real `mlflow server`.

Skipped, with the reason, where Debian's slurmctld/slurmd/slurm-client/munge are not installed
(`.ci/run` installs them) or the tests do not run as root.
"""

import subprocess
import time
from pathlib import Path

import pytest
from conftest import NN_RUN, runs_of
from servers import mlflow_server
from slurm_cluster import (  # noqa: F401 (fixture)
    pid_alive,
    read_pid,
    slurm,
    slurm_cluster,
    slurm_missing,
    step_daemons,
)

from runner.tracking import record

SWEEP_TIMEOUT = 240  # measured here: 15-18 s for the 3-job sweep below (2 CPUs: two jobs, then the third)
WAIT_SECONDS = 60


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
        pids = {name: read_pid(cluster.folder / f"{name}.pid") for name in ("slurmctld", "slurmd")}
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
        tasks = wait_for("job's task", lambda: task_pids("sleep", "317"))
        # leaving the block with the job still running: its steps are cancelled, the daemons stopped
    assert not any(pid_alive(pid) for pid in pids.values())
    assert step_daemons(tmp_path / "cluster") == []
    assert [pid for pid in tasks if pid_alive(pid)] == []
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "cluster")], capture_output=True, text=True).stdout
    assert [pid for pid in map(int, left.split()) if pid_alive(pid)] == []  # zombies wait for init to reap them


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
    jobs = [j for j in slurm.squeue() if "_" in j["id"]]
    assert sorted(j["id"].split("_")[1] for j in jobs) == ["0", "1", "2"], slurm.squeue()
    assert {j["state"] for j in jobs} == {"COMPLETED"}
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

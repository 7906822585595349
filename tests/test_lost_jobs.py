"""Jobs whose process dies (SIGKILL, as the OOM killer or a Slurm memory limit does) in a real sweep:
every job is accounted for, no run is left RUNNING, and the sweep says which jobs were lost."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import NN_RUN, runs_of
from test_sweeps import ENDLESS, sweep_of

from runner.sweep.compare import running_notes
from runner.tracking import record, run_owner


def running_children(client, experiment):
    return [r for r in runs_of(client, experiment)
            if "mlflow.parentRunId" in r.data.tags and r.info.status == "RUNNING"]


def kill_a_worker_mid_job(cwd, client, experiment, *launcher):
    """Start a 4-job sweep of endless jobs on 2 workers; SIGKILL the process of one running child once both
    train. Returns (exit code, output, the killed run's id)."""
    command = [*NN_RUN, "-m", *launcher, "hydra.launcher.n_jobs=2", "seed=1,2,3,4", "train.batch_size=2",
               *ENDLESS, "tracking.log_model=false", f"tracking.uri={client.tracking_uri}",
               f"tracking.experiment={experiment}"]
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline, victim = time.monotonic() + 300, None
    while time.monotonic() < deadline and victim is None:
        running = running_children(client, experiment)
        if len(running) == 2:
            victim = running[0]
        time.sleep(0.3)
    assert victim is not None, "two jobs never ran at once"
    assert run_owner.owner_gone(victim.data.tags) is False  # its recorded owner is alive, on this host
    assert any("is RUNNING: its process (pid" in note and "is running" in note for note in running_notes([victim]))
    os.kill(int(victim.data.tags[run_owner.PID_TAG]), signal.SIGKILL)
    out = proc.communicate(timeout=300)[0]
    return proc.returncode, out, victim.info.run_id


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [["hydra/launcher=joblib"], ["hydra/launcher=batched"]], ids=["joblib", "batched"])
def test_a_killed_worker_leaves_no_run_running_and_every_job_is_named(tmp_path, tracking_uri, experiment, client,
                                                                      launcher):
    code, out, killed_id = kill_a_worker_mid_job(tmp_path, client, experiment, *launcher)
    assert code == 1, out
    assert "Traceback" not in out
    parent, children = sweep_of(client, experiment)
    assert "RUNNING" not in {c.info.status for c in children}
    killed = client.get_run(killed_id)
    assert killed.info.status == "FAILED"
    reason = killed.data.tags["error"]
    assert reason.startswith(f"its process (pid {killed.data.tags['pid']} on {killed.data.tags['host']}) "
                             "ended without closing the run; the launcher reported exit code")
    assert "SIGKILL" in reason
    assert f"nn-run: job {killed.info.run_name}: lost: {reason}" in out

    ran = {int(c.data.params["seed"]) for c in children}
    never = [seed for seed in (1, 2, 3, 4) if seed not in ran]
    assert never  # a worker died with jobs still queued
    for seed in never:
        job = seed - 1
        name = parent.data.tags[f"{record.NOT_RUN_TAG_PREFIX}{job}"]
        assert f"seed={seed}" in name and "tracking.uri" not in name
        assert f"nn-run: job #{job} ({name}): never ran" in out
    assert parent.info.status == "FAILED"
    assert parent.data.metrics[record.JOBS_NOT_RUN_METRIC] == len(never)
    assert parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == 0
    assert parent.data.metrics[record.CHILDREN_FAILED_METRIC] == len(children)


def test_nn_compare_tells_a_run_whose_process_is_gone(tracking_uri, experiment, client):
    gone = subprocess.Popen(["sleep", "0"])
    gone.wait()
    experiment_id = client.create_experiment(experiment)
    run = client.create_run(experiment_id, run_name="orphan", tags={**run_owner.owner_tags(), "pid": str(gone.pid)})
    (note,) = running_notes([client.get_run(run.info.run_id)])
    assert note == (f"run {run.info.run_id} (orphan) is RUNNING: its process (pid {gone.pid} on "
                    f"{run_owner.owner_tags()['host']}) is gone: it will never end by itself (a sweep's end "
                    "marks such runs FAILED)")
    elsewhere = client.create_run(experiment_id, run_name="remote", tags={"host": "another-node", "pid": "1"})
    (note,) = running_notes([client.get_run(elsewhere.info.run_id)])
    assert note.endswith("is not on this host: whether it still runs cannot be seen from here")


def test_nn_compare_on_a_killed_sweep_whose_runs_logged_no_point_reports_their_processes(tmp_path, tracking_uri,
                                                                                          experiment, client):
    # the basic launcher runs the job in the sweep's own process: SIGKILL leaves parent and child RUNNING, and the
    # child's points are still buffered (the first flush comes with a checkpoint, 1000 s away)
    command = [*NN_RUN, "-m", "seed=1,2", *ENDLESS, "train.checkpoint_every=1000", "tracking.log_model=false",
               f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"]
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not running_children(client, experiment):
        time.sleep(0.3)
    proc.kill()
    proc.wait(timeout=60)
    parent, (child,) = sweep_of(client, experiment)
    assert client.get_metric_history(child.info.run_id, record.ERROR_METRIC) == []

    done = subprocess.run([str(Path(sys.executable).parent / "nn-compare"), "--tracking-uri", tracking_uri,
                           "--experiment", experiment], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    host = run_owner.owner_tags()["host"]
    for run in (parent, child):
        assert (f"run {run.info.run_id} ({run.info.run_name}) is RUNNING: its process (pid {proc.pid} on {host}) is "
                "gone: it will never end by itself (a sweep's end marks such runs FAILED)") in lines
    assert (f"no run of sweep {parent.info.run_id} has logged error yet: nothing to rank, nothing logged to the "
            "parent run") in lines
    assert client.list_artifacts(parent.info.run_id) == []

"""Every sweep and every run owns its Hydra output folder, whatever else starts in the same second.

Before: three `nn-run -m seed=1,2` started together in one folder shared Hydra's default
`multirun/DATE/TIME`; the first parent run got all six children, the other two ended FAILED
with none, and all three exited 0. Two single runs shared `outputs/DATE/TIME`.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import NN_RUN, runs_of
from test_sweeps import ENDLESS, TINY

from runner import checkpoint, output_folders
from runner.sweep.callback import SWEEP_FILE
from runner.tracking import record, run_owner

# nn-run, started now but held after its imports until the file argv[1] exists and the time it holds has come:
# processes started together then compose their configs and name their folders at one instant. Hydra's clock
# (its ${now:} resolver) is pinned to that second in them, so that "in the same second" is certain, not likely,
# on a loaded machine; a job process that named its folder again would read the real clock.
TOGETHER = """\
import os, sys, time
from datetime import datetime
import hydra.core.utils
from runner.cli.run import main
print("ready", flush=True)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.002)
at = float(open(sys.argv[1]).read())

class Pinned(datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.fromtimestamp(at, tz)

hydra.core.utils.datetime = Pinned
time.sleep(max(0.0, at - time.time()))
sys.argv[1:] = sys.argv[2:]
main()
"""


def start_together(cwd, commands):
    """Start `commands` (nn-run arguments each) as processes that begin at one instant, in one second of Hydra's."""
    go = Path(cwd) / "go"
    procs = [subprocess.Popen([sys.executable, "-c", TOGETHER, str(go), *args], cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for args in commands]
    for proc in procs:
        assert proc.stdout.readline().strip() == "ready"
    at = int(time.time()) + 1.02  # just after the next whole second
    (Path(cwd) / "go.tmp").write_text(repr(at))
    (Path(cwd) / "go.tmp").rename(go)
    return procs, time.strftime("%Y-%m-%d/%H-%M-%S", time.localtime(at))


def finish(proc, timeout=600):
    try:
        out = proc.communicate(timeout=timeout)[0]
    except subprocess.TimeoutExpired:
        proc.kill()  # the test fails; the process must not outlive it
        proc.communicate()
        raise
    return proc.returncode, out


@pytest.mark.slow
def test_three_sweeps_and_two_runs_started_in_one_second_each_own_their_folder_and_runs(
        tmp_path, tracking_uri, experiment, client):
    common = [*TINY, "tracking.log_model=false", f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"]
    launchers = ["hydra/launcher=basic", "hydra/launcher=joblib", "hydra/launcher=batched"]
    sweeps = [["-m", launcher, "seed=1,2", *common] for launcher in launchers]  # one command but for the launcher
    singles = [list(common), list(common)]  # the very same command twice
    procs, second = start_together(tmp_path, [*sweeps, *singles])
    for proc in procs:
        code, out = finish(proc)
        assert code == 0, out
        assert "Traceback" not in out

    runs = runs_of(client, experiment)
    parents = [r for r in runs if record.SWEEP_ID_TAG in r.data.tags]
    singles = [r for r in runs if record.SWEEP_ID_TAG not in r.data.tags and "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 3 and len(singles) == 2 and len(runs) == 3 + 3 * 2 + 2
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert sorted(p.data.tags[record.LAUNCHER_TAG] for p in parents) == ["basic", "batched", "joblib"]

    sweep_dirs = [Path(p.data.tags[record.SWEEP_DIR_TAG]) for p in parents]  # one second, three folders
    folder = tmp_path / "multirun" / second
    assert sorted(sweep_dirs) == [folder, Path(f"{folder}_2"), Path(f"{folder}_3")]
    for parent, sweep_dir in zip(parents, sweep_dirs):
        assert parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == 2
        assert parent.data.metrics[record.CHILDREN_FAILED_METRIC] == 0
        assert json.loads((sweep_dir / SWEEP_FILE).read_text())["parent_run_id"] == parent.info.run_id
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(c.data.params["seed"] for c in children) == ["1", "2"]
        for child in children:  # each child ran in its own sweep's folder, as the job of its seed
            folder = Path(child.data.tags[record.HYDRA_OUTPUT_DIR_TAG])
            assert folder.parent == sweep_dir
            overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text())
            assert f"seed={child.data.params['seed']}" in overrides
            assert checkpoint.read_meta(folder)["run_id"] == child.info.run_id

    run_dirs = [Path(r.data.tags[record.HYDRA_OUTPUT_DIR_TAG]) for r in singles]
    folder = tmp_path / "outputs" / second
    assert sorted(run_dirs) == [folder, Path(f"{folder}_2")]
    # no process of theirs named a folder again: these are all the folders there are
    assert sorted(tmp_path.glob("multirun/*/*")) == sorted(sweep_dirs)
    assert sorted(tmp_path.glob("outputs/*/*")) == sorted(run_dirs)
    for run, folder in zip(singles, run_dirs):
        assert checkpoint.read_meta(folder)["run_id"] == run.info.run_id
        assert (folder / ".hydra" / "config.yaml").is_file()


def own_children(runs, parent):
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


@pytest.mark.slow
def test_sweeps_of_submitit_jobs_started_in_one_second_keep_one_folder_each(tmp_path, tracking_uri, experiment,
                                                                             client):
    """submitit's job processes (Hydra's submitit launcher; the batched launcher's shares as submitit jobs) get the
    sweep's config pickled: its folder travels with it, named once."""
    common = [*TINY, "tracking.log_model=false", f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"]
    procs, second = start_together(tmp_path, [
        ["-m", "hydra/launcher=submitit_local", "seed=1,2", *common],
        ["-m", "hydra/launcher=batched", "hydra.launcher.executor=local", "hydra.launcher.n_jobs=1", "seed=1,2",
         *common]])
    for proc in procs:
        code, out = finish(proc)
        assert code == 0, out

    runs = runs_of(client, experiment)
    parents = [r for r in runs if record.SWEEP_ID_TAG in r.data.tags]
    folder = tmp_path / "multirun" / second
    sweep_dirs = [Path(p.data.tags[record.SWEEP_DIR_TAG]) for p in parents]
    assert sorted(sweep_dirs) == [folder, Path(f"{folder}_2")] == sorted(tmp_path.glob("multirun/*/*"))
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    for parent, sweep_dir in zip(parents, sweep_dirs):
        children = own_children(runs, parent)
        assert sorted(c.data.params["seed"] for c in children) == ["1", "2"]
        assert {Path(c.data.tags[record.HYDRA_OUTPUT_DIR_TAG]).parent for c in children} == {sweep_dir}
        assert (sweep_dir / ".submitit").is_dir()  # submitit's job files: in the sweep's own folder


def sweep_command(tracking_uri, experiment, *args):
    return [*NN_RUN, "-m", "seed=1,2", *args, "hydra.sweep.dir=the_sweep", "tracking.log_model=false",
            f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"]


def started(command, cwd, marker):
    """Start `command`; return the process once it has printed a line containing `marker`."""
    proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if marker in line:
            return proc
    raise AssertionError(f"{command} ended without printing {marker!r}: exit {proc.wait()}")


def stop(proc):
    """Ctrl-C `proc`; its exit code."""
    proc.send_signal(signal.SIGINT)
    return finish(proc, timeout=120)[0]


def in_use_line(key, folder, owner_pid):
    return (rf"{key}={re.escape(str(folder))} is in use by another nn-run \(pid {owner_pid} on "
            rf"{re.escape(socket.gethostname())} since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d\): a folder holds one run or "
            r"sweep at a time")


@pytest.mark.slow
def test_a_sweep_into_the_folder_of_a_running_sweep_is_refused_with_one_line_and_no_run(
        tmp_path, tracking_uri, experiment, client):
    command = sweep_command(tracking_uri, experiment, *ENDLESS)
    first = started(command, tmp_path, "step 20000: error")
    try:
        before = {r.info.run_id: r.info.status for r in runs_of(client, experiment)}
        assert sorted(before.values()) == ["RUNNING", "RUNNING"]  # the parent and its first job
        sweep_file = (tmp_path / "the_sweep" / SWEEP_FILE).read_text()

        second = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        assert re.fullmatch("nn-run: the sweep cannot start: " + in_use_line("hydra.sweep.dir", "the_sweep", first.pid)
                            + "; to continue that sweep, run the same command again once it has ended\n",
                            second.stderr), second.stderr
        assert second.stdout == ""
        assert {r.info.run_id: r.info.status for r in runs_of(client, experiment)} == before  # nothing made or ended
        assert (tmp_path / "the_sweep" / SWEEP_FILE).read_text() == sweep_file
    finally:
        assert stop(first) == 130

    # stopped, its folder is free: the same command continues that sweep (its one parent run, now its own)
    (parent_id,) = [r.info.run_id for r in runs_of(client, experiment) if record.SWEEP_ID_TAG in r.data.tags]
    again = started(command, tmp_path, "resumes at step")  # its first job, from the checkpoint
    try:
        assert client.get_run(parent_id).data.tags[run_owner.PID_TAG] == str(again.pid)
    finally:
        assert stop(again) == 130
    parents = [r for r in runs_of(client, experiment) if record.SWEEP_ID_TAG in r.data.tags]
    assert [(p.info.run_id, p.info.status) for p in parents] == [(parent_id, "KILLED")]


@pytest.mark.slow
def test_two_resumes_of_one_run_at_once_the_second_is_refused_with_one_line(tmp_path, tracking_uri, experiment,
                                                                            client):
    command = [*NN_RUN, *ENDLESS, "tracking.log_model=false", f"tracking.uri={tracking_uri}",
               f"tracking.experiment={experiment}"]
    assert stop(started(command, tmp_path, "step 20000: error")) == 130
    (run,) = runs_of(client, experiment)
    folder = run.data.tags[record.HYDRA_OUTPUT_DIR_TAG]
    resume = [*NN_RUN, "resume", run.info.run_id, "--tracking-uri", tracking_uri]

    first = started(resume, tmp_path, "resumes at step")
    try:
        second = subprocess.run(resume, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        assert re.fullmatch("nn-run: " + in_use_line("hydra.run.dir", folder, first.pid) + "\n", second.stderr), \
            second.stderr
        assert second.stdout == ""
        (now,) = runs_of(client, experiment)
        assert now.info.status == "RUNNING" and now.data.tags[run_owner.PID_TAG] == str(first.pid)  # the first one's
    finally:
        assert stop(first) == 130
    (now,) = runs_of(client, experiment)
    assert now.info.status == "KILLED" and len(json.loads(now.data.tags[record.RESUMED_AT_TAG])) == 1
    assert checkpoint.read_meta(folder)["status"] == checkpoint.RUNNING  # it can be resumed again


@pytest.mark.slow
def test_without_the_lock_a_sweep_whose_process_lives_is_not_continued_and_one_whose_process_died_is(
        tmp_path, tracking_uri, experiment, client):
    """On a file system without flock, the parent run's owner tags stand in: a live owner refuses."""
    command = sweep_command(tracking_uri, experiment, *TINY)
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (parent,) = [r for r in runs_of(client, experiment) if record.SWEEP_ID_TAG in r.data.tags]
    # the state a sweep whose process still runs leaves: its parent RUNNING, owned by a live process
    owner = subprocess.Popen(["sleep", "300"])
    try:
        client.update_run(parent.info.run_id, "RUNNING")
        for key, value in {run_owner.PID_TAG: str(owner.pid), run_owner.HOST_TAG: socket.gethostname(),
                           run_owner.PROCESS_START_TAG: run_owner.process_start(owner.pid)}.items():
            client.set_tag(parent.info.run_id, key, value)
        before = {r.info.run_id: r.info.status for r in runs_of(client, experiment)}
        refused = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2
        assert refused.stderr == (f"nn-run: the sweep cannot start: hydra.sweep.dir=the_sweep is the folder of sweep "
                                  f"{parent.info.run_id}, still running (pid {owner.pid} on {socket.gethostname()}): "
                                  "a folder holds one sweep at a time\n")
        assert {r.info.run_id: r.info.status for r in runs_of(client, experiment)} == before
    finally:
        owner.kill()
        owner.wait()
    continued = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert continued.returncode == 0, continued.stderr
    runs = runs_of(client, experiment)
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    assert [r.info.run_id for r in runs if record.SWEEP_ID_TAG in r.data.tags] == [parent.info.run_id]


def test_a_new_folder_is_made_as_it_is_named_and_the_next_gets_a_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert [output_folders.new_folder("multirun/2026-12-04/15-20-35") for _ in range(3)] == [
        "multirun/2026-12-04/15-20-35", "multirun/2026-12-04/15-20-35_2", "multirun/2026-12-04/15-20-35_3"]
    assert sorted(p.name for p in (tmp_path / "multirun" / "2026-12-04").iterdir()) == [
        "15-20-35", "15-20-35_2", "15-20-35_3"]
    absolute = str(tmp_path / "elsewhere" / "run")
    assert output_folders.new_folder(absolute) == absolute and Path(absolute).is_dir()


NAME = """\
import os, sys, time
from runner.output_folders import new_folder
while not os.path.exists(sys.argv[1]):
    time.sleep(0.001)
print(new_folder(sys.argv[2]))
"""


def test_processes_naming_one_folder_at_one_instant_each_get_their_own(tmp_path):
    go, path = tmp_path / "go", str(tmp_path / "multirun" / "2026-12-04" / "15-20-35")
    procs = [subprocess.Popen([sys.executable, "-c", NAME, str(go), path], stdout=subprocess.PIPE, text=True)
             for _ in range(8)]
    time.sleep(1.0)
    go.touch()
    names = [proc.communicate(timeout=120)[0].strip() for proc in procs]
    assert sorted(names) == sorted([path] + [f"{path}_{n}" for n in range(2, 9)])


HOLD = """\
import sys, time
from runner.output_folders import hold
hold("hydra.run.dir", sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def test_a_held_folder_refuses_another_process_and_is_free_once_its_holder_is_killed(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(output_folders.FolderInUse) as refused:
            output_folders.hold("hydra.run.dir", str(folder))
        assert re.fullmatch(in_use_line("hydra.run.dir", folder, holder.pid), str(refused.value))
    finally:
        holder.kill()  # SIGKILL: the kernel lets go of its lock
        holder.wait()
    output_folders.hold("hydra.run.dir", str(folder))
    try:
        owner = json.loads((folder / output_folders.LOCK_FILE).read_text())
        assert owner[run_owner.PID_TAG] == str(os.getpid()) and owner[run_owner.HOST_TAG] == socket.gethostname()
    finally:
        output_folders.release(str(folder))
    output_folders.hold("hydra.run.dir", str(folder))  # released: free again, in this process too
    output_folders.release(str(folder))

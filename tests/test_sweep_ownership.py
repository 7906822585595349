"""Every sweep and every run owns its Hydra output folder, whatever else starts in the same second.

Before: three `nn-run -m seed=1,2` started together in one folder shared Hydra's default
`multirun/DATE/TIME`; the first parent run got all six children, the other two ended FAILED
with none, and all three exited 0. Two single runs shared `outputs/DATE/TIME`.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import NN_RUN, runs_of
from test_sweeps import ENDLESS, TINY

from runner import checkpoint
from runner.sweep.callback import SWEEP_FILE
from runner.tracking import record

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

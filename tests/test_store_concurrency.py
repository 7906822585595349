"""Many commands opening one SQLite store at the same moment, and a tracking server restarted mid-sweep.

MLflow creates and migrates a new store's tables in every process that opens it; before the
store lock (runner/tracking/store_lock.py), four single runs and two sweeps started together on a new
store failed in 3 rounds out of 3 here, and left the store half-migrated for good.
"""

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import NN_RUN, runs_of
from servers import free_port, mlflow_server
from test_sweeps import TINY

from runner.tracking import record
from runner.tracking.store_lock import lock_path, store_lock

ROUNDS = 2  # each round is a new store; before the lock, every round broke it (3 of 3)


def start(cwd, *args):
    return subprocess.Popen([*NN_RUN, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(ROUNDS))
def test_four_runs_and_two_sweeps_on_a_new_store_all_finish(tmp_path, round_):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/new.db"  # does not exist yet: every process below may be the one to create it
    common = [f"tracking.uri={uri}", "tracking.experiment=together", "tracking.log_model=false", *TINY]
    procs = [start(tmp_path, f"seed={seed}", *common) for seed in (1, 2, 3, 4)]
    procs.append(start(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=1,2,3,4",
                       "hydra.sweep.dir=joblib_sweep", *common))
    procs.append(start(tmp_path, "-m", "seed=5,6,7,8", "hydra.sweep.dir=basic_sweep", *common))
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out
        assert "Traceback" not in out

    client = MlflowClient(uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    runs = client.search_runs(list(experiments))
    assert len(runs) == 14 and {r.info.status for r in runs} == {"FINISHED"}
    assert {experiments[r.info.experiment_id] for r in runs} == {"together"}  # none in Default
    parents = [r for r in runs if record.SWEEP_ID_TAG in r.data.tags]
    assert len(parents) == 2 and all(p.data.metrics[record.CHILDREN_FINISHED_METRIC] == 4 for p in parents)
    later = subprocess.run([*NN_RUN, "seed=9", *common], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert later.returncode == 0, later.stderr
    assert len(runs_of(client, "together")) == 15



def test_a_half_migrated_store_is_one_line_saying_what_to_do(tmp_path):
    """The state the race left before the lock: tables ahead of the schema version Alembic recorded.

    Processes that opened a new store at once (MLflow alone) broke it within 5 tries here, in
    25-170 s; the same state is made here in one step: a store created, a table dropped and its
    recorded revision set back to MLflow's first, so the next opening migrates onto existing tables.
    """
    from alembic.script import ScriptDirectory
    from mlflow import MlflowClient
    from mlflow.store import db_migrations

    broken = f"sqlite:///{tmp_path}/raced.db"
    MlflowClient(broken).search_experiments()
    first = ScriptDirectory(Path(db_migrations.__file__).parent).get_base()
    with sqlite3.connect(tmp_path / "raced.db") as db:
        db.execute("DROP TABLE latest_metrics")
        db.execute("UPDATE alembic_version SET version_num = ?", (first,))
    db.close()
    path = broken[len("sqlite:///"):]
    done = subprocess.run([*NN_RUN, f"tracking.uri={broken}", *TINY], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("nn-run:")]
    assert line.startswith(f"nn-run: tracking.uri={broken}: the store's tables are half-created or half-migrated")
    assert line.endswith(f"move it aside (`mv {path} {path}.broken`) and run again, which makes a new store")
    assert "Traceback" not in done.stderr


HOLD = ("import sys, time; from runner.tracking.store_lock import store_lock\n"
        "with store_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(float(sys.argv[2]))")
TRY = "import sys; from runner.tracking.store_lock import store_lock\nwith store_lock(sys.argv[1], seconds=0.3): pass"


def hold(uri, seconds):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, uri, str(seconds)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_the_lock_makes_others_wait_gives_up_with_one_line_and_dies_with_its_holder(tmp_path):
    uri = f"sqlite:///{tmp_path}/store.db"
    assert lock_path(uri) == f"{tmp_path}/store.db.lock" and lock_path("http://127.0.0.1:5000") is None
    holder = hold(uri, 2.0)
    impatient = subprocess.run([sys.executable, "-c", TRY, uri], capture_output=True, text=True, timeout=60)
    assert impatient.returncode == 1
    assert (f"StoreLockTimeout: tracking.uri={uri}: another process has held the store's lock "
            f"({tmp_path}/store.db.lock) for over 0 s") in impatient.stderr
    began = time.monotonic()
    with store_lock(uri, seconds=60):  # a patient one gets it once the holder lets go
        assert holder.poll() is not None or time.monotonic() - began > 0.5
    holder.wait(timeout=30)

    killed = hold(uri, 600)
    killed.kill()  # SIGKILL: the kernel releases its lock
    killed.wait(timeout=30)
    done = subprocess.run([sys.executable, "-c", TRY, uri], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_looking_a_store_up_leaves_no_file_and_only_a_new_store_gets_a_lock(tmp_path, tracking_uri):
    bin_dir = Path(sys.executable).parent
    Path(tmp_path, "made-elsewhere.db").write_bytes(Path(tracking_uri.removeprefix("sqlite:///")).read_bytes())
    for uri in ("sqlite:///made-elsewhere.db", "sqlite:///missing.db"):  # a store made without a lock; none at all
        for command in ([bin_dir / "nn-rerun", "0" * 32, "--tracking-uri", uri],
                        [bin_dir / "nn-compare", "--tracking-uri", uri],
                        [*NN_RUN, "resume", "0" * 32, "--tracking-uri", uri]):
            done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
            assert sorted(p.name for p in tmp_path.iterdir()) == ["made-elsewhere.db"], command
    with store_lock(f"sqlite:///{tmp_path}/new.db"):  # a process about to create a store takes the lock first
        assert Path(tmp_path, "new.db.lock").is_file()


@pytest.mark.slow
def test_a_server_restarted_mid_sweep_loses_no_run(tmp_path):
    from mlflow import MlflowClient

    port, store = free_port(), f"sqlite:///{tmp_path}/server.db"
    with mlflow_server(store, tmp_path, port=port) as (url, _):
        sweep = start(tmp_path, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "seed=range(1,9)",
                      "train.iterations=150000", "train.log_every=50000", "tracking.log_model=false",
                      f"tracking.uri={url}", "tracking.experiment=restarted")
        client = MlflowClient(url)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # stop the server once the sweep has children
            experiment = client.get_experiment_by_name("restarted")
            if experiment and len(client.search_runs([experiment.experiment_id])) >= 3:
                break
            time.sleep(0.5)
    time.sleep(2)  # the server is down while the jobs train and try to log
    with mlflow_server(store, tmp_path, port=port) as (url, _):
        out = sweep.communicate(timeout=600)[0]
        assert sweep.returncode == 0, out
        parent, *children = sorted(runs_of(MlflowClient(url), "restarted"),
                                   key=lambda r: record.SWEEP_ID_TAG not in r.data.tags)
        assert record.SWEEP_ID_TAG in parent.data.tags and parent.info.status == "FINISHED"
        assert len(children) == 8 and {c.info.status for c in children} == {"FINISHED"}
        assert sorted(int(c.data.params["seed"]) for c in children) == list(range(1, 9))

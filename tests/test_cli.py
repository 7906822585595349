"""The real `nn-run` command in a subprocess: output, exit codes, what lands in MLflow."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NN_RUN, interrupt_after, runs_of


def nn_run(cwd, *args):
    return subprocess.run([*NN_RUN, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_run_prints_progress_predictions_and_run(tmp_path, client, tracking_uri, experiment):
    done = nn_run(tmp_path, "train.iterations=3000", "train.log_every=1000", f"tracking.uri={tracking_uri}",
                  f"tracking.experiment={experiment}")
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    for step in (0, 1000, 2000, 3000):
        assert f"step {step}: error " in out
    assert "0 0 1 | 0 | " in out and "1 1 1 | 0 | " in out
    (run,) = runs_of(client, experiment)
    assert f"MLflow run {run.info.run_id}" in out
    assert f"mlflow ui --backend-store-uri {tracking_uri}" in out
    # the run is named after the overrides; where it is logged is not part of the name
    assert run.info.run_name == "train.iterations=3000,train.log_every=1000"
    assert (tmp_path / "outputs").is_dir()  # hydra.job.chdir=false: outputs beside the user, cwd unchanged


def test_cli_default_store_is_sqlite_in_the_working_directory(tmp_path):
    done = nn_run(tmp_path, "train.iterations=5", "train.log_every=5")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mlflow.db").is_file()


@pytest.mark.parametrize("override, expected", [
    ("train.lr=-1", "nn-run: train.lr=-1.0 is not allowed: must be a finite number > 0"),
    ("model.activation=swish", "nn-run: model.activation='swish' is not allowed: one of sigmoid, tanh, relu"),
])
def test_cli_bad_value_is_one_line_and_exit_2(tmp_path, override, expected):
    done = nn_run(tmp_path, override, "tracking.uri=sqlite:///store.db")
    assert done.returncode == 2
    assert done.stderr.strip() == expected
    assert not (tmp_path / "store.db").exists()  # not even a store was opened


def test_cli_unknown_key_fails_at_composition(tmp_path):
    done = nn_run(tmp_path, "train.momentum=0.9", "tracking.uri=sqlite:///store.db")
    assert done.returncode == 1
    assert "train.momentum" in done.stderr and "Key 'momentum' not in 'TrainConfig'" in done.stderr
    assert not (tmp_path / "store.db").exists()


def test_help_names_the_app_and_its_groups():
    done = subprocess.run([str(Path(sys.executable).parent / "nn-run"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "nn-run" in done.stdout and "train: backprop" in done.stdout
    (datasets,) = [line for line in done.stdout.splitlines() if line.startswith("dataset: ")]
    assert {"seed", "iris", "csv"} <= set(datasets[len("dataset: "):].split(", "))
    assert "schema" not in datasets  # the typed schemas of the options are not options themselves


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; `kill`, a scheduler's time limit
def test_ctrl_c_or_sigterm_marks_the_run_killed_and_keeps_its_metrics(tmp_path, client, tracking_uri, experiment,
                                                                       stop):
    returncode, rest = interrupt_after([*NN_RUN, "train.iterations=100000000", "train.log_every=20000",
                                        f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"],
                                       tmp_path, "step 60000: error", stop)
    assert returncode == 130
    assert rest.strip().endswith("nn-run: interrupted; the run is marked KILLED with the metrics logged so far")
    (run,) = runs_of(client, experiment)
    assert run.info.status == "KILLED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "error"))
    assert steps[:4] == [0, 20000, 40000, 60000]  # every point printed before Ctrl-C was kept
    assert steps == list(range(0, steps[-1] + 1, 20000))

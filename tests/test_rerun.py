"""nn-rerun against a real SQLite store: reproductions, altered records, derived runs, bad input."""

import glob
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
import sys
from urllib.parse import urlsplit

import numpy as np
import pytest
from conftest import NN_RUN, compose_config, interrupt_after, runs_of

from runner.cli.rerun import nn_rerun
from runner.exit_codes import BAD_INPUT as EXIT_BAD_INPUT
from runner.exit_codes import FAILED as EXIT_NOT_REPRODUCED
from runner.job import run_job
from runner.tracking import record
from runner.tracking.client import PARENT_RUN_TAG

NN_RERUN = [sys.executable, "-m", "runner.cli.rerun"]


def cli(command, cwd, *args, env=None):
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def logged_run(tracking_uri, experiment, *overrides):
    """A run made by run_job (what nn-run does once Hydra has composed the config); returns its id."""
    overrides = [f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}", *overrides]
    return run_job(compose_config(*overrides), overrides, run_name="source").run_id


def rerun_in_process(capsys, *args):
    """nn-rerun in this process; (exit code, stdout lines)."""
    code = nn_rerun(list(args))
    return code, capsys.readouterr().out.splitlines()


def the_rerun(client, experiment, source_id, tag=record.RERUN_OF_TAG):
    (new,) = [r for r in runs_of(client, experiment) if r.data.tags.get(tag) == source_id]
    return new


def artifact_dir(run):
    """The local folder holding a run's artifacts (the default artifact store is the file system)."""
    uri = run.info.artifact_uri
    return urlsplit(uri).path if uri.startswith("file:") else uri


def test_cli_rerun_of_the_default_run_is_reproduced(tmp_path, tracking_uri, experiment, client):
    # started through another name of this venv's interpreter (bin/python3 -> python or the other way round)
    name = Path(sys.executable).name
    other = Path(sys.executable).with_name("python3" if name != "python3" else "python")
    assert other.resolve() == Path(sys.executable).resolve()
    done = cli([str(other), *NN_RUN[1:]], tmp_path, f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}")
    assert done.returncode == 0, done.stderr
    (source,) = runs_of(client, experiment)
    done = cli(NN_RERUN, tmp_path, source.info.run_id, "--tracking-uri", tracking_uri)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "reproduced"
    new = the_rerun(client, experiment, source.info.run_id)
    assert new.data.tags["python_executable"] != source.data.tags["python_executable"]
    assert "python_executable" not in done.stdout  # the same interpreter: not a fact that differs
    assert new.info.status == "FINISHED" and new.info.experiment_id == source.info.experiment_id
    assert f"new run {new.info.run_id} (rerun_of={source.info.run_id})" in done.stdout
    assert new.data.tags[record.WEIGHTS_HASH_TAG] == source.data.tags[record.WEIGHTS_HASH_TAG]
    assert {k: v for k, v in new.data.params.items()} == source.data.params
    assert new.info.run_name == f"{source.info.run_name} (rerun)"
    errors = [(m.step, m.value) for m in client.get_metric_history(new.info.run_id, record.ERROR_METRIC)]
    assert sorted(errors) == sorted((m.step, m.value) for m in client.get_metric_history(
        source.info.run_id, record.ERROR_METRIC))
    assert len(errors) == 7
    assert len(runs_of(client, experiment)) == 2


@pytest.mark.slow
@pytest.mark.parametrize("sweep", [
    ["hydra/launcher=joblib", "train.lr=0.5,2.0"],
    ["hydra/launcher=basic", "train.lr=0.5,2.0"],
    # Optuna picks lr values like 0.7613...: the float must survive config.yaml to the last bit
    ["hydra/sweeper=nn_optuna", "hydra.sweeper.n_trials=2", "train.lr=interval(0.1,2.0)"],
    # both networks trained together as stacked arrays; the rerun trains the child's alone
    ["hydra/launcher=batched", "train.lr=0.5,2.0"],
], ids=["joblib", "basic", "optuna", "batched"])
def test_rerun_of_a_sweep_child_is_reproduced(tmp_path, tracking_uri, experiment, client, capsys, sweep):
    done = cli(NN_RUN, tmp_path, "-m", *sweep, "train.iterations=2000", "train.log_every=500",
               f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}")
    assert done.returncode == 0, done.stderr
    children = sorted((r for r in runs_of(client, experiment) if PARENT_RUN_TAG in r.data.tags),
                      key=lambda r: r.data.tags[record.HYDRA_OUTPUT_DIR_TAG])
    assert len(children) == 2
    child, other = children
    # under joblib the child ran in a worker process; its output folder is the sweep's job 0
    assert child.data.tags[record.HYDRA_OUTPUT_DIR_TAG] == str(next(tmp_path.glob("multirun/*/*/0")))
    code, out = rerun_in_process(capsys, child.info.run_id, "--tracking-uri", tracking_uri)
    assert code == 0 and out[-1] == "reproduced"
    new = the_rerun(client, experiment, child.info.run_id)
    assert PARENT_RUN_TAG not in new.data.tags  # a rerun is a run of its own, not a job of the sweep
    assert new.data.params["train.lr"] == child.data.params["train.lr"] != other.data.params["train.lr"]
    assert new.data.tags[record.WEIGHTS_HASH_TAG] == child.data.tags[record.WEIGHTS_HASH_TAG]
    assert new.data.tags[record.WEIGHTS_HASH_TAG] != other.data.tags[record.WEIGHTS_HASH_TAG]


def test_altered_weights_in_the_store_are_not_reproduced(tracking_uri, experiment, client, capsys):
    source_id = logged_run(tracking_uri, experiment, "train.iterations=500", "train.log_every=100")
    path = os.path.join(artifact_dir(client.get_run(source_id)), record.weight_file(1))
    original = np.load(path)
    altered = original.copy()
    altered[2, 0] += 0.5
    np.save(path, altered)
    code, out = rerun_in_process(capsys, source_id, "--tracking-uri", tracking_uri)
    assert code == EXIT_NOT_REPRODUCED and out[-1] == "not reproduced"
    differs = [line for line in out if line.startswith("differs: ")]
    largest = float(np.max(np.abs(altered - original)))
    assert differs == [
        "differs: source weights: the logged matrices do not hash to the source's weights_sha256 tag: "
        "they were changed after the run",
        f"differs: {record.weight_file(1)}: 1 of 4 entries differ; largest absolute difference {largest!r}",
    ]  # layer 0, the hash tags and the error metric all agree
    new = the_rerun(client, experiment, source_id)
    assert new.info.status == "FINISHED"


def test_changed_training_is_not_reproduced_with_metric_and_matrices_named(tracking_uri, experiment, client,
                                                                            capsys):
    """A source whose record disagrees with what its config trains (its error points and weights
    were logged from a different lr): every part is named, each with its largest difference."""
    source_id = logged_run(tracking_uri, experiment, "train.iterations=300", "train.log_every=100", "train.lr=0.5")
    folder = artifact_dir(client.get_run(source_id))
    with open(os.path.join(folder, record.CONFIG_FILE)) as handle:  # the config now says lr 1.0
        text = handle.read().replace("lr: 0.5", "lr: 1.0")
    with open(os.path.join(folder, record.CONFIG_FILE), "w") as handle:
        handle.write(text)
    code, out = rerun_in_process(capsys, source_id, "--tracking-uri", tracking_uri)
    assert code == EXIT_NOT_REPRODUCED and out[-1] == "not reproduced"
    differs = [line.split(":")[1].strip() for line in out if line.startswith("differs: ")]
    # every metric the source logged is compared: the error curve and the final weights' error
    assert differs == ["weights_sha256", "weights/layer_0.npy", "weights/layer_1.npy", "metric error",
                       "metric final_error"]
    (metric_line,) = [line for line in out if line.startswith("differs: metric error")]
    assert "3 of 4 points differ, first at step 100" in metric_line  # step 0 is before any update


def test_rerun_with_overrides_makes_a_linked_new_run(tracking_uri, experiment, client, capsys, tmp_path):
    source_id = logged_run(tracking_uri, experiment, "train.iterations=300", "train.log_every=100", "seed=3")
    code, out = rerun_in_process(capsys, source_id, "--tracking-uri", tracking_uri,
                                 "--override", "train.iterations=100", "--override", "model.hidden=[5,2]")
    assert code == 0 and "reproduced" not in out
    new = the_rerun(client, experiment, source_id, tag=record.DERIVED_FROM_TAG)
    assert record.RERUN_OF_TAG not in new.data.tags
    source = client.get_run(source_id)
    assert new.data.params["train.iterations"] == "100" and new.data.params["model.hidden"] == "[5, 2]"
    changed = ("train.iterations", "model.hidden")
    unchanged = {k: v for k, v in source.data.params.items() if k not in changed}
    assert unchanged and all(new.data.params[k] == v for k, v in unchanged.items())  # seed=3 and the rest kept
    assert sorted(m.step for m in client.get_metric_history(new.info.run_id, record.ERROR_METRIC)) == [0, 100]
    assert json.loads(new.data.tags["overrides"])[-2:] == ["train.iterations=100", "model.hidden=[5,2]"]
    folder = client.download_artifacts(new.info.run_id, "", str(tmp_path))
    assert [w.shape for w in record.read_weights(folder)] == [(3, 5), (5, 2), (2, 1)]


@pytest.mark.parametrize("override, message", [
    ("train.momentum=1", "Key 'momentum' not in 'TrainConfig'"),
    ("train.iterations=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
    ("train.lr=-1", "train.lr=-1.0 is not allowed: must be a finite number > 0"),
])
def test_bad_override_is_one_line_and_no_run(tracking_uri, experiment, client, capsys, override, message):
    source_id = logged_run(tracking_uri, experiment, "train.iterations=5")
    capsys.readouterr()  # drop what logging the source printed (MLflow's model logging)
    code = nn_rerun([source_id, "--tracking-uri", tracking_uri, "--override", override])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_BAD_INPUT
    assert err.startswith("nn-rerun: ") and message in err and "\n" not in err
    assert len(runs_of(client, experiment)) == 1


def test_cli_unknown_run_id_is_a_clear_error(tmp_path, tracking_uri, client):
    before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    run_id = "0123456789abcdef0123456789abcdef"
    done = cli(NN_RERUN, tmp_path, run_id, "--tracking-uri", tracking_uri)
    assert done.returncode == EXIT_BAD_INPUT
    assert done.stderr.strip() == f"nn-rerun: no run '{run_id}' in the MLflow store at {tracking_uri}"
    assert done.stdout == ""
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == before


def test_cli_missing_store_is_a_clear_error_and_creates_none(tmp_path):
    done = cli(NN_RERUN, tmp_path, "0123456789abcdef0123456789abcdef")  # default: sqlite:///mlflow.db
    assert done.returncode == EXIT_BAD_INPUT
    assert done.stderr.strip() == (f"nn-rerun: no MLflow store at sqlite:///mlflow.db (no file 'mlflow.db' in "
                                   f"{tmp_path}: a relative path means the working directory)")
    assert not (tmp_path / "mlflow.db").exists()


def test_cli_help_names_the_command(tmp_path):
    done = cli([os.path.join(os.path.dirname(sys.executable), "nn-rerun")], tmp_path, "--help")
    assert done.returncode == 0
    assert "nn-rerun" in done.stdout and "--override" in done.stdout and "--tracking-uri" in done.stdout


def test_rerun_from_a_hydra_output_dir(tmp_path, tracking_uri, experiment, client, capsys, monkeypatch):
    done = cli(NN_RUN, tmp_path, "train.iterations=400", "train.log_every=200", f"tracking.uri={tracking_uri}",
               f"tracking.experiment={experiment}")
    assert done.returncode == 0, done.stderr
    (source,) = runs_of(client, experiment)
    (output_dir,) = glob.glob(str(tmp_path / "outputs" / "*" / "*"))
    monkeypatch.chdir(tmp_path)
    relative = os.path.relpath(output_dir)

    # the run that recorded the folder is found through its hydra_output_dir tag and compared
    code, out = rerun_in_process(capsys, relative)  # the folder's config names the store
    assert code == 0 and out[-1] == "reproduced"
    new = the_rerun(client, experiment, source.info.run_id)
    assert new.data.tags[record.WEIGHTS_HASH_TAG] == source.data.tags[record.WEIGHTS_HASH_TAG]

    # a copied folder is recorded by no run: trained and logged again, nothing to compare
    copy = tmp_path / "elsewhere"
    shutil.copytree(output_dir, copy)
    code, out = rerun_in_process(capsys, str(copy))
    assert code == 0 and out[-1] == f"not compared: no MLflow run at {tracking_uri} records the output folder {copy}"
    new = the_rerun(client, experiment, str(copy))
    assert new.data.tags[record.WEIGHTS_HASH_TAG] == source.data.tags[record.WEIGHTS_HASH_TAG]
    assert new.data.params == source.data.params


def test_a_folder_that_is_not_a_hydra_output_dir_is_a_clear_error(tmp_path, capsys):
    code = nn_rerun([str(tmp_path)])
    assert code == EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip() == f"nn-rerun: {tmp_path} has no .hydra/config.yaml: not a Hydra output folder"
    assert nn_rerun(["outputs/2026-01-01/00-00-00"]) == EXIT_BAD_INPUT
    assert "no folder outputs/2026-01-01/00-00-00" in capsys.readouterr().err


def test_dataset_file_check_against_the_recorded_sha256(tmp_path, monkeypatch):
    from runner.rerun import DatasetChanged, check_dataset_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_bytes(b"a,b,y\n0,1,1\n1,1,0\n")
    recorded = record.file_sha256("data.csv")
    assert recorded == hashlib.sha256(b"a,b,y\n0,1,1\n1,1,0\n").hexdigest()
    check_dataset_file("data.csv", recorded, "r1")  # the same bytes: no error

    (tmp_path / "data.csv").write_bytes(b"a,b,y\n0,1,1\n1,1,1\n")
    with pytest.raises(DatasetChanged) as raised:
        check_dataset_file("data.csv", recorded, "r1")
    assert str(raised.value) == (f"dataset.path='data.csv' has changed since run r1: sha256 "
                                 f"{record.file_sha256('data.csv')}, recorded {recorded}")

    os.remove("data.csv")
    with pytest.raises(DatasetChanged) as raised:
        check_dataset_file("data.csv", recorded, "r1")
    assert str(raised.value) == f"dataset.path='data.csv' is missing: run r1 trained on a file with sha256 {recorded}"


def test_dataset_check_applies_when_the_source_recorded_a_file(tmp_path, monkeypatch, tracking_uri, experiment,
                                                               client):
    from omegaconf import OmegaConf

    from runner.rerun import DatasetChanged, Source, check_dataset

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_bytes(b"x,y\n1,0\n")
    source_id = logged_run(tracking_uri, experiment, "train.iterations=5")
    client.set_tag(source_id, record.DATASET_SHA256_TAG, record.file_sha256("data.csv"))  # as a csv run records it
    config = {"dataset": {"name": "csv", "path": "data.csv"}}
    source = Source(source_id, config, [], "source", experiment, tracking_uri, run=client.get_run(source_id))
    same_file = OmegaConf.create(config)
    check_dataset(source, same_file)

    (tmp_path / "data.csv").write_bytes(b"x,y\n1,1\n")
    with pytest.raises(DatasetChanged, match=f"has changed since run {source_id}"):
        check_dataset(source, same_file)
    check_dataset(source, OmegaConf.create({"dataset": {"name": "csv", "path": "other.csv"}}))  # user's choice

    untracked = Source(source_id, config, [], "source", experiment, tracking_uri,
                       run=client.get_run(logged_run(tracking_uri, experiment, "train.iterations=5")))
    check_dataset(untracked, same_file)  # no dataset_sha256 recorded: nothing to check


def test_an_unfinished_source_is_named(tracking_uri, experiment, client, capsys):
    source_id = logged_run(tracking_uri, experiment, "train.iterations=200", "train.log_every=100")
    client.set_terminated(source_id, "KILLED")  # as Ctrl-C leaves a run (here with its record complete)
    code, out = rerun_in_process(capsys, source_id, "--tracking-uri", tracking_uri)
    assert code == EXIT_NOT_REPRODUCED
    assert [line for line in out if line.startswith("differs: ")] == [
        "differs: source run: status KILLED: its record is incomplete"]


def test_a_run_whose_artifacts_are_gone_is_a_clear_error(tracking_uri, experiment, client, capsys):
    source_id = logged_run(tracking_uri, experiment, "train.iterations=5")
    capsys.readouterr()  # drop what logging the source printed (MLflow's model logging)
    shutil.rmtree(artifact_dir(client.get_run(source_id)))
    assert nn_rerun([source_id, "--tracking-uri", tracking_uri]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip() == (f"nn-rerun: run {source_id} has no artifacts: they are gone, or it "
                                               "was not logged by nn-run")
    assert len(runs_of(client, experiment)) == 1


def test_a_run_not_made_by_nn_run_is_a_clear_error(tracking_uri, experiment, client, capsys, tmp_path):
    from runner.tracking.client import tracked_run

    (tmp_path / "notes.txt").write_text("a run logged by another tool\n")
    with tracked_run(tracking_uri, experiment, "other tool") as run:
        run.log_artifacts(str(tmp_path))
    assert nn_rerun([run.run_id, "--tracking-uri", tracking_uri]) == EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip() == f"nn-rerun: run {run.run_id} has no config.yaml artifact: it was not logged by nn-run"
    assert len(runs_of(client, experiment)) == 1


CSV_ROWS = "a,b,y\n0,0,0\n0,1,1\n1,0,1\n1,1,0\n0.2,0.1,0\n0.1,0.9,1\n0.9,0.2,1\n0.8,0.9,0\n0.3,0.2,0\n0.2,0.7,1\n"


@pytest.mark.slow
def test_csv_run_reruns_and_a_changed_or_missing_file_is_an_error(tmp_path, tracking_uri, experiment, client):
    (tmp_path / "data.csv").write_text(CSV_ROWS)
    done = cli(NN_RUN, tmp_path, "dataset=csv", "dataset.path=data.csv", "train.iterations=300", "train.log_every=100",
               f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}")
    assert done.returncode == 0, done.stderr
    (source,) = runs_of(client, experiment)
    recorded = source.data.tags[record.DATASET_SHA256_TAG]
    assert recorded == hashlib.sha256(CSV_ROWS.encode()).hexdigest()

    done = cli(NN_RERUN, tmp_path, source.info.run_id, "--tracking-uri", tracking_uri)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "reproduced"
    assert the_rerun(client, experiment, source.info.run_id).data.params["dataset.path"] == "data.csv"

    (tmp_path / "data.csv").write_text(CSV_ROWS.replace("0.3,0.2,0", "0.3,0.2,1"))
    done = cli(NN_RERUN, tmp_path, source.info.run_id, "--tracking-uri", tracking_uri)
    assert done.returncode == EXIT_BAD_INPUT
    changed = hashlib.sha256((tmp_path / "data.csv").read_bytes()).hexdigest()
    assert done.stderr.strip() == (f"nn-rerun: dataset.path='data.csv' has changed since run {source.info.run_id}: "
                                   f"sha256 {changed}, recorded {recorded}")

    (tmp_path / "data.csv").unlink()
    done = cli(NN_RERUN, tmp_path, source.info.run_id, "--tracking-uri", tracking_uri)
    assert done.returncode == EXIT_BAD_INPUT
    assert done.stderr.strip() == (f"nn-rerun: dataset.path='data.csv' is missing: run {source.info.run_id} "
                                   f"trained on a file with sha256 {recorded}")
    assert len(runs_of(client, experiment)) == 2  # the source and the one good rerun


def test_override_that_switches_the_data_set_drops_its_recorded_keys(tmp_path, tracking_uri, experiment, client,
                                                                     capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.csv").write_text(CSV_ROWS)
    source_id = logged_run(tracking_uri, experiment, "dataset=csv", "dataset.path=data.csv", "train.iterations=50",
                           "train.log_every=10")
    code, _ = rerun_in_process(capsys, source_id, "--tracking-uri", tracking_uri, "--override", "dataset=seed")
    assert code == 0
    new = the_rerun(client, experiment, source_id, tag=record.DERIVED_FROM_TAG)
    assert new.data.params["dataset.name"] == "seed" and "dataset.path" not in new.data.params
    assert new.data.params["train.iterations"] == "50"  # the other recorded values stay
    assert record.DATASET_SHA256_TAG not in new.data.tags


def test_rerun_of_a_run_with_a_test_split_compares_every_metric(tracking_uri, experiment, client, capsys):
    source_id = logged_run(tracking_uri, experiment, "dataset=iris", "model.hidden=[5]", "train.lr=0.05",
                           "train.iterations=200", "train.log_every=50")
    source_metrics = set(client.get_run(source_id).data.metrics)
    assert {"error", "test_error", "train_accuracy", "test_accuracy"} <= source_metrics
    code, out = rerun_in_process(capsys, source_id, "--tracking-uri", tracking_uri)
    assert code == 0 and out[-1] == "reproduced"
    # alter one test_accuracy point of the source: the comparison names that metric
    client.log_metric(source_id, "test_accuracy", -1.0, step=50)
    code, out = rerun_in_process(capsys, source_id, "--tracking-uri", tracking_uri)
    assert code == EXIT_NOT_REPRODUCED
    assert [line.split(":")[1].strip() for line in out if line.startswith("differs: ")] == ["metric test_accuracy"]


def test_a_derived_run_that_diverges_is_one_line_and_a_failed_run(tracking_uri, experiment, client, capsys):
    from runner.exit_codes import FAILED as EXIT_DIVERGED

    source_id = logged_run(tracking_uri, experiment, "dataset=iris", "train.lr=0.05", "train.iterations=100",
                           "train.log_every=50")
    capsys.readouterr()  # drop what logging the source printed (MLflow's model logging)
    code = nn_rerun([source_id, "--tracking-uri", tracking_uri, "--override", "model.activation=relu",
                     "--override", "model.output=softmax", "--override", "model.init=he",
                     "--override", "model.hidden=[16]", "--override", "train.lr=1.0"])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_DIVERGED
    assert err.startswith("nn-rerun: training diverged at step ") and "\n" not in err
    new = the_rerun(client, experiment, source_id, tag=record.DERIVED_FROM_TAG)
    assert new.info.status == "FAILED" and new.data.tags["error"].startswith("DivergenceError: training diverged")


def test_cli_ctrl_c_marks_the_new_run_killed(tmp_path, tracking_uri, experiment, client):
    source_id = logged_run(tracking_uri, experiment, "train.iterations=10")
    returncode, rest = interrupt_after([*NN_RERUN, source_id, "--tracking-uri", tracking_uri, "--override",
                                        "train.iterations=100000000", "--override", "train.log_every=20000"],
                                       tmp_path, "step 40000: error")
    assert returncode == 130
    assert rest.strip().endswith("nn-rerun: interrupted; the new run is marked KILLED with the metrics logged so far")
    new = the_rerun(client, experiment, source_id, tag=record.DERIVED_FROM_TAG)
    assert new.info.status == "KILLED"
    assert sorted(m.step for m in client.get_metric_history(new.info.run_id, "error"))[:3] == [0, 20000, 40000]

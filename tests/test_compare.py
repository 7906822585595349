"""`nn-compare`: the ranking of a sweep's runs, printed and logged to the parent run, on real stores."""

import csv
import io
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import NN_RUN, plain_sqlite_reads_or_skip

from runner.sweep.compare import CompareError, compare_sweep, find_sweep
from runner.tracking import record

NN_COMPARE = str(Path(sys.executable).parent / "nn-compare")


def logged_final_error(client, run_id):
    history = sorted(client.get_metric_history(run_id, record.ERROR_METRIC), key=lambda m: m.step)
    return history[-1].value


def table_rows(stdout):
    """The printed table's rows below its header, split into cells."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("rank "))
    rows = []
    for line in lines[start + 1:]:
        if not line[:1].isdigit():
            break
        rows.append(line.split())
    return lines[start].split(), rows


def test_nn_compare_ranks_the_latest_sweep_by_logged_final_error(tmp_path):
    from mlflow import MlflowClient

    # the defaults everywhere: sqlite:///mlflow.db in the working directory, experiment nn-runner
    sweep = subprocess.run([*NN_RUN, "-m", "train.lr=0.5,4", "model.hidden=[2],[8]", "train.iterations=40",
                            "train.log_every=10", "hydra.callbacks.sweep_tracking.compare=false"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert sweep.returncode == 0, sweep.stderr
    assert "ranked by final error" not in sweep.stdout  # compare=false: the sweep leaves it to nn-compare
    done = subprocess.run([NN_COMPARE], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = client.get_experiment_by_name("nn-runner").experiment_id
    (parent,) = [r for r in client.search_runs([experiment_id]) if record.SWEEP_ID_TAG in r.data.tags]
    children = client.search_runs([experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                  order_by=["attributes.start_time ASC"])
    errors = {c.info.run_id: logged_final_error(client, c.info.run_id) for c in children}
    assert errors == {c.info.run_id: c.data.metrics["final_error"] for c in children}  # the curve ends there
    expected = sorted(errors, key=errors.get)
    assert expected != [c.info.run_id for c in children]  # the ranking is not the order the jobs ran in

    header, rows = table_rows(done.stdout)
    assert header == ["rank", "train.lr", "model.hidden", "final_error", "iterations", "duration_s", "status",
                      "run_id"]
    assert [row[-1] for row in rows] == expected
    params = {c.info.run_id: c.data.params for c in children}
    for rank, row in enumerate(rows, 1):
        run_id = row[-1]
        assert row[:3] == [str(rank), params[run_id]["train.lr"], params[run_id]["model.hidden"]]
        assert float(row[3]) == pytest.approx(errors[run_id], rel=1e-5)  # printed with 6 significant digits
        assert row[4:7:2] == ["40", "FINISHED"]

    folder = client.download_artifacts(parent.info.run_id, "", str(tmp_path / "artifacts"))
    with open(Path(folder, record.COMPARISON_FILE)) as handle:
        logged = list(csv.DictReader(handle))
    assert [r["run_id"] for r in logged] == expected
    assert [float(r["final_error"]) for r in logged] == [errors[i] for i in expected]  # full precision
    png = Path(folder, record.COMPARISON_PLOT).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def make_sweep(uri, experiment, children, name="sweep over train.lr"):
    """A parent run and its children, logged directly: children are (lr, errors, fails)."""
    from runner.tracking.client import close_run, open_run, tracked_run

    _, parent_id = open_run(uri, experiment, name, {record.SWEEP_ID_TAG: name,
                                                    record.SWEPT_KEYS_TAG: json.dumps(["train.lr"])})
    for lr, errors, fails in children:
        try:
            with tracked_run(uri, experiment, f"train.lr={lr}", parent_run_id=parent_id) as run:
                run.log_params({"train.lr": str(lr)})
                for step, error in enumerate(errors):
                    run.log_metric(record.ERROR_METRIC, 10 * step, error)
                if fails:
                    raise FloatingPointError("diverged")
        except FloatingPointError:
            pass
    close_run(uri, parent_id, "FAILED" if any(f for *_, f in children) else "FINISHED", {})
    return parent_id


def test_unfinished_and_non_finite_runs_rank_after_the_finished_ones(tracking_uri, experiment, client, tmp_path):
    parent_id = make_sweep(tracking_uri, experiment, [
        (1, [0.5, 0.3], False),
        (2, [0.5, 0.01], True),  # the lowest error, but the run failed
        (3, [0.5, 0.2], False),
        (4, [0.5, math.nan], False),  # finished with an error that is not a number
        (5, [0.5, 0.4, 0.25], False),
    ])
    out = io.StringIO()
    rows = compare_sweep(tracking_uri, client.get_run(parent_id), log_to_parent=False, out=out)
    # finished with a finite error, lowest first; then the others, lowest first, NaN last
    assert [r.values["train.lr"] for r in rows] == ["3", "5", "1", "2", "4"]
    assert [r.iterations for r in rows] == [10, 20, 10, 10, 10]
    assert [r.status for r in rows] == ["FINISHED"] * 3 + ["FAILED", "FINISHED"]
    assert client.list_artifacts(parent_id) == []  # log_to_parent=False
    _, printed = table_rows(out.getvalue())
    assert [row[1] for row in printed] == ["3", "5", "1", "2", "4"]


def test_default_is_the_latest_sweep_of_the_experiment(tracking_uri, experiment, client):
    make_sweep(tracking_uri, experiment, [(1, [0.5], False)], name="first")
    time.sleep(0.01)  # start times are in milliseconds
    latest = make_sweep(tracking_uri, experiment, [(1, [0.5], False)], name="second")
    assert find_sweep(tracking_uri, experiment).info.run_id == latest
    child = client.search_runs([client.get_run(latest).info.experiment_id],
                               filter_string=f"tags.`mlflow.parentRunId` = '{latest}'")[0]
    with pytest.raises(CompareError, match="is not a sweep's parent run"):
        find_sweep(tracking_uri, experiment, child.info.run_id)


@pytest.mark.parametrize("args, message", [
    (["--tracking-uri", "sqlite:///missing.db"],
     "nn-compare: no MLflow store at sqlite:///missing.db (no file 'missing.db' in {cwd}: a relative path "
     "means the working directory)"),
    (["--tracking-uri", "sqlite:///empty.db", "--experiment", "nothing-here"],
     "nn-compare: experiment 'nothing-here' at sqlite:///empty.db has no sweep: run `nn-run -m ...` first"),
    (["--tracking-uri", "sqlite:///empty.db", "0123456789abcdef0123456789abcdef"],
     "nn-compare: no run 0123456789abcdef0123456789abcdef at sqlite:///empty.db"),
])
def test_nothing_to_compare_is_one_line_and_exit_2(tmp_path, tracking_uri, args, message):
    Path(tmp_path, "empty.db").write_bytes(Path(tracking_uri.removeprefix("sqlite:///")).read_bytes())
    done = subprocess.run([NN_COMPARE, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == message.format(cwd=tmp_path)
    assert not (tmp_path / "missing.db").exists()  # looking did not create a store


def test_nn_compare_ranks_by_the_held_out_error_on_request(tmp_path, tracking_uri, experiment, client):
    sweep = subprocess.run([*NN_RUN, "-m", "dataset=iris", "seed=1,2,3", "model.hidden=[3]", "train.lr=0.05",
                            "train.iterations=30", "train.log_every=10", f"tracking.uri={tracking_uri}",
                            f"tracking.experiment={experiment}", "hydra.callbacks.sweep_tracking.compare=false"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert sweep.returncode == 0, sweep.stderr
    done = subprocess.run([NN_COMPARE, "--metric", "test_error", "--tracking-uri", tracking_uri, "--experiment",
                           experiment], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "3 runs ranked by final test_error" in done.stdout
    parent = find_sweep(tracking_uri, experiment)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    test_errors = {c.info.run_id: c.data.metrics["final_test_error"] for c in children}
    assert len(set(test_errors.values())) == 3
    header, rows = table_rows(done.stdout)
    assert header[header.index("seed") + 1] == "final_test_error"
    assert [row[-1] for row in rows] == sorted(test_errors, key=test_errors.get)
    table, plot = record.comparison_files("test_error")
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {table, plot}  # comparison.csv untouched
    folder = client.download_artifacts(parent.info.run_id, table, str(tmp_path / "artifacts"))
    with open(folder) as handle:
        logged = list(csv.DictReader(handle))
    assert [float(r["final_test_error"]) for r in logged] == sorted(test_errors.values())


def test_ranking_by_test_error_without_a_held_out_split_is_one_line_and_exit_2(tmp_path, tracking_uri, experiment):
    parent_id = make_sweep(tracking_uri, experiment, [(1, [0.5, 0.3], False)])
    done = subprocess.run([NN_COMPARE, parent_id, "--metric", "test_error", "--tracking-uri", tracking_uri],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == (f"nn-compare: --metric test_error: no run of sweep {parent_id} logged test_error "
                                   "(it needs a held-out split: dataset.test_fraction > 0)")


def test_a_big_sweeps_plot_names_its_best_runs_and_greys_the_others(tracking_uri, experiment, client, tmp_path):
    from runner.sweep.compare import NAMED_CURVES, plot_curves, sweep_rows

    count = NAMED_CURVES + 3
    parent_id = make_sweep(tracking_uri, experiment, [(lr, [0.5, 0.1 + lr / 100], False)
                                                      for lr in range(count, 0, -1)])  # logged worst first
    rows, keys = sweep_rows(tracking_uri, client.get_run(parent_id))
    labels = plot_curves(tmp_path / "big.png", rows, keys, "big")
    assert labels == [f"{k}. train.lr={k}" for k in range(1, NAMED_CURVES + 1)] + ["the other 3 runs"]
    assert plot_curves(tmp_path / "small.png", rows[:3], keys, "small") == [
        "train.lr=1", "train.lr=2", "train.lr=3"]  # a small sweep: every run named, no ranks
    for name in ("big.png", "small.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_nn_compare_ranks_a_sqlite_stores_sweep_without_importing_mlflow(tracking_uri, experiment, client, tmp_path):
    """On a SQLite store nn-compare reads with plain SQL and copies its files to the parent's artifact folder."""
    plain_sqlite_reads_or_skip()
    parent_id = make_sweep(tracking_uri, experiment, [(1, [0.5, 0.3], False), (2, [0.5, 0.2], False)])
    script = ("import sys; from runner.cli.compare import main; "
              f"main([{parent_id!r}, '--tracking-uri', {tracking_uri!r}]); print('mlflow' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False"
    _, rows = table_rows(done.stdout)
    assert [row[1] for row in rows] == ["2", "1"]
    assert {a.path for a in client.list_artifacts(parent_id)} == {record.COMPARISON_FILE, record.COMPARISON_PLOT}
    folder = client.download_artifacts(parent_id, "", str(tmp_path / "artifacts"))
    with open(Path(folder, record.COMPARISON_FILE)) as handle:
        assert [r["train.lr"] for r in csv.DictReader(handle)] == ["2", "1"]


def test_nn_compares_defaults_read_without_hydra_are_the_ones_nn_run_composes(tmp_path, monkeypatch):
    from runner import config_files
    from runner.config import tracking_defaults

    assert config_files.plain_tracking_defaults() == tracking_defaults()
    (tmp_path / "tracking").mkdir()
    (tmp_path / "config.yaml").write_text("defaults:\n  - tracking: local\n  - _self_\n")
    (tmp_path / "tracking" / "local.yaml").write_text("uri: ${oc.env:STORE}\nexperiment: e\n")
    monkeypatch.setattr(config_files, "CONFIG_DIR", str(tmp_path))
    assert config_files.plain_tracking_defaults() is None  # an interpolation: Hydra's composition says


def test_a_swept_config_group_is_shown_from_the_childs_overrides(tracking_uri, experiment, client):
    """A swept key that is no param (a config group) is read from the overrides, for every child, as search_runs has it."""
    from runner.tracking.client import open_run, tracked_run

    _, parent_id = open_run(tracking_uri, experiment, "sweep over dataset",
                            {record.SWEEP_ID_TAG: "groups", record.SWEPT_KEYS_TAG: json.dumps(["dataset"])})
    for name, error in (("iris", 0.3), ("wine", 0.2)):
        with tracked_run(tracking_uri, experiment, f"dataset={name}", parent_run_id=parent_id,
                         tags={record.OVERRIDES_TAG: json.dumps([f"dataset={name}", "seed=1"])}) as run:
            run.log_metric(record.ERROR_METRIC, 0, error)
    rows = compare_sweep(tracking_uri, client.get_run(parent_id), log_to_parent=False, out=io.StringIO())
    assert [row.values for row in rows] == [{"dataset": "wine"}, {"dataset": "iris"}]

"""What this project relies on in MLflow's, Hydra's, OmegaConf's and Optuna's non-public names
(runner/tracking/mlflow_private.py, runner/hydra_private.py, runner/omegaconf_private.py,
runner/sweep/optuna_private.py), pinned: an upgrade that changes one fails here."""

import getpass
import json
import math
import sys

import numpy as np
import pytest
from conftest import plain_sqlite_reads_or_skip
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf, ValueNode

from runner import hydra_private, omegaconf_private
from runner.tracking import mlflow_private


def test_mlflow_context_tags_name_the_source_and_user(monkeypatch):
    monkeypatch.delenv("MLFLOW_RUN_CONTEXT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    tags = mlflow_private.context_tags()
    assert tags["mlflow.user"] == getpass.getuser()
    assert tags["mlflow.source.name"] == sys.argv[0] and tags["mlflow.source.type"] == "LOCAL"


def test_mlflow_applies_the_run_context_variable_last(monkeypatch):
    """tracking.client.share_context_tags hands a sweep's context to its jobs' processes this way."""
    monkeypatch.setenv("MLFLOW_RUN_CONTEXT", json.dumps({"mlflow.user": "ada", "mlflow.source.name": "nn-run"}))
    tags = mlflow_private.context_tags()
    assert tags["mlflow.user"] == "ada" and tags["mlflow.source.name"] == "nn-run"


def test_mlflow_keeps_one_engine_per_database_and_gives_them_out(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/engines.db"
    MlflowClient(uri).search_experiments()
    engines = mlflow_private.sqlalchemy_engines()
    assert any(str(engine.url) == uri for engine in engines)
    assert all(hasattr(engine, "dispose") for engine in engines)


def test_mlflow_checks_a_serving_input_against_the_saved_model(tmp_path):
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    class Doubler(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
            return 2 * np.asarray(model_input)

    example = np.array([[1.0, 2.0]])
    path = str(tmp_path / "model")
    mlflow.pyfunc.save_model(path, python_model=Doubler(), input_example=example,
                             signature=infer_signature(example, 2 * example))
    serving_input = mlflow.models.Model.load(path).get_serving_input(path)
    assert serving_input  # MLflow writes one from the input example
    mlflow_private.validate_serving_input(path, serving_input)  # a fitting input passes
    with pytest.raises(Exception):
        mlflow_private.validate_serving_input(path, '{"inputs": [["not", "numbers", "at all"]]}')


def test_hydra_names_a_job_by_its_overrides_without_the_excluded_keys():
    parsed = OverridesParser.create().parse_overrides(["train.lr=0.5", "seed=2", "tracking.uri=sqlite:///x.db"])
    assert hydra_private.overrides_dirname(parsed, "=", ",", ["tracking.uri"]) == "seed=2,train.lr=0.5"


def test_hydra_tells_config_groups_from_keys():
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from runner.config import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        loader = GlobalHydra.instance().config_loader()
        assert hydra_private.is_config_group(loader, "dataset") and hydra_private.is_config_group(loader, "train")
        assert not hydra_private.is_config_group(loader, "seed")


def test_hydra_keeps_a_failed_jobs_error_without_raising_it():
    error = ValueError("bad")
    job = JobReturn(status=JobStatus.FAILED, _return_value=error)
    assert hydra_private.job_error(job) is error
    with pytest.raises(ValueError):
        job.return_value  # the public property raises it


def test_hydra_reads_its_command_line_as_nn_run_expects():
    args = hydra_private.command_line(["-m", "--cfg", "job", "experiment=lr_sweep", "train.lr=1"])
    assert args.multirun and args.cfg == "job" and args.overrides == ["experiment=lr_sweep", "train.lr=1"]
    args = hydra_private.command_line(["--resolve", "--info"])
    assert args.info is not None and args.resolve and args.cfg is None and not args.run and not args.shell_completion
    assert not args.help and not args.multirun


def test_omegaconf_gives_the_node_of_a_value_or_none():
    cfg = OmegaConf.create({"train": {"lr": 0.5, "name": "${train.lr}"}, "hidden": [4]})
    assert isinstance(omegaconf_private.node_at(cfg, "train.lr"), ValueNode)
    assert not isinstance(omegaconf_private.node_at(cfg, "train"), ValueNode)
    assert omegaconf_private.node_at(cfg, "train.missing") is None
    assert omegaconf_private.node_at(cfg, "hidden.0") is None  # only through mappings


def test_mlflow_sql_store_gives_many_runs_metric_histories_at_once(tmp_path):
    """tracking.client.metric_histories ranks a 10,000-child sweep with one query per 500 children this way."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    client = MlflowClient(f"sqlite:///{tmp_path}/bulk.db")
    experiment = client.create_experiment("bulk")
    runs = [client.create_run(experiment).info.run_id for _ in range(3)]
    for n, run_id in enumerate(runs[:2]):
        client.log_batch(run_id, metrics=[Metric("error", 1 / (step + n + 1), 0, step) for step in (10, 0, 20)])
    client.log_batch(runs[2], metrics=[Metric("other", 1.0, 0, 0)])
    found = mlflow_private.metric_history_bulk(client, runs, "error", runs_per_query=1)
    assert sorted(found) == sorted(runs[:2])  # a run without a point of the key is left out
    for n, run_id in enumerate(runs[:2]):
        assert sorted((m.step, m.value) for m in found[run_id]) == [(s, 1 / (s + n + 1)) for s in (0, 10, 20)]
    # a tracking server's store has no such call (nothing is sent: the client only names its store here)
    assert mlflow_private.metric_history_bulk(MlflowClient("http://127.0.0.1:9"), runs, "error", 10) is None


def test_mlflow_sql_tables_give_a_parents_children_as_search_runs_does(tmp_path):
    """tracking.client.child_runs reads a sweep's children from the SQL store's tables this way."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(f"sqlite:///{tmp_path}/children.db")
    experiment = client.create_experiment("children")
    parent = client.create_run(experiment).info.run_id
    children = [client.create_run(experiment, start_time=1000 + n, run_name=f"child {n}",
                                   tags={"mlflow.parentRunId": parent, "n": str(n)}).info.run_id for n in range(3)]
    client.log_batch(children[0], metrics=[Metric("error", float("nan"), 5, 1), Metric("error", 0.5, 6, 0)],
                     params=[Param("seed", "1")], tags=[RunTag("weights_sha256", "x" * 64)])
    client.log_batch(children[1], metrics=[Metric("final_error", 0.25, 7, 20)])
    client.set_terminated(children[1], "FAILED")
    client.create_run(experiment, tags={"mlflow.parentRunId": "another"})  # not a child of this parent
    client.delete_run(client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id)  # deleted
    searched = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
                                  order_by=["attributes.start_time ASC"])
    read = mlflow_private.child_runs_bulk(client, experiment, parent, runs_per_query=2)
    assert [run.info.run_id for run in read] == [run.info.run_id for run in searched] == children
    for mine, theirs in zip(read, searched):
        assert dict(mine.info) == dict(theirs.info)
        assert mine.data.params == theirs.data.params and mine.data.tags == theirs.data.tags
        assert mine.data.metrics.keys() == theirs.data.metrics.keys()
        assert all(v == theirs.data.metrics[k] or (math.isnan(v) and math.isnan(theirs.data.metrics[k]))
                   for k, v in mine.data.metrics.items())
    assert read[0].data.metrics["error"] != read[0].data.metrics["error"]  # the latest point, NaN, as MLflow keeps it
    assert mlflow_private.child_runs_bulk(MlflowClient("http://127.0.0.1:9"), experiment, parent, 10) is None


@pytest.fixture(scope="module")
def plain_store(tracking_uri):
    """The session's store with a sweep's parent and children as MLflow's client logs them, and what surrounds them."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("plain-reads")
    other = client.create_experiment("plain-reads-other")
    parent = client.create_run(experiment, start_time=900, run_name="the sweep", tags={"sweep_id": "s"}).info.run_id
    client.create_run(experiment, start_time=800, tags={"sweep_id": "older"})
    client.create_run(other, start_time=5000, tags={"sweep_id": "elsewhere"})  # another experiment's, later
    children = [client.create_run(experiment, start_time=1000 + n % 2, run_name=f"child {n}",  # two start together
                                  tags={"mlflow.parentRunId": parent}).info.run_id for n in range(4)]
    inf = float("inf")  # MLflow stores it as a float's largest
    client.log_batch(children[0], metrics=[Metric("error", v, 5, s) for s, v in ((0, 0.5), (10, 0.25), (20, 0.1))]
                     + [Metric("final_error", 0.1, 5, 20), Metric("other", 2.0, 5, 0)],
                     params=[Param("seed", "1"), Param("lr", "0.5")],
                     tags=[RunTag("overrides", '["seed=1"]'), RunTag("pid", "12")])
    client.log_batch(children[1], metrics=[Metric("error", float("nan"), 6, 0), Metric("error", inf, 6, 10),
                                           Metric("error", 0.75, 7, 10), Metric("error", 0.5, 8, 10)],
                     params=[Param("seed", "2")])
    client.log_batch(children[2], metrics=[Metric("error", 0.3, 9, 10), Metric("error", float("nan"), 9, 20)])
    client.set_terminated(children[1], "FAILED")
    client.set_terminated(children[2])
    client.create_run(experiment, tags={"mlflow.parentRunId": "another"})  # not a child of this parent
    client.delete_run(client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id)  # deleted
    return client, tracking_uri.removeprefix("sqlite:///"), experiment, parent, children


def _as_mlflow(found):
    """mlflow_private.sqlite_runs' (info, params, tags, metrics) as comparable plain values."""
    info, params, tags, metrics = found
    return info, params, tags, {k: "nan" if math.isnan(v) else v for k, v in metrics.items()}


def _mlflows(run):
    metrics = {k: "nan" if math.isnan(v) else v for k, v in run.data.metrics.items()}
    info = {key: getattr(run.info, key) for key in ("run_id", "run_name", "experiment_id", "user_id", "status",
                                                     "start_time", "end_time", "lifecycle_stage", "artifact_uri")}
    return info, run.data.params, run.data.tags, metrics


def test_plain_sqlite_reads_give_a_sweeps_runs_as_mlflow_does(plain_store):
    """runner/tracking/sweep_store.py (nn-compare) reads a SQLite store with these queries instead of MLflow's client."""
    plain_sqlite_reads_or_skip()
    client, path, experiment, parent, children = plain_store
    connection = mlflow_private.open_sqlite(path)
    searched = client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
                                  order_by=["attributes.start_time ASC"])
    read = mlflow_private.sqlite_child_runs(connection, experiment, parent)
    assert [_as_mlflow(run) for run in read] == [_mlflows(run) for run in searched]
    assert [run[0]["run_id"] for run in read] == sorted(children[0::2]) + sorted(children[1::2])  # by time, then id
    only = mlflow_private.sqlite_child_runs(connection, experiment, parent, tags=["pid", "missing"], params=["seed"],
                                            metrics=["final_error"])
    assert [(params, tags, metrics) for _, params, tags, metrics in only] == [
        ({"seed": run.data.params["seed"]} if "seed" in run.data.params else {},
         {"pid": run.data.tags["pid"]} if "pid" in run.data.tags else {},
         {"final_error": 0.1} if "final_error" in run.data.metrics else {}) for run in searched]
    assert [info["run_name"] for info, *_ in only] == [run.info.run_name for run in searched]
    histories = mlflow_private.sqlite_child_histories(connection, experiment, parent, "error")
    assert {run_id: [(s, "nan" if math.isnan(v) else v) for s, v in points] for run_id, points in histories.items()} \
        == {run_id: sorted((m.step, "nan" if math.isnan(m.value) else m.value)
                           for m in client.get_metric_history(run_id, "error")) for run_id in children[:3]}
    assert (10, sys.float_info.max) in histories[children[1]]  # MLflow keeps an infinite value as a float's largest
    for run_id in (parent, children[1]):
        assert _as_mlflow(mlflow_private.sqlite_run(connection, run_id)) == _mlflows(client.get_run(run_id))
    assert mlflow_private.sqlite_run(connection, "0" * 32) is None
    (latest,) = client.search_runs([experiment], filter_string="tags.`sweep_id` LIKE '%'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
    assert _as_mlflow(mlflow_private.sqlite_latest_run_with_tag(connection, "plain-reads", "sweep_id")) == _mlflows(latest)
    assert mlflow_private.sqlite_latest_run_with_tag(connection, "nowhere", "sweep_id") is None
    assert mlflow_private.sqlite_latest_run_with_tag(connection, "plain-reads", "missing_tag") is None
    connection.close()


def test_a_file_put_in_a_local_artifact_folder_is_an_artifact_as_mlflow_logs_it(plain_store, tmp_path):
    """runner/tracking/sweep_store.py logs nn-compare's files to a parent run with a local artifact root this way."""
    client, _, _, parent, children = plain_store
    for name, text in (("mine.csv", "a,b\n"), ("theirs.csv", "c,d\n")):
        (tmp_path / name).write_text(text)
    artifact_uri = client.get_run(parent).info.artifact_uri
    folder = mlflow_private.local_artifact_folder(artifact_uri)
    mlflow_private.write_local_artifact(folder, str(tmp_path / "mine.csv"))
    mlflow_private.write_local_artifact(folder, str(tmp_path / "mine.csv"))  # again: replaced
    client.log_artifact(parent, str(tmp_path / "theirs.csv"))
    assert sorted(a.path for a in client.list_artifacts(parent)) == ["mine.csv", "theirs.csv"]
    download = client.download_artifacts(parent, "mine.csv", str(tmp_path / "down"))
    assert open(download).read() == "a,b\n"
    import os

    mine, theirs = (os.stat(os.path.join(folder, name)) for name in ("mine.csv", "theirs.csv"))
    assert mine.st_mode == theirs.st_mode and mine.st_size == theirs.st_size
    assert mlflow_private.local_artifact_folder("file:///tmp/a%20b/artifacts") == "/tmp/a b/artifacts"
    assert mlflow_private.local_artifact_folder("/tmp/x/artifacts") == "/tmp/x/artifacts"
    assert [mlflow_private.local_artifact_folder(uri) for uri in (
        "mlflow-artifacts:/1/abc/artifacts", "s3://bucket/1/abc/artifacts", "file://otherhost/x")] == [None] * 3


def test_mlflow_sqlite_store_is_at_the_schema_revision_the_plain_reads_know(plain_store, tmp_path):
    """mlflow_private.open_sqlite reads only a store at SQL_SCHEMA_REVISION: an MLflow that migrates its tables
    further fails here (then check the plain reads' tables and columns, and move the revision on)."""
    import shutil
    import sqlite3

    from mlflow.store.db.utils import _get_latest_schema_revision

    plain_sqlite_reads_or_skip()
    assert _get_latest_schema_revision() == mlflow_private.SQL_SCHEMA_REVISION
    _, path, *_ = plain_store  # a store MLflow made
    connection = mlflow_private.open_sqlite(path)
    assert connection is not None
    connection.close()
    shutil.copyfile(path, tmp_path / "older.db")
    with sqlite3.connect(tmp_path / "older.db") as older:
        older.execute("UPDATE alembic_version SET version_num = 'older'")  # a store MLflow would migrate first
    sqlite3.connect(tmp_path / "plain.db").execute("CREATE TABLE t (x)")  # a database that is no MLflow store
    assert [mlflow_private.open_sqlite(tmp_path / name) for name in ("older.db", "plain.db", "missing.db")] == [None] * 3
    assert not (tmp_path / "missing.db").exists()


def test_optuna_gives_a_job_the_trial_its_sweeper_asked_in_another_process(tmp_path):
    """runner/sweep/pruning.py: a job reports to its trial and asks the pruner through runner/sweep/optuna_private.py."""
    import optuna

    from runner.sweep import optuna_private

    url = f"sqlite:///{tmp_path}/optuna.db"
    sweeper = optuna.create_study(storage=url, study_name="search", pruner=optuna.pruners.NopPruner())
    asked = [sweeper.ask() for _ in range(3)]  # as the sweeper asks a batch of trials
    storage = optuna.storages.RDBStorage(url)
    trial, reported = optuna_private.existing_trial(storage, "search", 1, optuna.pruners.MedianPruner(0, 0))
    assert trial.number == asked[1].number == 1 and reported == set()
    trial.report(0.25, 100)
    assert trial.should_prune() is False  # no completed trial to compare with
    trial.set_user_attr("pruned_at_step", 100)
    (stored,) = [t for t in sweeper.get_trials() if t.number == 1]
    assert stored.intermediate_values == {100: 0.25} and stored.user_attrs == {"pruned_at_step": 100}
    assert optuna_private.existing_trial(storage, "search", 1, optuna.pruners.NopPruner())[1] == {100}
    optuna_private.close_storage(storage)
    assert storage.engine.pool.checkedout() == 0
    with pytest.raises(KeyError):
        optuna_private.existing_trial(storage, "search", 3, optuna.pruners.NopPruner())


def test_optuna_sets_a_trials_attributes_by_its_number_and_shows_the_system_ones_apart(tmp_path):
    """runner/sweep/optuna_private.set_trial_attr: the resumable search marks the process that asked each trial
    (a system attribute) and why a trial lost with it failed (a user attribute)."""
    import optuna

    from runner.sweep import optuna_private

    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(storage=url, study_name="search")
    study.ask(), study.ask()
    storage = optuna.storages.RDBStorage(url)
    optuna_private.set_trial_attr(storage, "search", 1, "owner", {"pid": "7"}, system=True)
    optuna_private.set_trial_attr(storage, "search", 1, "lost", "why")
    first, second = study.get_trials()
    assert second.system_attrs == {"owner": {"pid": "7"}} and second.user_attrs == {"lost": "why"}
    assert first.system_attrs == {} and first.user_attrs == {}
    optuna_private.close_storage(storage)

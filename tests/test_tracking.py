"""Run status and buffered logging against a real SQLite store."""

import getpass
import json
import os
import sys

import pytest
from conftest import runs_of

from runner.tracking.client import open_run, tracked_run


def test_finished_run_keeps_every_point(tracking_uri, experiment, client):
    with tracked_run(tracking_uri, experiment, "ok") as run:
        for step in range(2500):  # more than one log_batch holds
            run.log_metric("error", step, 1.0 / (step + 1))
    assert client.get_run(run.run_id).info.status == "FINISHED"
    history = client.get_metric_history(run.run_id, "error")
    assert sorted(m.step for m in history) == list(range(2500))


def test_error_marks_run_failed_with_reason_and_partial_metrics(tracking_uri, experiment, client):
    with pytest.raises(FloatingPointError):
        with tracked_run(tracking_uri, experiment, "boom") as run:
            run.log_metric("error", 0, 0.5)
            run.log_metric("error", 10, 0.25)
            raise FloatingPointError("weights diverged")
    finished = client.get_run(run.run_id)
    assert finished.info.status == "FAILED"
    assert finished.data.tags["error"] == "FloatingPointError: weights diverged"
    assert [m.value for m in sorted(client.get_metric_history(run.run_id, "error"), key=lambda m: m.step)] == [0.5, 0.25]


def test_ctrl_c_marks_run_killed_and_keeps_metrics(tracking_uri, experiment, client):
    with pytest.raises(KeyboardInterrupt):
        with tracked_run(tracking_uri, experiment, "interrupted") as run:
            run.log_metric("error", 0, 0.5)
            raise KeyboardInterrupt
    assert client.get_run(run.run_id).info.status == "KILLED"
    assert [m.value for m in client.get_metric_history(run.run_id, "error")] == [0.5]


def test_params_beyond_one_batch_are_all_logged(tracking_uri, experiment, client):
    params = {f"p.{i}": str(i) for i in range(250)}
    with tracked_run(tracking_uri, experiment, "many-params") as run:
        run.log_params(params)
    assert client.get_run(run.run_id).data.params == params
    assert len(runs_of(client, experiment)) == 1


def _engine_pools():
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    return {uri: id(engine.pool) for uri, engine in SqlAlchemyStore._engine_map.items()}


def _log_in_child(uri, experiment):
    with tracked_run(uri, experiment, "child") as run:
        run.log_metric("error", 0, 0.25)
    return _engine_pools(), run.run_id


def test_a_forked_process_logs_through_its_own_database_connections(tracking_uri, experiment, client):
    import multiprocessing

    from runner.tracking.client import forget_inherited_connections

    with tracked_run(tracking_uri, experiment, "before") as before:  # the parent holds pooled connections
        before.log_metric("error", 0, 0.5)
    parent_pools = _engine_pools()
    with multiprocessing.get_context("fork").Pool(1, initializer=forget_inherited_connections) as pool:
        child_pools, child_run = pool.apply(_log_in_child, (tracking_uri, experiment))
    assert child_pools.keys() == parent_pools.keys() and parent_pools  # the same engines, each with a new pool
    assert all(child_pools[uri] != parent_pools[uri] for uri in parent_pools)
    with tracked_run(tracking_uri, experiment, "after") as after:  # the parent's connections still work
        after.log_metric("error", 0, 0.125)
    runs = {r.info.run_name: r for r in runs_of(client, experiment)}
    assert sorted(runs) == ["after", "before", "child"] and runs["child"].info.run_id == child_run
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert [runs[n].data.metrics["error"] for n in ("before", "child", "after")] == [0.5, 0.25, 0.125]


def test_a_param_longer_than_mlflow_allows_is_cut_and_says_so(tracking_uri, experiment, client):
    from runner.tracking.client import MAX_PARAM_VALUE

    long_value = ",".join(f"class_{k:05d}" for k in range(1000))  # 11,999 characters
    with tracked_run(tracking_uri, experiment, "long") as run:
        run.log_params({"data.class_names": long_value, "short": "x" * MAX_PARAM_VALUE})
    params = client.get_run(run.run_id).data.params
    assert params["short"] == "x" * MAX_PARAM_VALUE  # at the limit: kept whole
    kept = params["data.class_names"]
    assert len(kept) == MAX_PARAM_VALUE and kept.endswith(f"... [cut: {len(long_value)} characters]")
    assert long_value.startswith(kept[:kept.index("... [cut")])


def test_runs_carry_mlflow_context_tags_in_an_experiment_marked_for_training(tracking_uri, experiment, client):
    """What the UI shows as "Created by" and "Source", and its training layout (not the GenAI one)."""
    with tracked_run(tracking_uri, experiment, "single") as run:
        pass
    tags = client.get_run(run.run_id).data.tags
    assert (tags["mlflow.user"], tags["mlflow.source.name"], tags["mlflow.source.type"]) == (
        getpass.getuser(), sys.argv[0], "LOCAL")
    assert client.get_experiment_by_name(experiment).tags["mlflow.experimentKind"] == "custom_model_development"


def test_an_experiment_nn_runner_did_not_create_keeps_its_kind(tracking_uri, experiment, client):
    client.create_experiment(experiment, tags={"mlflow.experimentKind": "genai_development"})
    with tracked_run(tracking_uri, experiment, "single"):
        pass
    assert client.get_experiment_by_name(experiment).tags["mlflow.experimentKind"] == "genai_development"


def test_a_resumed_run_made_without_context_tags_gets_them(tracking_uri, experiment, client):
    experiment_id = client.create_experiment(experiment)
    made = client.create_run(experiment_id, run_name="older")  # as an nn-runner before the context tags made it
    client.set_terminated(made.info.run_id, "KILLED")
    assert "mlflow.user" not in client.get_run(made.info.run_id).data.tags
    with tracked_run(tracking_uri, experiment, "older", resume_run_id=made.info.run_id):
        pass
    tags = client.get_run(made.info.run_id).data.tags
    assert (tags["mlflow.user"], tags["mlflow.source.name"]) == (getpass.getuser(), sys.argv[0])


def test_a_sweep_parent_hands_its_context_to_the_processes_of_its_jobs(tracking_uri, experiment, client):
    _, parent_id = open_run(tracking_uri, experiment, "sweep", {})
    parent_tags = client.get_run(parent_id).data.tags
    shared = json.loads(os.environ["MLFLOW_RUN_CONTEXT"])
    assert shared == {key: parent_tags[key] for key in ("mlflow.user", "mlflow.source.name", "mlflow.source.type")}

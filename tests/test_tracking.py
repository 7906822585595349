"""Run status and buffered logging against a real SQLite store."""

import pytest

from conftest import runs_of
from runner.tracking import tracked_run


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

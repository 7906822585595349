"""A batched sweep's process holds little per job once its jobs have run (issue 28), and each child keeps its record.

Two real batched seed sweeps (64 and 192 jobs of the seed network, 20 iterations, two forked
workers) through the CLI into a real SQLite store. A Hydra callback (HeldMemory, added with
`+hydra.callbacks`) traces the sweep's process with tracemalloc from the start of the sweep (its
workers are not traced) and notes, when the last job has returned, how much traced memory it
still holds: what each job left behind is the difference of the two sweeps over the 128 jobs
between them (what does not grow with the sweep cancels). On the code before issue 28 each job
left ~280 KB: its composed config, its JobReturn's two configs. Not a timing: bytes.
"""

import json
import os
import tracemalloc
from pathlib import Path

import pytest
from hydra.experimental.callback import Callback
from test_sweeps import TINY, nn_run_m, sweep_of

from runner.tracking import record

SIZES = (64, 192)  # jobs of the two sweeps
HELD_PER_JOB = 16 * 1024  # bytes: most a job may leave in the sweep's process (now ~1.5 KB: its slim JobReturn)


class HeldMemory(Callback):
    """Hydra callback: writes to `path` (JSON) the traced memory the sweep's process holds when the sweep ends.

    Tracing starts when Hydra makes its callbacks, before the sweep's own (MLflow is imported
    first: a fixed cost, untraced), and stops in every process forked from this one.
    """

    def __init__(self, path):
        import runner.tracking.client  # noqa: F401  MLflow, imported by the sweep's parent run anyway

        self.path = path
        os.register_at_fork(after_in_child=tracemalloc.stop)
        tracemalloc.start()

    def on_multirun_end(self, config, **kwargs):
        held = tracemalloc.get_traced_memory()[0]  # before the sweep's end: Hydra's callbacks end in reverse order
        top = tracemalloc.take_snapshot().statistics("lineno")[:8]
        tracemalloc.stop()
        Path(self.path).write_text(json.dumps({"held": held, "top": [f"{s.traceback}: {s.size} B in {s.count}"
                                                                      for s in top]}))


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, tracking_uri):
    """{jobs: (experiment, what HeldMemory wrote)} for a batched seed sweep of each size in SIZES."""
    done = {}
    for jobs in SIZES:
        folder = tmp_path_factory.mktemp(f"sweep{jobs}")
        experiment, held = f"memory-{jobs}", folder / "held.json"
        run = nn_run_m(folder, tracking_uri, experiment, "hydra/launcher=batched", "hydra.launcher.n_jobs=2",
                       f"seed=range(1,{jobs + 1})", *TINY,
                       f"+hydra.callbacks.held_memory._target_={__name__}.HeldMemory",
                       f"+hydra.callbacks.held_memory.path={held}", timeout=600,
                       env={"PYTHONPATH": os.pathsep.join([os.path.dirname(__file__), os.environ.get("PYTHONPATH", "")])})
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"Training {jobs} networks together" in run.stdout
        done[jobs] = experiment, json.loads(held.read_text())
    return done


def test_each_job_leaves_little_in_the_sweeps_process(sweeps):
    (small, (_, few)), (large, (_, many)) = sorted(sweeps.items())
    per_job = (many["held"] - few["held"]) / (large - small)
    print(f"held per job: {per_job:.0f} B")
    assert per_job < HELD_PER_JOB, (f"{per_job / 1024:.1f} KB a job stays in the sweep's process; where the "
                                    f"{large}-job sweep's memory is:\n" + "\n".join(many["top"]))


def test_every_child_keeps_its_full_record(sweeps, client, tracking_uri):
    from runner.tracking.client import metric_histories

    experiment, _ = sweeps[SIZES[0]]
    parent, children = sweep_of(client, experiment)
    assert parent.info.status == "FINISHED" and parent.data.metrics[record.CHILDREN_FINISHED_METRIC] == SIZES[0]
    assert sorted(int(c.data.params["seed"]) for c in children) == list(range(1, SIZES[0] + 1))
    params = set(children[0].data.params)
    artifacts = {a.path for a in client.list_artifacts(children[0].info.run_id)}
    assert {"model.hidden", "train.lr", "train.iterations", "seed"} <= params
    assert {record.PREDICTIONS_FILE, record.WEIGHTS_DIR, record.CONFIG_FILE} <= artifacts
    histories = metric_histories(tracking_uri, [c.info.run_id for c in children], record.ERROR_METRIC)
    for child in children:
        run_id = child.info.run_id
        assert child.info.status == "FINISHED" and set(child.data.params) == params
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert json.loads(child.data.tags[record.OVERRIDES_TAG])[0] == f"seed={child.data.params['seed']}"
        assert len(child.data.tags[record.WEIGHTS_HASH_TAG]) == 64
        assert set(child.data.metrics) == {record.ERROR_METRIC, record.final_metric(record.ERROR_METRIC)}
        # the bulk query (one for every child) returns what the per-run one does
        alone = sorted((m.step, m.value) for m in client.get_metric_history(run_id, record.ERROR_METRIC))
        assert histories[run_id] == alone and [step for step, _ in alone] == [0, 10, 20]
        assert {a.path for a in client.list_artifacts(run_id)} == artifacts
        assert client.get_logged_model(child.outputs.model_outputs[0].model_id).status == "READY"

"""A batched sweep's process holds little per job once its jobs have run (issue 28), and each child keeps its record.

Two real batched seed sweeps (32 and 96 jobs of the seed network, 20 iterations, two forked
workers) through the CLI into a real SQLite store. A Hydra callback (HeldMemory, added with
`+hydra.callbacks`) traces the sweep's process with tracemalloc from the start of the sweep (its
workers are not traced) and notes, when the last job has returned, how much traced memory it
still holds: what each job left behind is the difference of the two sweeps over the 64 jobs
between them (what does not grow with the sweep cancels). On the code before issue 28 each job
left ~300 KB: its composed config, its JobReturn's two configs. Not a timing: bytes. The children's
records are read back (the bulk history query against the per-run one), and the comparison plot of
thousands of runs is checked to draw a few hundred curves and summarise them all.
"""

import json
import math
import os
import tracemalloc
from pathlib import Path

import pytest
from hydra.experimental.callback import Callback
from test_sweeps import TINY, nn_run_m, sweep_of

from runner.tracking import record

SIZES = (32, 96)  # jobs of the two sweeps
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
                       env={"PYTHONPATH": os.pathsep.join([os.path.dirname(__file__),
                                                           os.environ.get("PYTHONPATH", "")])})
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


def test_a_comparison_of_thousands_of_runs_draws_a_few_hundred_and_summarises_them_all():
    import numpy as np

    from runner.plots import BAND, MAX_CURVES, new_figure, plot_other_curves

    curves = [[(0, 0.5), (10, 0.5 / (n + 1)), (20, 0.25 / (n + 1))] for n in range(2000)]  # in rank order
    _, axes = new_figure(9, 5.5)
    plot_other_curves(axes, curves, named=10)  # the best 10 are the caller's
    grey, median = axes.lines  # the grey curves are one line, a NaN between two runs' curves
    (band,) = axes.collections
    drawn = grey_curves(grey)
    assert len(drawn) == MAX_CURVES - 10
    assert [drawn[0], drawn[-1]] == [curves[0], curves[-1]]
    assert drawn == [curves[round(n * (len(curves) - 1) / (len(drawn) - 1))] for n in range(len(drawn))]  # by rank
    assert list(median.get_xdata()) == [0, 10, 20]
    at_step = [[c[k][1] for c in curves] for k in range(3)]
    assert list(median.get_ydata()) == pytest.approx([np.median(values) for values in at_step])
    low, high = band.get_paths()[0].vertices[:, 1].min(), band.get_paths()[0].vertices[:, 1].max()
    assert (low, high) == pytest.approx((min(np.percentile(v, BAND[0]) for v in at_step),
                                         max(np.percentile(v, BAND[1]) for v in at_step)))
    assert [artist.get_label() for artist in (grey, band, median)] == [
        "290 of the other 2000 runs, evenly by rank", "10-90% of the other 2000 runs at each step",
        "median of the other 2000 runs"]
    _, axes = new_figure(9, 5.5)  # up to MAX_CURVES runs in all: every curve, nothing summarised
    plot_other_curves(axes, curves[:MAX_CURVES - 10], named=10)
    (grey,) = axes.lines
    assert grey_curves(grey) == curves[:MAX_CURVES - 10] and not axes.collections
    _, axes = new_figure(9, 5.5)  # a linear axis (an accuracy) shows the zeros a log axis leaves out
    plot_other_curves(axes, [[(0, 0.0), (10, 1.0)]] * 400, named=0, log=False)
    assert grey_curves(axes.lines[0])[0] == [(0, 0.0), (10, 1.0)]


def grey_curves(line):
    """The [(step, value)] curves of a line that draws many, a NaN point between two."""
    curves, current = [], []
    for step, value in zip(line.get_xdata(), line.get_ydata()):
        if math.isnan(step):
            curves.append(current)
            current = []
        else:
            current.append((step, value))
    return curves

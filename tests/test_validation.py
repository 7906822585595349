"""The validation split (dataset.val_fraction) and the objective a sweep optimises (sweep.objective).

Oracles: the test split's own draw written out plainly, the scaling statistics computed with
NumPy from the training rows, a plain forward pass (tests/oracles.py), runs read back from a
real SQLite store, and real `python -m runner` processes for the one-line errors and the sweep.
"""

import io
import json
import subprocess

import numpy as np
import pytest
from conftest import NN_RUN, compose_config, runs_of
from oracles import forward

from runner import checkpoint, objective
from runner.data.datasets import load_dataset
from runner.data.split import split_rows, validation_rows
from runner.config import ConfigError
from runner.job import initial_weights, load_data, prepare_job, run_job
from runner.nn.stacked import train_stacked
from runner.nn.training import shuffle_rng, train
from runner.tracking import record

IRIS = dict(test_fraction=0.2, split_seed=0, scale="none", bias=False)


def groups_of(y):
    """Each row's stratum: the rank of its target row among the distinct target rows."""
    return np.unique(y, axis=0, return_inverse=True)[1].reshape(-1)


def plain_test_rows(labels, fraction, seed):
    """The test draw as it was before there was a validation split: per stratum, in order, one RandomState."""
    rng = np.random.RandomState(seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == k))[:int(np.floor(fraction * n + 0.5))]
                                   for k, n in zip(*np.unique(labels, return_counts=True))]))


def test_the_validation_split_is_stratified_disjoint_seeded_and_leaves_the_test_rows_alone():
    data = load_dataset("iris", **IRIS)
    full = load_dataset("iris", test_fraction=0.0, scale="none", bias=False)
    labels = np.argmax(full.y, axis=1)
    train, test = split_rows(full.y, 0.2, 0)
    assert np.array_equal(test, plain_test_rows(groups_of(full.y), 0.2, 0))
    rest, val = validation_rows(full.y, train, 0.2, 0.2, 0)
    assert np.bincount(labels[val]).tolist() == [10, 10, 10]  # round(0.2 * 50) of every class
    assert np.bincount(labels[rest]).tolist() == [30, 30, 30]
    assert not set(val) & set(test) and not set(val) & set(rest)
    assert sorted([*rest, *val, *test]) == list(range(150))
    assert np.array_equal(validation_rows(full.y, train, 0.2, 0.2, 0)[1], val)  # the same seed: the same rows
    assert not np.array_equal(validation_rows(full.y, *split_rows(full.y, 0.2, 1)[:1], 0.2, 0.2, 1)[1], val)
    for fraction in (0.1, 0.25, 0.5):
        split = load_dataset("iris", val_fraction=fraction, **IRIS)
        assert np.array_equal(split.X_test, data.X_test) and np.array_equal(split.y_test, data.y_test)
        assert len(split.X_val) == 3 * int(np.floor(fraction * 50 + 0.5))
        assert len(split.X) + len(split.X_val) == len(data.X) == 120


@pytest.mark.parametrize("dataset", ["seed", "iris", "wine", "moons", "parity", "breast_cancer"])
def test_every_data_sets_config_keeps_its_test_rows(dataset):
    cfg = compose_config(f"dataset={dataset}", "dataset.scale=none", "dataset.bias=false")
    assert cfg.dataset.val_fraction == 0.0  # every data set's YAML has the key, off
    data = load_data(cfg.dataset)
    whole = load_dataset(**{**cfg.dataset, "test_fraction": 0.0})
    test = plain_test_rows(groups_of(whole.y), cfg.dataset.test_fraction, cfg.dataset.split_seed)
    train = np.setdiff1d(np.arange(len(whole.y)), test)
    assert np.array_equal(data.X, whole.X[train]) and np.array_equal(data.y, whole.y[train])
    assert data.X_val is None and data.y_val is None
    if len(test):
        assert np.array_equal(data.X_test, whole.X[test])


def test_scaling_is_fitted_on_the_training_rows_alone():
    raw = load_dataset("wine", test_fraction=0.2, val_fraction=0.25, split_seed=3, scale="none", bias=False)
    for kind in ("standard", "minmax"):
        data = load_dataset("wine", test_fraction=0.2, val_fraction=0.25, split_seed=3, scale=kind, bias=False)
        if kind == "standard":
            offset, spread = raw.X.mean(axis=0), raw.X.std(axis=0)
        else:
            offset, spread = raw.X.min(axis=0), raw.X.max(axis=0) - raw.X.min(axis=0)
        for scaled, plain in ((data.X, raw.X), (data.X_val, raw.X_val), (data.X_test, raw.X_test)):
            assert np.array_equal(scaled, (plain - offset) / spread)
    with_val = np.vstack([raw.X, raw.X_val])  # statistics over every non-test row would differ
    assert not np.allclose(with_val.mean(axis=0), raw.X.mean(axis=0))


def test_val_error_at_every_logged_step_is_the_plain_error_of_the_weights_of_that_step():
    data = load_dataset("iris", test_fraction=0.2, val_fraction=0.2, scale="standard")
    weights = initial_weights(compose_config("dataset=iris", "model.hidden=[5]"), data)
    options = dict(log_every=10, lr=0.05, X_test=data.X_test, y_test=data.y_test, X_val=data.X_val, y_val=data.y_val,
                   classify=True)
    result = train(weights, data.X, data.y, iterations=30, **options)
    assert result.steps == [0, 10, 20, 30]
    for step, scores in zip(result.steps, result.history):
        at_step = train(weights, data.X, data.y, iterations=step, **options).weights if step else weights
        outputs = forward(at_step, data.X_val)[-1]
        assert scores.val_error == pytest.approx(np.mean(np.abs(data.y_val - outputs)), abs=1e-15)
        right = np.argmax(outputs, axis=1) == np.argmax(data.y_val, axis=1)
        assert scores.val_accuracy == np.mean(right)
    assert result.final.test_error is not None and result.final.val_error != result.final.test_error


def test_a_stacked_training_with_a_validation_split_is_each_single_training():
    data = load_dataset("iris", test_fraction=0.2, val_fraction=0.2, scale="standard")
    cfgs = [compose_config("dataset=iris", "model.hidden=[4]", f"seed={seed}") for seed in (1, 2, 3)]
    lrs = [0.05, 0.1, 0.05]
    splits = dict(X_test=data.X_test, y_test=data.y_test, X_val=data.X_val, y_val=data.y_val, classify=True)
    results, diverged = train_stacked([initial_weights(cfg, data) for cfg in cfgs], data.X, data.y, lrs=lrs,
                                      iterations=40, log_every=10, **splits)
    assert diverged == []
    for cfg, lr, stacked in zip(cfgs, lrs, results):
        alone = train(initial_weights(cfg, data), data.X, data.y, iterations=40, log_every=10, lr=lr, **splits)
        assert all(np.array_equal(a, b) for a, b in zip(stacked.weights, alone.weights))
        assert stacked.history == alone.history and stacked.steps == alone.steps
        assert all(s.val_error is not None and s.val_accuracy is not None for s in stacked.history)


class StopAt:
    """Checkpoint through runner.checkpoint's files at the first safe point at or after `step`, then stop."""

    def __init__(self, folder, step):
        self.saver, self.step = checkpoint.Checkpointer(folder, "run", "sha", every_seconds=1e9), step

    def due(self):
        return True

    def save(self, state):
        if state.step >= self.step:
            self.saver.save(state)
            raise KeyboardInterrupt


def test_a_resumed_training_keeps_the_validation_scores_bit_for_bit(tmp_path):
    cfg = compose_config("dataset=iris", "dataset.val_fraction=0.2", "train.batch_size=16", "train.lr=0.05",
                         "train.iterations=300", "train.log_every=50")
    data = load_data(cfg.dataset)

    def training(**options):
        return train(initial_weights(cfg, data), data.X, data.y, iterations=300, log_every=50, lr=0.05,
                     batch_size=16, rng=shuffle_rng(cfg.seed), X_test=data.X_test, y_test=data.y_test,
                     X_val=data.X_val, y_val=data.y_val, classify=True, **options)

    whole = training()
    with pytest.raises(KeyboardInterrupt):
        training(checkpoints=StopAt(str(tmp_path), 120))
    state = checkpoint.load_state(str(tmp_path), checkpoint.read_meta(str(tmp_path)))
    assert state.history and all(s.val_error is not None for s in state.history)
    resumed = training(resume=state)
    assert resumed.history == whole.history
    assert all(np.array_equal(a, b) for a, b in zip(resumed.weights, whole.weights))


def nn_run(cwd, *args):
    return subprocess.run([*NN_RUN, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def two_class_csv(folder):
    """Class a has 2 rows, class b 10: with val 0.3 and test 0.3 class a keeps no training row."""
    lines = ["x,label"] + [f"{i},a" for i in range(2)] + [f"{i},b" for i in range(10, 20)]
    (folder / "two.csv").write_text("\n".join(lines) + "\n")
    return "dataset.path=two.csv"


BAD_VALUES = [
    (["dataset=iris", "dataset.val_fraction=-0.1"], "dataset.val_fraction=-0.1 is not allowed: must be >= 0 and < 1"),
    (["dataset=iris", "dataset.val_fraction=1.0"], "dataset.val_fraction=1.0 is not allowed: must be >= 0 and < 1"),
    (["dataset=iris", "dataset.val_fraction=0.8"],
     "dataset.val_fraction=0.8 is not allowed: val_fraction + test_fraction must be < 1 (test_fraction is 0.2): "
     "both are shares of all rows"),
    (["dataset=xor", "dataset.val_fraction=0.1"],
     "dataset.val_fraction=0.1 is not allowed: leaves the validation split empty (4 rows); 0 means no validation "
     "split"),
    (["dataset=iris", "dataset.test_fraction=0.5", "dataset.val_fraction=0.49"],
     "dataset.val_fraction=0.49 is not allowed: leaves the training split empty (150 rows, 75 of them not held out "
     "for testing)"),
    (["dataset=csv", "CSV", "dataset.test_fraction=0.3", "dataset.val_fraction=0.3"],
     "dataset.val_fraction=0.3 is not allowed: leaves a class with no training rows; a smaller val_fraction or "
     "test_fraction keeps one"),
    (["sweep.objective=val_error"],
     "sweep.objective='val_error' is not allowed: there is no validation split (dataset.val_fraction is 0.0); set "
     "dataset.val_fraction > 0, or use auto"),
    (["sweep.objective=test_error"],
     "sweep.objective='test_error' is not allowed: there is no test split (dataset.test_fraction is 0.0); set "
     "dataset.test_fraction > 0, or use auto"),
    (["dataset=xor", "dataset.val_fraction=0.5", "sweep.objective=val_accuracy"],
     "sweep.objective='val_accuracy' is not allowed: the data set has no classes, so no accuracy; use an error: "
     "auto, error, val_error or test_error"),
    (["sweep.objective=best"],
     "sweep.objective='best' is not allowed: one of auto, error, val_error, val_accuracy, test_error, test_accuracy"),
]
BAD_IDS = ["negative", "one", "val+test>=1", "empty validation", "empty training", "empty class", "val without split",
           "test without split", "accuracy without classes", "unknown"]
BY_NN_RUN = {"one", "val+test>=1", "empty class", "val without split", "accuracy without classes"}  # ~3 s each


@pytest.mark.parametrize("args, message", BAD_VALUES, ids=BAD_IDS)
def test_a_bad_value_is_one_line_exit_2_and_no_run(tmp_path, request, args, message):
    args = [two_class_csv(tmp_path) if arg == "CSV" else arg for arg in args]
    if request.node.callspec.id not in BY_NN_RUN:  # the same message, from the same check, in this process
        with pytest.raises(ConfigError) as refused:
            prepare_job(compose_config(*args, f"tracking.uri=sqlite:///{tmp_path}/mlflow.db"))
        assert str(refused.value) == message
        return
    done = nn_run(tmp_path, *args, "train.iterations=10")
    assert (done.returncode, done.stdout, done.stderr) == (2, "", f"nn-run: {message}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["two.csv"] if "dataset=csv" in args else [])


def test_the_objective_is_named_by_the_config_and_points_its_direction():
    cases = {("auto", 0.0, 0.2): "error", ("auto", 0.2, 0.2): "val_error", ("auto", 0.2, 0.0): "val_error",
             ("val_accuracy", 0.1, 0.0): "val_accuracy", ("test_error", 0.0, 0.2): "test_error",
             ("error", 0.3, 0.2): "error"}
    for (name, val, test), metric in cases.items():
        assert objective.resolve(name, val, test, classify=True) == metric
    assert objective.configured(compose_config("dataset=iris", "dataset.val_fraction=0.1")) == "val_error"
    assert objective.configured(compose_config("dataset=iris")) == "error"
    assert [objective.direction(m) for m in record.RANKING_METRICS] == [
        "minimize", "minimize", "maximize", "minimize", "maximize"]


def test_the_task_returns_the_objective_and_a_finished_job_returns_the_same(tmp_path, tracking_uri, experiment,
                                                                          client, caplog):
    from runner.tracking.client import close_run, open_run

    overrides = ["dataset=iris", "dataset.val_fraction=0.2", "model.hidden=[3]", "train.lr=0.05",
                 "train.iterations=20", "train.log_every=10", "tracking.log_model=false",
                 f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"]
    result = run_job(compose_config(*overrides), overrides, "val")
    assert result.objective == "val_error" and result.objective_value == result.final_metrics["final_val_error"]
    assert result.final_error == result.final_metrics["final_error"] != result.objective_value
    run = client.get_run(result.run_id)
    assert run.data.tags[record.OBJECTIVE_TAG] == "val_error"
    assert run.data.params["data.val_rows"] == "30" and run.data.params["data.rows"] == "90"
    assert [m.step for m in client.get_metric_history(result.run_id, "val_accuracy")] == [0, 10, 20]
    contexts = {i.tags[0].value for i in run.inputs.dataset_inputs}
    assert contexts == {record.TRAINING_CONTEXT, record.VALIDATION_CONTEXT, record.TESTING_CONTEXT}
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {record.VAL_PREDICTIONS_FILE, record.TEST_PREDICTIONS_FILE} <= artifacts

    # a sweep's job whose run finished before is kept, and hands back the same objective
    _, parent = open_run(tracking_uri, experiment, "sweep", {})
    leaky = [*overrides, "sweep.objective=test_accuracy"]
    caplog.set_level("WARNING", logger="runner.objective")
    first = run_job(compose_config(*leaky), leaky, "job", parent_run_id=parent, output_dir=str(tmp_path))
    kept = run_job(compose_config(*leaky), leaky, "job", parent_run_id=parent, output_dir=str(tmp_path))
    close_run(tracking_uri, parent, "FINISHED", {})
    assert (kept.run_id, kept.objective, kept.objective_value) == (first.run_id, "test_accuracy",
                                                                   first.final_metrics["final_test_accuracy"])
    assert kept.final_metrics == first.final_metrics
    def warnings():
        return [r.getMessage() for r in caplog.records if r.name == "runner.objective"]

    assert warnings() == []  # in a sweep only the sweep's start warns
    run_job(compose_config(*leaky), leaky, "single")
    assert len(warnings()) == 1 and "chooses by the test split" in warnings()[0]


def test_a_sweep_ranks_by_its_objective_says_so_and_shows_the_best_runs_test_score(tmp_path, tracking_uri, experiment,
                                                                                  client):
    from runner.sweep.compare import compare_sweep

    done = nn_run(tmp_path, "-m", "dataset=iris", "dataset.val_fraction=0.2", "seed=1,2,3", "model.hidden=[3]",
                  "train.lr=0.05", "train.iterations=30", "train.log_every=10", "tracking.log_model=false",
                  "sweep.objective=val_error", f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}")
    assert done.returncode == 0, done.stderr
    (parent,) = [r for r in runs_of(client, experiment) if record.SWEEP_ID_TAG in r.data.tags]
    children = [r for r in runs_of(client, experiment) if record.SWEEP_ID_TAG not in r.data.tags]
    assert parent.data.tags[record.OBJECTIVE_TAG] == "val_error"
    val = {c.info.run_id: c.data.metrics["final_val_error"] for c in children}
    assert len(set(val.values())) == 3
    lines = done.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "runs ranked by" in line)
    assert lines[start].endswith("3 runs ranked by final val_error (the sweep's objective), lowest first")
    assert lines[start + 1].split()[:3] == ["rank", "seed", "final_val_error"]
    ranked = [line.split()[-1] for line in lines[start + 2:start + 5]]
    assert ranked == sorted(val, key=val.get)
    best = next(c for c in children if c.info.run_id == ranked[0])
    assert lines[start + 5] == (
        f"best by val_error: run {ranked[0]} (seed={best.data.params['seed']}): final_val_error "
        f"{val[ranked[0]]:.6g}, final_test_error {best.data.metrics['final_test_error']:.6g} (the test split: "
        "reported, not used to choose)")
    assert done.stderr.count("chooses by the test split") == 0
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert record.comparison_files("val_error")[0] in artifacts

    out = io.StringIO()  # another metric on request: an accuracy ranks highest first
    rows = compare_sweep(tracking_uri, client.get_run(parent.info.run_id), log_to_parent=False, out=out,
                         metric="val_accuracy")
    accuracy = [r.final_error for r in rows]
    assert accuracy == sorted(accuracy, reverse=True)
    assert "3 runs ranked by final val_accuracy, highest first" in out.getvalue()
    assert "final_test_accuracy" in out.getvalue()


def test_a_sweep_naming_a_test_metric_warns_once(tmp_path, tracking_uri, experiment):
    done = nn_run(tmp_path, "-m", "dataset=iris", "seed=1,2", "model.hidden=[3]", "train.lr=0.05",
                  "train.iterations=10", "train.log_every=10", "tracking.log_model=false",
                  "sweep.objective=test_error", "hydra.callbacks.sweep_tracking.compare=false",
                  f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}")
    assert done.returncode == 0, done.stderr
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if "chooses by the test split" in line]
    assert len(warnings) == 1
    sweep = json.loads((next(tmp_path.glob("multirun/*/*")) / "mlflow_sweep.json").read_text())
    assert sweep["parent_run_id"]


def test_a_search_whose_direction_opposes_its_objective_does_not_start(tmp_path):
    done = nn_run(tmp_path, "-m", "hydra/sweeper=nn_optuna", "hydra.sweeper.n_trials=2", "dataset=iris",
                  "dataset.val_fraction=0.2", "sweep.objective=val_accuracy", "train.lr=interval(0.01,0.1)")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == ("nn-run: the sweep cannot start: hydra.sweeper.direction=minimize is not allowed: the "
                           "sweep's objective val_accuracy (sweep.objective=val_accuracy) is to maximize\n")
    assert list(tmp_path.iterdir()) == []


def test_a_search_optimises_the_validation_error_its_jobs_return(tmp_path, tracking_uri, experiment, client):
    import yaml

    done = nn_run(tmp_path, "-m", "hydra/sweeper=nn_optuna", "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=1",
                  "dataset=iris", "dataset.val_fraction=0.2", "model.hidden=[3]", "train.lr=interval(0.01,0.2)",
                  "train.iterations=20", "train.log_every=10", "tracking.log_model=false",
                  f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}")
    assert done.returncode == 0, done.stderr
    (parent,) = [r for r in runs_of(client, experiment) if record.SWEEP_ID_TAG in r.data.tags]
    children = [r for r in runs_of(client, experiment) if record.SWEEP_ID_TAG not in r.data.tags]
    val = {float(c.data.params["train.lr"]): c.data.metrics["final_val_error"] for c in children}
    results = yaml.safe_load((next(tmp_path.glob("multirun/*/*")) / "optimization_results.yaml").read_text())
    assert parent.data.tags[record.OBJECTIVE_TAG] == "val_error" and len(val) == 3
    assert results["best_value"] == min(val.values()) and val[results["best_params"]["train.lr"]] == min(val.values())
    assert min(val.values()) != min(c.data.metrics["final_error"] for c in children)  # not the training error

"""Pruning: a run its should_stop stops at a logged step, alone, in a stacked batch, logged, resumed and rerun;
then real searches with nn_optuna and a median pruner, on the basic and the batched launcher.

The oracle is the same training not stopped, in this process: every point up to the stop step, and
the weights at that step (the run trained for exactly that many iterations), bit for bit.
"""

import numpy as np
import optuna
import pytest
from conftest import compose_config, runs_of
from optuna.trial import TrialState
from test_batched import same_training
from test_sweeps import nn_run_m, sweep_of

from runner import checkpoint
from runner.cli.rerun import nn_rerun
from runner.job import initial_weights, load_data, run_job
from runner.nn.network import init_weights, layer_sizes
from runner.nn.stacked import train_stacked
from runner.nn.training import shuffle_rng, train
from runner.sweep.batches import train_batch
from runner.sweep.compare import sweep_rows
from runner.tracking import record


def stop_at(step, asked=None):
    """A should_stop / on_log that says True at `step` (and notes each step it was asked at in `asked`)."""
    def should_stop(at, scores):
        if asked is not None:
            asked.append(at)
        return at == step

    return should_stop


def training(cfg, data, **options):
    options = {"iterations": cfg.train.iterations, **options}
    return train(initial_weights(cfg, data), data.X, data.y, log_every=cfg.train.log_every, lr=cfg.train.lr,
                 hidden_activation=cfg.model.activation, output_activation=cfg.model.output,
                 batch_size=cfg.train.batch_size, rng=shuffle_rng(cfg.seed), X_test=data.X_test, y_test=data.y_test,
                 X_val=data.X_val, y_val=data.y_val, classify=data.classes is not None, **options)


@pytest.mark.parametrize("overrides", [
    ["train.iterations=3000", "train.log_every=500"],
    ["dataset=iris", "train.batch_size=16", "train.lr=0.05", "train.iterations=700", "train.log_every=100"],
], ids=["full batch", "mini-batches with a test split"])
@pytest.mark.parametrize("where", [0, 0.4])
def test_training_stops_at_the_step_on_log_asks_with_the_points_of_a_run_that_goes_on(overrides, where):
    cfg = compose_config(*overrides)
    data = load_data(cfg.dataset)
    whole = training(cfg, data)
    step = int(where * cfg.train.iterations) // cfg.train.log_every * cfg.train.log_every
    asked = []
    stopped = training(cfg, data, on_log=stop_at(step, asked))
    assert stopped.stopped_at == step and asked == stopped.steps == [s for s in whole.steps if s <= step]
    assert stopped.history == whole.history[:len(stopped.steps)]
    assert stopped.last_output is None
    trained_to_step = training(cfg, data, iterations=step)  # the weights after `step` updates
    assert all(np.array_equal(a, b) for a, b in zip(stopped.weights, trained_to_step.weights))
    assert stopped.final == trained_to_step.final == whole.history[len(stopped.steps) - 1]


def test_a_stop_asked_at_the_last_step_changes_nothing():
    cfg = compose_config("train.iterations=1000", "train.log_every=500")
    data = load_data(cfg.dataset)
    whole, asked_last = training(cfg, data), training(cfg, data, on_log=stop_at(1000))
    assert asked_last.stopped_at is None and same_training(asked_last, whole)


def test_networks_stopped_in_a_stack_stop_alone_and_their_stack_mates_are_their_single_runs():
    data = load_data(compose_config("dataset=iris").dataset)
    sizes = layer_sizes(data.X.shape[1], [8], data.y.shape[1])
    lrs = [0.05, 0.01, 0.05, 0.02, 0.05, 0.03]
    initials = [init_weights(sizes, np.random.RandomState(seed), "xavier") for seed in range(len(lrs))]
    stops = {1: 100, 3: 0, 4: 200}  # network: the step it stops at
    options = {"iterations": 300, "log_every": 100, "output_activation": "softmax", "X_test": data.X_test,
               "y_test": data.y_test, "classify": True}
    results, diverged = train_stacked(initials, data.X, data.y, lrs=lrs, **options,
                                      on_logs=[stop_at(stops[n]) if n in stops else None for n in range(len(lrs))])
    assert diverged == []
    for n, (initial, lr) in enumerate(zip(initials, lrs)):
        alone = train(initial, data.X, data.y, lr=lr, on_log=stop_at(stops.get(n)), **options)
        assert results[n].stopped_at == alone.stopped_at == stops.get(n)
        assert same_training(results[n], alone), f"network {n} differs from its single run"
    assert results[3].steps == [0] and results[4].steps == [0, 100, 200] and results[0].steps == [0, 100, 200, 300]


def test_a_network_that_diverges_leaves_the_stack_without_asking_its_on_log():
    data = load_data(compose_config().dataset)
    initials = [init_weights([3, 4, 1], np.random.RandomState(1))] * 3
    asked = [[], [], []]
    results, diverged = train_stacked(initials, data.X, data.y, lrs=[0.5, 1e300, 1.0], iterations=20, log_every=10,
                                      hidden_activation="relu", on_logs=[stop_at(None, a) for a in asked])
    assert diverged == [1] and asked[1] == [0] and asked[0] == asked[2] == [0, 10, 20]
    for n in (0, 2):
        alone = train(initials[n], data.X, data.y, lr=[0.5, 1e300, 1.0][n], iterations=20, log_every=10,
                      hidden_activation="relu")
        assert same_training(results[n], alone)


def points(client, run_id, key):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


STOPPED = ["dataset=iris", "train.lr=0.05", "train.iterations=600", "train.log_every=100", "tracking.log_model=false"]


def assert_pruned_run(client, run_id, cfg, step, folder):
    """The run is FINISHED, tagged, with the stopped training's points up to `step` and its final state of `step`."""
    data = load_data(cfg.dataset)
    stopped, whole = training(cfg, data, on_log=stop_at(step)), training(cfg, data)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags[record.PRUNED_AT_TAG] == str(step)
    upto = [s for s in whole.steps if s <= step]
    assert points(client, run_id, record.ERROR_METRIC) == list(zip(upto, whole.errors))
    assert points(client, run_id, record.TEST_ERROR_METRIC) == [(s, h.test_error) for s, h in zip(upto, whole.history)]
    assert points(client, run_id, record.final_metric(record.ERROR_METRIC)) == [(step, stopped.final.error)]
    assert points(client, run_id, record.final_metric(record.TEST_ACCURACY_METRIC)) == [
        (step, stopped.final.test_accuracy)]
    artifacts = client.download_artifacts(run_id, "", str(folder))
    assert all(np.array_equal(a, b) for a, b in zip(record.read_weights(artifacts), stopped.weights))
    assert run.data.tags[record.WEIGHTS_HASH_TAG] == record.weights_sha256(stopped.weights)
    header = open(f"{artifacts}/{record.PREDICTIONS_FILE}").readline()
    assert "last_iteration_output" not in header  # no iteration ran after the stop step's scores


def test_a_job_stopped_by_should_stop_is_a_finished_run_tagged_with_its_step_and_its_sweep_keeps_it(
        tmp_path, tracking_uri, experiment, client):
    overrides = [*STOPPED, f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"]
    cfg = compose_config(*overrides)
    asked = []
    result = run_job(cfg, overrides, "pruned", output_dir=str(tmp_path), should_stop=stop_at(300, asked))
    assert asked == [0, 100, 200, 300] and result.pruned_at_step == 300
    assert_pruned_run(client, result.run_id, cfg, 300, tmp_path / "artifacts")
    assert checkpoint.read_meta(str(tmp_path)) == {"run_id": result.run_id, "config_sha256": checkpoint.config_sha256(
        cfg), "status": checkpoint.FINISHED, "pruned_at_step": 300}

    # a sweep continued into the job's folder keeps the pruned run as it is, pruned
    parent = client.create_run(client.get_experiment_by_name(experiment).experiment_id)
    kept = run_job(cfg, overrides, "pruned", parent_run_id=parent.info.run_id,
                   experiment_id=parent.info.experiment_id, output_dir=str(tmp_path), should_stop=stop_at(100))
    assert (kept.run_id, kept.pruned_at_step, kept.final_error) == (result.run_id, 300, result.final_error)
    assert len(runs_of(client, experiment)) == 2  # the source and the parent made here: no new run


def test_a_batched_network_stopped_is_logged_pruned_and_the_others_as_their_single_runs(
        tmp_path, tracking_uri, experiment, client):
    where = [f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"]
    jobs = [[*STOPPED, f"seed={seed}", *where] for seed in (1, 2, 3)]
    configs = [compose_config(*overrides) for overrides in jobs]
    trained = train_batch(configs, stoppers=[None, stop_at(200), None])
    results = [run_job(cfg, overrides, f"batched {n}", trained=done, should_stop=stop_at(0))  # trained: not asked
               for n, (cfg, overrides, done) in enumerate(zip(configs, jobs, trained))]
    assert [r.pruned_at_step for r in results] == [None, 200, None]
    assert_pruned_run(client, results[1].run_id, configs[1], 200, tmp_path / "pruned")
    for n in (0, 2):
        whole = training(configs[n], load_data(configs[n].dataset))
        run = client.get_run(results[n].run_id)
        assert record.PRUNED_AT_TAG not in run.data.tags
        assert run.data.tags[record.WEIGHTS_HASH_TAG] == record.weights_sha256(whole.weights)
        assert points(client, results[n].run_id, record.ERROR_METRIC) == list(zip(whole.steps, whole.errors))


def test_nn_rerun_of_a_pruned_run_trains_to_its_step_and_reproduces_it(tmp_path, tracking_uri, experiment, client,
                                                                        capsys):
    overrides = [*STOPPED, f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"]
    source = run_job(compose_config(*overrides), overrides, "source", should_stop=stop_at(400))
    assert nn_rerun([source.run_id, "--tracking-uri", tracking_uri]) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"run {source.run_id} was pruned at step 400: the rerun stops there too" in out and out[-1] == "reproduced"
    (new,) = [r for r in runs_of(client, experiment) if r.data.tags.get(record.RERUN_OF_TAG) == source.run_id]
    assert new.data.tags[record.PRUNED_AT_TAG] == "400"
    assert points(client, new.info.run_id, record.ERROR_METRIC) == points(client, source.run_id, record.ERROR_METRIC)


# learning rates from 1e-4 to 0.1 on iris with a validation split (the objective: val_error): the small ones
# barely move in 1000 iterations, so the median pruner stops the hopeless trials at their first steps
TRIAL = ["dataset=iris", "dataset.val_fraction=0.2", "train.iterations=1000", "train.log_every=100"]
SEARCH = ["hydra/sweeper=nn_optuna", "hydra.sweeper.n_trials=24", "hydra.sweeper.sampler.name=random",
          "hydra.sweeper.sampler.seed=1", "hydra.sweeper.pruner.name=median", "hydra.sweeper.pruner.n_startup_trials=2",
          "train.lr=tag(log,interval(0.0001,0.1))", *TRIAL, "tracking.log_model=false", "hydra.sweep.dir=search"]
LAUNCHERS = {"basic": [], "batched": ["hydra/launcher=batched", "hydra.launcher.n_jobs=1", "hydra.sweeper.n_jobs=4"]}


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_search_with_a_median_pruner_stops_hopeless_trials_and_counts_them(tmp_path, tracking_uri, experiment,
                                                                              client, capsys, launcher):
    done = nn_run_m(tmp_path, tracking_uri, experiment, *SEARCH, *LAUNCHERS[launcher])
    assert done.returncode == 0, done.stderr
    parent, children = sweep_of(client, experiment)
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path}/search/optuna.db")
    trials = {t.number: t for t in study.trials}
    pruned = [c for c in children if record.PRUNED_AT_TAG in c.data.tags]
    assert 0 < len(pruned) < len(children) == len(trials) == 24
    assert parent.info.status == "FINISHED" and parent.data.metrics[record.TRIALS_PRUNED_METRIC] == len(pruned)
    assert sorted(int(c.data.tags[record.TRIAL_NUMBER_TAG]) for c in pruned) == sorted(
        n for n, t in trials.items() if t.state == TrialState.PRUNED)
    completed = [c for c in children if c not in pruned]
    val_error = record.final_metric(record.VAL_ERROR_METRIC)
    rows, _ = sweep_rows(tracking_uri, parent, record.VAL_ERROR_METRIC)  # the sweep-end ranking: completed, pruned
    assert [r.run_id for r in rows[len(completed):]] == sorted(
        (c.info.run_id for c in pruned), key=lambda i: client.get_run(i).data.metrics[val_error])
    assert [r.shown_status for r in rows] == ["FINISHED"] * len(completed) + [
        f"pruned@{client.get_run(r.run_id).data.tags[record.PRUNED_AT_TAG]}" for r in rows[len(completed):]]
    shown = [f"pruned@{pruned[0].data.tags[record.PRUNED_AT_TAG]}", pruned[0].info.run_id]
    assert any(line.split()[-2:] == shown for line in done.stdout.splitlines())  # the printed table says so
    best = [c for c in completed if int(c.data.tags[record.TRIAL_NUMBER_TAG]) == study.best_trial.number]
    assert study.best_value == best[0].data.metrics[val_error] == min(c.data.metrics[val_error] for c in completed)
    assert parent.data.metrics[record.BEST_ERROR_METRIC] == min(  # the pruned runs' errors left out
        c.data.metrics[record.final_metric(record.ERROR_METRIC)] for c in completed)
    for child in children:
        trial = trials[int(child.data.tags[record.TRIAL_NUMBER_TAG])]
        cfg = compose_config(f"train.lr={child.data.params['train.lr']}", *TRIAL)
        whole = training(cfg, load_data(cfg.dataset))
        errors, vals = (points(client, child.info.run_id, key) for key in (record.ERROR_METRIC, "val_error"))
        assert child.info.status == "FINISHED"
        if child in pruned:
            step = int(child.data.tags[record.PRUNED_AT_TAG])
            assert 0 <= step < 1000 and trial.user_attrs == {record.PRUNED_AT_TAG: step}
            assert errors == [(s, e) for s, e in zip(whole.steps, whole.errors) if s <= step]
            assert vals == [(s, h.val_error) for s, h in zip(whole.steps, whole.history) if s <= step]
            assert trial.intermediate_values == dict(vals)  # what the trial reported: its objective, each step
        else:
            assert errors == list(zip(whole.steps, whole.errors)) and trial.value == whole.final.val_error
            assert trial.intermediate_values == dict(vals) and vals[-1] == (1000, whole.final.val_error)
            assert child.data.tags[record.WEIGHTS_HASH_TAG] == record.weights_sha256(whole.weights)
    if launcher == "batched":  # a pruned network of a stack, alone: its rerun reproduces it
        assert nn_rerun([pruned[0].info.run_id, "--tracking-uri", tracking_uri]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "reproduced"
    else:  # the same search again: the same trials, pruned at the same steps, the same values
        again = nn_run_m(tmp_path, tracking_uri, f"{experiment}-again", *SEARCH, "hydra.sweep.dir=again")
        assert again.returncode == 0, again.stderr
        repeated = optuna.load_study(study_name="again", storage=f"sqlite:///{tmp_path}/again/optuna.db").trials
        assert [(t.params, t.state, t.value, t.intermediate_values, t.user_attrs) for t in repeated] == [
            (t.params, t.state, t.value, t.intermediate_values, t.user_attrs) for t in study.trials]

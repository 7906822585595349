"""One experiment run: check the config, build data and weights, train, record it in MLflow."""

import json
import logging
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from runner import checkpoint, objective
from runner.config import ConfigError, check, check_fits_data, check_objective
from runner.data.datasets import load_dataset
from runner.data.errors import DataError
from runner.nn.network import init_weights, layer_sizes, predict
from runner.nn.training import shuffle_rng, train
from runner.progress import progress_bar
from runner.tracking import provenance, record, run_owner
from runner.tracking.model_export import log_network_model
from runner.tracking.uri import check_access, redact

log = logging.getLogger(__name__)
MODEL_CODE_FILE = Path(__file__).with_name("pyfunc_model.py")  # the logged model's code (MLflow runs it to load)
SHOWN_PREDICTIONS = 20  # rows of predictions printed at the end; predictions.csv has them all


@dataclass
class JobResult:
    """What a finished job hands back to its caller (and to Hydra's sweepers)."""

    run_id: str
    final_error: float
    weights_sha256: str
    final_metrics: dict = field(default_factory=dict)  # {final_error: ..., final_test_error: ..., ...}
    pruned_at_step: int | None = None  # the step its should_stop stopped it at (record.PRUNED_AT_TAG), else None
    objective: str = record.ERROR_METRIC  # the metric the config's sweep.objective names (runner/objective.py)
    objective_value: float | None = None  # its final value: what nn-run's task returns to a sweeper


@dataclass
class Trained:
    """A job trained elsewhere (a batched sweep: runner/sweep/batches.py), for run_job to log instead of training."""

    result: object  # a runner.nn.training.TrainResult of exactly this job's config
    data: object  # the job's runner.data.datasets.Dataset, already checked against its config by prepare_job
    facts: object  # runner.tracking.provenance.collect(), computed once for the whole batch
    shared: dict = field(default_factory=dict)  # one dict per batch: what its jobs' logging does once (the model)


def mlflow_client():
    """runner.tracking.client, imported on first use: MLflow takes ~1.5 s to import, paid only once the config
    and data are known to be good (a bad value is one line at once)."""
    # the one place this module imports MLflow, on purpose late
    from runner.tracking import client

    return client


def release_batch(shared):
    """Free what the jobs of one batch kept for their logging (`Trained.shared`: the model saved once)."""
    model = shared.pop("model", None)
    if model is not None:
        model.close()


def redact_overrides(overrides):
    """Command-line overrides with the user:password part of any URI value removed."""
    return [f"{key}{sep}{redact(value)}" for key, sep, value in (o.partition("=") for o in overrides)]


def flatten(cfg):
    """The composed config as {dotted.key: text} (record.config_params), its tracking URI without credentials."""
    flat = record.config_params(OmegaConf.to_container(cfg, resolve=True))
    if "tracking.uri" in flat:
        flat["tracking.uri"] = redact(flat["tracking.uri"])
    return flat


def load_data(dataset_cfg):
    """The data set a `dataset` config node describes; a value it cannot use becomes a ConfigError."""
    try:
        return load_dataset(**OmegaConf.to_container(dataset_cfg, resolve=True))
    except DataError as error:
        raise ConfigError(f"dataset.{error}") from None


def log_dataset_inputs(run, data):
    """The training split, and the validation and test splits if any, as the run's MLflow dataset inputs."""
    splits = {record.TRAINING_CONTEXT: (data.X, data.y, record.dataset_digest(data.X, data.y))}
    if data.X_val is not None:
        splits[record.VALIDATION_CONTEXT] = (data.X_val, data.y_val, record.dataset_digest(data.X_val, data.y_val))
    if data.X_test is not None:
        splits[record.TESTING_CONTEXT] = (data.X_test, data.y_test, record.dataset_digest(data.X_test, data.y_test))
    run.log_datasets(data.name, data.source, splits)


def write_test_predictions_and_plots(folder, cfg, data, result):
    """Into the artifact folder: val_predictions.csv and test_predictions.csv (final weights) for the splits the
    data has and, with tracking.log_plots, the plots."""
    for X, y, name in ((data.X_val, data.y_val, record.VAL_PREDICTIONS_FILE),
                       (data.X_test, data.y_test, record.TEST_PREDICTIONS_FILE)):
        if X is not None:
            outputs = predict(result.weights, X, cfg.model.activation, cfg.model.output)
            record.write_predictions(folder, X, y, outputs, name)
    if cfg.tracking.log_plots:
        # runner.plots imports matplotlib (~0.4 s) as it draws: only when plots are wanted
        from runner.plots import write_run_plots

        write_run_plots(folder, result, data, cfg.dataset.bias, cfg.model.activation, cfg.model.output)


def prepare_job(cfg):
    """Check `cfg` and load its data; raises ConfigError, ServerUnreachable or ServerRefused before any run exists."""
    check(cfg)
    data = load_data(cfg.dataset)
    check_fits_data(cfg, len(data.y), data.y.shape[1])
    check_objective(cfg, data.classes is not None)
    check_access(cfg.tracking.uri, cfg.tracking.experiment)
    return data


def initial_weights(cfg, data):
    """The network's starting weights: drawn from np.random.RandomState(cfg.seed) with cfg.model.init."""
    sizes = layer_sizes(data.X.shape[1], cfg.model.hidden, data.y.shape[1])
    return init_weights(sizes, np.random.RandomState(cfg.seed), cfg.model.init)


def train_job(cfg, data, on_log, progress=False, resume=None, checkpoints=None):
    """Train the network `cfg` describes on `data`, calling on_log(step, scores) at each logged step.

    `resume` (a TrainState) continues from a checkpoint; `checkpoints` (runner.checkpoint.Checkpointer) saves them.
    """
    with progress_bar(cfg.train.iterations, enabled=progress) as bar:
        return train(initial_weights(cfg, data), data.X, data.y, iterations=cfg.train.iterations,
                     log_every=cfg.train.log_every, lr=cfg.train.lr, hidden_activation=cfg.model.activation,
                     output_activation=cfg.model.output, batch_size=cfg.train.batch_size,
                     rng=shuffle_rng(cfg.seed), X_test=data.X_test, y_test=data.y_test, X_val=data.X_val,
                     y_val=data.y_val, classify=data.classes is not None, on_log=bar.wrap_log(on_log), resume=resume,
                     checkpoints=checkpoints, **bar.train_hooks)


def run_tags(overrides, data, facts, extra_tags=None):
    """The tags a run is created with: provenance `facts` (provenance.collect()), this process as its owner
    (run_owner), overrides, `extra_tags`."""
    tags = {**facts.tags, **run_owner.owner_tags(), record.OVERRIDES_TAG: json.dumps(redact_overrides(overrides)),
            **(extra_tags or {})}
    if data.file_sha256:  # set when the run is created, so even a failed run says which file it read
        tags[record.DATASET_SHA256_TAG] = data.file_sha256
    return tags


def record_result(run, cfg, data, overrides, result, facts, shared=None):
    """Log a finished training `result` to the open `run`: final scores, files, model, weights hash.

    `shared` (a dict shared by the jobs of one batch, whose models differ only in their weights)
    lets the model be saved once for them all (tracking.ModelCopies).
    A result stopped early (TrainResult.stopped_at: a pruned trial) is recorded at its stop step: final
    metrics at that step, its weights and predictions, and the tag record.PRUNED_AT_TAG.
    Returns (final metrics {name: value}, weights sha256).
    """
    final_metrics = {record.final_metric(name): value for name, value in record.score_metrics(result.final).items()}
    predictions = predict(result.weights, data.X, cfg.model.activation, cfg.model.output)
    end = cfg.train.iterations if result.stopped_at is None else result.stopped_at
    for name, value in final_metrics.items():
        run.log_metric(name, end, value)
    digest = record.weights_sha256(result.weights)
    tags = {record.WEIGHTS_HASH_TAG: digest}
    if result.stopped_at is not None:
        tags[record.PRUNED_AT_TAG] = str(result.stopped_at)
    run.set_tags(tags, defer=True)  # written with the final metrics (and model links)
    with tempfile.TemporaryDirectory() as folder:
        record.write_weights(folder, result.weights)
        record.write_predictions(folder, data.X, data.y, predictions, last_output=result.last_output)
        write_test_predictions_and_plots(folder, cfg, data, result)
        OmegaConf.save(cfg, f"{folder}/{record.CONFIG_FILE}")
        OmegaConf.save(OmegaConf.create(list(overrides)), f"{folder}/{record.OVERRIDES_FILE}")
        if facts.git_diff:
            with open(f"{folder}/{record.GIT_DIFF_FILE}", "w", errors="surrogateescape") as handle:
                handle.write(facts.git_diff)
        run.log_artifacts(folder)
        if cfg.tracking.log_model:
            copies = None
            if shared is not None:
                copies = shared.setdefault("model", mlflow_client().ModelCopies())
            log_network_model(run, MODEL_CODE_FILE, folder, len(result.weights), data.X, predictions,
                              OmegaConf.to_container(cfg.model, resolve=True), step=end,
                              copies=copies)
    return final_metrics, digest


def print_outputs(cfg, data, result):
    """Log the rows the seed prints: its last iteration's output (full batch), else the final weights' outputs."""
    if result.last_output is not None:
        outputs, what = result.last_output, ("the last iteration's output, before its update, as the seed prints it "
                                             "(predictions.csv: the final weights' outputs)")
    else:
        outputs, what = predict(result.weights, data.X, cfg.model.activation, cfg.model.output), "final weights' outputs"
    shown = f", first {SHOWN_PREDICTIONS} of {len(data.X)} rows" if len(data.X) > SHOWN_PREDICTIONS else ""
    log.info("%s (inputs | target | output)%s:", what, shown)
    for x, target, output in zip(data.X[:SHOWN_PREDICTIONS], data.y, outputs):
        log.info("  %s | %s | %s", " ".join(f"{v:g}" for v in x), " ".join(f"{v:g}" for v in target),
                 " ".join(repr(float(v)) for v in output))


def finished_result(cfg, run_id):
    """The JobResult of a run that already finished (a resumed sweep keeps its finished jobs as they are,
    a pruned one as pruned)."""
    run = mlflow_client().get_run(cfg.tracking.uri, run_id)
    metrics = {k: v for k, v in run.data.metrics.items() if k.startswith(record.FINAL_PREFIX)}
    pruned = run.data.tags.get(record.PRUNED_AT_TAG)
    pruned_at = None if pruned is None else int(pruned)
    log.info("MLflow run %s finished before%s: kept as it is", run_id,
             "" if pruned_at is None else f" (pruned at step {pruned_at})")
    return job_result(cfg, run_id, run.data.tags.get(record.WEIGHTS_HASH_TAG), metrics, pruned_at)


def job_result(cfg, run_id, weights_sha256, final_metrics, pruned_at_step=None):
    """The JobResult of a run of `cfg` whose final metrics are `final_metrics` ({final_error: ..., ...})."""
    metric = objective.configured(cfg)  # prepare_job checked it against the data
    return JobResult(run_id, final_metrics[record.final_metric(record.ERROR_METRIC)], weights_sha256, final_metrics,
                     pruned_at_step, metric, final_metrics[record.final_metric(metric)])


def run_job(cfg, overrides, run_name, parent_run_id=None, experiment_id=None, progress=False, extra_tags=None,
            trained=None, output_dir=None, should_stop=None):
    """Train the network `cfg` describes and log it as one MLflow run; returns a JobResult.

    `parent_run_id` and `experiment_id` place the run in a sweep (runner/sweep/callback.py); `extra_tags` are
    added to the run's tags (a rerun's link to its source, Hydra's output folder).
    Raises ConfigError before any run exists when a value is not allowed, ServerUnreachable when
    tracking.uri names a server that does not answer, ServerRefused when it refuses the login or the run.
    `progress` draws a progress bar on stderr.
    `trained` (a Trained) is logged as is instead of training.
    `output_dir` (the Hydra job's folder) keeps the run's checkpoints (runner/checkpoint.py): a job
    whose folder holds a checkpoint of this config continues that run, bit for bit, and in a sweep
    one whose run finished is kept as it is.
    `should_stop(step, scores)` (a pruned search's trial reporter, runner/sweep/pruning.py) is asked at
    each logged step, once its point is logged; True stops training there: the run ends FINISHED with
    its points up to that step, its final metrics, weights and predictions of that step, and the tag
    record.PRUNED_AT_TAG=step (its checkpoint note says so too). A `trained` result was asked by its
    trainer already (runner/sweep/batches.py): it is logged as it stopped, and `should_stop` is not asked.
    """
    data = prepare_job(cfg) if trained is None else trained.data
    metric = objective.configured(cfg)
    if parent_run_id is None:  # a sweep warns once, as it starts (runner/sweep/callback.py)
        objective.warn_if_leaking(metric)
    tracked_run, runs_page = mlflow_client().tracked_run, mlflow_client().runs_page
    checkpointing = output_dir is not None and trained is None
    config_sha = checkpoint.config_sha256(cfg) if checkpointing else None
    meta = checkpoint.read_meta(output_dir) if checkpointing else None
    if meta is not None and meta.get("config_sha256") != config_sha:
        meta = None  # another config in the same folder: a new run
    if meta is not None and meta["status"] == checkpoint.FINISHED:
        if parent_run_id is not None:  # a sweep continued into its folder keeps its finished jobs
            return finished_result(cfg, meta["run_id"])
        meta = None  # a single run into the folder of a finished one (a fixed hydra.run.dir) is a new run
    facts = provenance.collect() if trained is None else trained.facts
    tags = run_tags(overrides, data, facts, {record.OBJECTIVE_TAG: metric, **(extra_tags or {})})
    saver = None
    with tracked_run(cfg.tracking.uri, cfg.tracking.experiment, run_name, tags, parent_run_id, experiment_id,
                     resume_run_id=meta["run_id"] if meta else None) as run:
        state, logged, resumed_at = None, set(), []
        if meta is None:
            # a result trained elsewhere is written in one go when the run ends; a run that trains shows its params now
            run.log_params({**flatten(cfg), **record.dataset_params(data)}, defer=trained is not None)
            log_dataset_inputs(run, data)
        else:
            state, logged = checkpoint.load_state(output_dir, meta), run.logged_points()
            resumed_at = [*meta.get("resumed_at", []), state.step]
            run.set_tags({record.RESUMED_AT_TAG: json.dumps(resumed_at)})
            log.info("MLflow run %s resumes at step %d from its checkpoint in %s", run.run_id, state.step, output_dir)

        def on_log(step, scores):
            metrics = record.score_metrics(scores)
            for name, value in metrics.items():  # buffered before printed: a printed point survives Ctrl-C
                if (name, step) not in logged:  # a resumed run logs no point twice
                    run.log_metric(name, step, value)
            log.info("step %d: %s", step, ", ".join(f"{name} {value!r}" for name, value in metrics.items()))
            return should_stop is not None and trained is None and bool(should_stop(step, scores))

        if trained is None:
            saver = checkpoint.Checkpointer(output_dir, run.run_id, config_sha, cfg.train.checkpoint_every,
                                            before_save=run.flush, resumed_at=resumed_at) if checkpointing else None
            with saver or nullcontext():
                result = train_job(cfg, data, on_log, progress, resume=state, checkpoints=saver)
        else:
            result = trained.result
            for step, scores in zip(result.steps, result.history):
                on_log(step, scores)
        if result.stopped_at is not None:
            log.info("stopped at step %d of %d: pruned", result.stopped_at, cfg.train.iterations)
        final_metrics, digest = record_result(run, cfg, data, overrides, result, facts,
                                              shared=None if trained is None else trained.shared)
    if output_dir is not None:  # a batched job's too: a requeued batch or a continued sweep keeps it
        checkpoint.mark_finished(output_dir, run.run_id, config_sha or checkpoint.config_sha256(cfg),
                                 pruned_at_step=result.stopped_at)
    if saver is not None and saver.release():
        log.info("SIGUSR2 (time limit or preemption) came after training, while the run was recorded: it is complete")

    print_outputs(cfg, data, result)
    uri = redact(cfg.tracking.uri)
    log.info("MLflow run %s in experiment %r at %s", run.run_id, cfg.tracking.experiment, uri)
    log.info("runs page: %s", runs_page(uri, run.experiment_id))
    return job_result(cfg, run.run_id, digest, final_metrics, result.stopped_at)

"""One experiment run: check the config, build data and weights, train, record it in MLflow."""

import json
import logging
import tempfile
from dataclasses import dataclass

import numpy as np
from omegaconf import OmegaConf

from runner import record
from runner.config import check
from runner.datasets import load_dataset
from runner.network import init_weights, layer_sizes
from runner.progress import progress_bar
from runner.provenance import provenance_tags
from runner.tracking_uri import check_server, redact
from runner.training import train

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """What a finished job hands back to its caller (and to Hydra's sweepers)."""

    run_id: str
    final_error: float
    weights_sha256: str


def flatten(cfg):
    """The composed config as {dotted.key: text}; lists and dicts as their JSON text."""
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, f"{name}.")
            else:
                flat[name] = json.dumps(value) if isinstance(value, list) else str(value)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    if "tracking.uri" in flat:
        flat["tracking.uri"] = redact(flat["tracking.uri"])
    return flat


def run_job(cfg, overrides, run_name, parent_run_id=None, progress=False):
    """Train the network `cfg` describes and log it as one MLflow run; returns a JobResult.

    Raises ConfigError before any run exists when a value is not allowed, ServerUnreachable when
    tracking.uri names a server that does not answer. `progress` draws a progress bar on stderr.
    """
    check(cfg)
    check_server(cfg.tracking.uri)
    # mlflow takes over a second to import: pay for it only once the config is known to be good
    from runner.model_export import log_network_model
    from runner.tracking import tracked_run, ui_command

    data = load_dataset(cfg.dataset.name)
    sizes = layer_sizes(data.X.shape[1], cfg.model.hidden, data.y.shape[1])
    initial = init_weights(sizes, np.random.RandomState(cfg.seed))
    tags = {**provenance_tags(), "overrides": json.dumps(list(overrides))}

    with tracked_run(cfg.tracking.uri, cfg.tracking.experiment, run_name, tags, parent_run_id) as run:
        run.log_params(flatten(cfg))

        def on_log(step, error):
            log.info("step %d: error %r", step, error)
            run.log_metric(record.ERROR_METRIC, step, error)

        with progress_bar(cfg.train.iterations, enabled=progress) as bar:
            result = train(initial, data.X, data.y, iterations=cfg.train.iterations, log_every=cfg.train.log_every,
                           lr=cfg.train.lr, hidden_activation=cfg.model.activation, on_log=bar.wrap_log(on_log),
                           **bar.train_hooks)
        digest = record.weights_sha256(result.weights)
        with tempfile.TemporaryDirectory() as folder:
            record.write_weights(folder, result.weights)
            record.write_predictions(folder, data.X, data.y, result.predictions)
            OmegaConf.save(cfg, f"{folder}/{record.CONFIG_FILE}")
            OmegaConf.save(OmegaConf.create(list(overrides)), f"{folder}/{record.OVERRIDES_FILE}")
            run.log_artifacts(folder)
            if cfg.tracking.log_model:
                log_network_model(run, folder, len(result.weights), data.X, result.predictions,
                                  OmegaConf.to_container(cfg.model, resolve=True), step=cfg.train.iterations)
        run.set_tags({record.WEIGHTS_HASH_TAG: digest})

    log.info("predictions (inputs | target | prediction):")
    for x, target, prediction in zip(data.X, data.y, result.predictions):
        log.info("  %s | %s | %s", " ".join(f"{v:g}" for v in x), " ".join(f"{v:g}" for v in target),
                 " ".join(repr(float(v)) for v in prediction))
    uri = redact(cfg.tracking.uri)
    log.info("MLflow run %s in experiment %r at %s", run.run_id, cfg.tracking.experiment, uri)
    log.info("open the UI: %s", ui_command(uri))
    return JobResult(run.run_id, result.errors[-1], digest)

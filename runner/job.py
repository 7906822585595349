"""One experiment run: check the config, build data and weights, train, record it in MLflow."""

import json
import logging
import tempfile
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from omegaconf import OmegaConf

from runner import provenance, record
from runner.config import check
from runner.datasets import load_dataset
from runner.network import init_weights, layer_sizes
from runner.training import train

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """What a finished job hands back to its caller (and to Hydra's sweepers)."""

    run_id: str
    final_error: float
    weights_sha256: str


def redact(uri):
    """A URI without any user:password part, safe to log and print."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


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


def run_job(cfg, overrides, run_name, parent_run_id=None, extra_tags=None):
    """Train the network `cfg` describes and log it as one MLflow run; returns a JobResult.

    `extra_tags` are added to the run's tags (a rerun's link to its source, Hydra's output folder).
    Raises ConfigError before any run exists when a value is not allowed.
    """
    check(cfg)
    # mlflow takes over a second to import: pay for it only once the config is known to be good
    from runner.tracking import tracked_run, ui_command

    data = load_dataset(cfg.dataset.name)
    sizes = layer_sizes(data.X.shape[1], cfg.model.hidden, data.y.shape[1])
    initial = init_weights(sizes, np.random.RandomState(cfg.seed))
    facts = provenance.collect()
    tags = {**facts.tags, "overrides": json.dumps(list(overrides)), **(extra_tags or {})}

    with tracked_run(cfg.tracking.uri, cfg.tracking.experiment, run_name, tags, parent_run_id) as run:
        run.log_params(flatten(cfg))

        def on_log(step, error):
            log.info("step %d: error %r", step, error)
            run.log_metric(record.ERROR_METRIC, step, error)

        result = train(initial, data.X, data.y, iterations=cfg.train.iterations, log_every=cfg.train.log_every,
                       lr=cfg.train.lr, hidden_activation=cfg.model.activation, on_log=on_log)
        digest = record.weights_sha256(result.weights)
        with tempfile.TemporaryDirectory() as folder:
            record.write_weights(folder, result.weights)
            record.write_predictions(folder, data.X, data.y, result.predictions)
            OmegaConf.save(cfg, f"{folder}/{record.CONFIG_FILE}")
            OmegaConf.save(OmegaConf.create(list(overrides)), f"{folder}/{record.OVERRIDES_FILE}")
            if facts.git_diff:
                with open(f"{folder}/{record.GIT_DIFF_FILE}", "w", errors="surrogateescape") as handle:
                    handle.write(facts.git_diff)
            run.log_artifacts(folder)
        run.set_tags({record.WEIGHTS_HASH_TAG: digest})

    log.info("predictions (inputs | target | prediction):")
    for x, target, prediction in zip(data.X, data.y, result.predictions):
        log.info("  %s | %s | %s", " ".join(f"{v:g}" for v in x), " ".join(f"{v:g}" for v in target),
                 " ".join(repr(float(v)) for v in prediction))
    uri = redact(cfg.tracking.uri)
    log.info("MLflow run %s in experiment %r at %s", run.run_id, cfg.tracking.experiment, uri)
    log.info("open the UI: %s", ui_command(uri))
    return JobResult(run.run_id, result.errors[-1], digest)

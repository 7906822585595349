"""Where nn-run's configs live, the run's schema (each group's typed keys beside its code) and the value checks.

Hydra rejects wrong types, and unknown keys set without `+`, while composing; `check` rejects a
key no schema has (`+train.lrr=0.5`, which Hydra adds) and values that are well typed but out
of range, before any MLflow run starts.
"""

import difflib
import math
from dataclasses import dataclass, field, fields, is_dataclass

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from runner.config_files import CONFIG_DIR, PRIMARY_CONFIG
from runner.data.datasets import DATASETS
from runner.data.schema import OPTION_SCHEMAS, DatasetConfig
from runner.nn.activations import ACTIVATIONS, OUTPUTS
from runner.nn.network import INITS
from runner.nn.schema import ModelConfig, TrainConfig
from runner.objective import ObjectiveError, SweepConfig, configured
from runner.output_folders import register_resolver
from runner.tracking.schema import TrackingConfig
from runner.tracking.uri import CREDENTIAL_VARIABLES, has_credentials, is_server, masked, redact


@dataclass
class RunConfig:
    """One run: the weights' seed and a config group per part of the program (each schema beside its code)."""

    seed: int = MISSING
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)


ConfigStore.instance().store(name="run_schema", node=RunConfig)
# stored outside the dataset group so they are not offered as data sets
for _name, _node in OPTION_SCHEMAS.items():
    ConfigStore.instance().store(name=_name, node=_node)
register_resolver()  # conf/config.yaml names hydra.run.dir and hydra.sweep.dir with it


def tracking_defaults():
    """(tracking.uri, tracking.experiment) as nn-run composes them with no overrides."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name=PRIMARY_CONFIG)
    return cfg.tracking.uri, cfg.tracking.experiment


class ConfigError(ValueError):
    """A config value that is well typed but not allowed; the message names key, value and rule."""


def task_values(cfg):
    """A composed config's values as its task sees them: plain containers, interpolations resolved, no `hydra`.

    A sweep job's config keeps its `hydra` node: it is left out where it is (copying the config
    without it costs a sweep ~1.5 ms a job), and never resolved. A missing value stays "???", as
    OmegaConf.to_container gives it.
    """
    values = {}
    for key in cfg:
        if key == "hydra":
            continue
        value = MISSING if OmegaConf.is_missing(cfg, key) else cfg[key]
        values[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return values


def schema_keys(schema=RunConfig, prefix=""):
    """Every dotted key a schema dataclass has (the `dataset` group: the keys of every data set's schema)."""
    keys = []
    for item in fields(schema):
        name, kind = f"{prefix}{item.name}", item.type
        if name == "dataset":
            keys += sorted({key for option in (DatasetConfig, *OPTION_SCHEMAS.values())
                            for key in schema_keys(option, "dataset.")})
        elif is_dataclass(kind):
            keys += schema_keys(kind, f"{name}.")
        else:
            keys.append(name)
    return keys


def unknown_key_message(key, dataset=None):
    """What nn-run says of a key its schema does not have: the closest real key, and where to see them all.

    `dataset`: the data set chosen, when known (a key of another data set's schema is named as such).
    """
    known = schema_keys()
    if key in known:  # only another data set has it
        chosen = f"dataset={dataset}" if dataset else "the data set chosen"
        return f"{key} is not a key of {chosen}: other data sets have it (`nn-run --cfg job` shows every key)"
    closest = difflib.get_close_matches(key, known, n=1)
    hint = f": did you mean {closest[0]}?" if closest else ""
    return f"{key} is not a config key{hint} (`nn-run --cfg job` shows every key)"


def unknown_keys(node, prefix=""):
    """The dotted keys of a composed config that its typed schema does not have (`+key=value` adds them)."""
    schema = OmegaConf.get_type(node)
    known = {item.name for item in fields(schema)} if is_dataclass(schema) else None
    found = []
    for key in node:
        if key == "hydra" and not prefix:
            continue
        if known is not None and key not in known:
            found.append(f"{prefix}{key}")
        elif OmegaConf.is_dict(node[key]):
            found += unknown_keys(node[key], f"{prefix}{key}.")
    return found


def _require(ok, key, value, allowed):
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def check(cfg):
    """Raise ConfigError for a key no schema has, or the first out-of-range value, in a composed config."""
    for key in unknown_keys(cfg):
        raise ConfigError(unknown_key_message(key, cfg.dataset.get("name")))
    _require(cfg.dataset.name in DATASETS, "dataset.name", cfg.dataset.name, f"one of {', '.join(DATASETS)}")
    for size in cfg.model.hidden:
        _require(size >= 1, "model.hidden", list(cfg.model.hidden), "every hidden size must be >= 1")
    _require(cfg.model.activation in ACTIVATIONS, "model.activation", cfg.model.activation,
             f"one of {', '.join(ACTIVATIONS)}")
    _require(cfg.train.iterations >= 1, "train.iterations", cfg.train.iterations, "must be >= 1")
    _require(cfg.train.log_every >= 1, "train.log_every", cfg.train.log_every, "must be >= 1")
    _require(cfg.train.lr > 0 and math.isfinite(cfg.train.lr), "train.lr", cfg.train.lr, "must be a finite number > 0")
    _require(cfg.train.checkpoint_every > 0, "train.checkpoint_every", cfg.train.checkpoint_every,
             "must be > 0 seconds")
    check_model(cfg)
    check_objective(cfg)
    check_tracking_uri(cfg.tracking.uri)


def check_objective(cfg, classify=None):
    """Raise ConfigError for a sweep.objective the config's data set does not measure (runner/objective.py).

    `classify`: whether the data has classes, once it is loaded (runner/job.py prepare_job); None before.
    Returns the objective's metric name.
    """
    try:
        return configured(cfg, classify)
    except ObjectiveError as error:
        raise ConfigError(str(error)) from None


def check_tracking_uri(uri):
    """A tracking.uri with a user or password in it is refused: Hydra, submitit and MLflow would write it
    into their files (overrides, configs, pickles, tags); credentials come from the environment."""
    if not has_credentials(uri):
        return
    where = ("in the environment: " + " and ".join(CREDENTIAL_VARIABLES[:2]) + f" (or {CREDENTIAL_VARIABLES[2]})"
             if is_server(uri) else "as the database's client reads them (PostgreSQL: PGPASSWORD or ~/.pgpass)")
    raise ConfigError(f"tracking.uri={masked(uri)!r} is not allowed: a user or password in it would be written "
                      f"into Hydra's, submitit's and MLflow's files; give them {where}, and use "
                      f"tracking.uri={redact(uri)!r}")


def check_model(cfg):
    """The model/training options that need no data: output, init, batch size."""
    _require(cfg.model.output in OUTPUTS, "model.output", cfg.model.output, f"one of {', '.join(OUTPUTS)}")
    _require(cfg.model.init in INITS, "model.init", cfg.model.init, f"one of {', '.join(INITS)}")
    _require(cfg.train.batch_size >= 0, "train.batch_size", cfg.train.batch_size, "must be >= 0 (0 = full batch)")


def check_fits_data(cfg, rows, outputs):
    """The options that depend on the data: `rows` training rows, `outputs` target columns."""
    _require(cfg.train.batch_size <= rows, "train.batch_size", cfg.train.batch_size,
             f"must be <= {rows}, the training rows of dataset {cfg.dataset.name} (0 = full batch)")
    _require(cfg.model.output != "softmax" or outputs >= 2, "model.output", cfg.model.output,
             f"softmax needs >= 2 target columns and dataset {cfg.dataset.name} has {outputs}; use sigmoid")

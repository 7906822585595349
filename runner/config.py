"""The config schema (typed dataclasses registered with Hydra) and the value checks.

Hydra rejects unknown keys and wrong types while composing; `check` rejects values that are
well typed but out of range, before any MLflow run starts.
"""

import math
from dataclasses import dataclass, field

from hydra.core.config_store import ConfigStore

from runner.activations import ACTIVATIONS
from runner.datasets import DATASETS


@dataclass
class DatasetConfig:
    name: str = "seed"


@dataclass
class ModelConfig:
    hidden: list[int] = field(default_factory=lambda: [4])
    activation: str = "sigmoid"


@dataclass
class TrainConfig:
    iterations: int = 60000
    lr: float = 1.0
    log_every: int = 10000


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "nn-runner"


@dataclass
class RunConfig:
    seed: int = 1
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


SCHEMA_NAME = "run_schema"  # the schema's name in Hydra's ConfigStore (first in conf/config.yaml's defaults)
ConfigStore.instance().store(name=SCHEMA_NAME, node=RunConfig)


class ConfigError(ValueError):
    """A config value that is well typed but not allowed; the message names key, value and rule."""


def _require(ok, key, value, allowed):
    if not ok:
        raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def check(cfg):
    """Raise ConfigError for the first out-of-range value in a composed config."""
    _require(cfg.dataset.name in DATASETS, "dataset.name", cfg.dataset.name, f"one of {', '.join(DATASETS)}")
    for size in cfg.model.hidden:
        _require(size >= 1, "model.hidden", list(cfg.model.hidden), "every hidden size must be >= 1")
    _require(cfg.model.activation in ACTIVATIONS, "model.activation", cfg.model.activation,
             f"one of {', '.join(ACTIVATIONS)}")
    _require(cfg.train.iterations >= 1, "train.iterations", cfg.train.iterations, "must be >= 1")
    _require(cfg.train.log_every >= 1, "train.log_every", cfg.train.log_every, "must be >= 1")
    _require(cfg.train.lr > 0 and math.isfinite(cfg.train.lr), "train.lr", cfg.train.lr, "must be a finite number > 0")

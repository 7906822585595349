"""The config schema (typed dataclasses registered with Hydra) and the value checks.

Hydra rejects unknown keys and wrong types while composing; `check` rejects values that are
well typed but out of range, before any MLflow run starts.
"""

import math
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore

from runner.activations import ACTIVATIONS, OUTPUTS
from runner.datasets import DATASETS
from runner.network import INITS


@dataclass
class DatasetConfig:
    """Keys of every data set; a conf/dataset/NAME.yaml may extend them with its schema below."""

    name: str = "seed"
    test_fraction: float = 0.0
    split_seed: int = 0
    scale: str = "none"
    bias: bool = True


@dataclass
class ParityConfig(DatasetConfig):
    n_bits: int = 3


@dataclass
class GeneratedConfig(DatasetConfig):
    n_samples: int = 200
    noise: float = 0.1
    seed: int = 0


@dataclass
class CirclesConfig(GeneratedConfig):
    factor: float = 0.5


@dataclass
class BlobsConfig(GeneratedConfig):
    centers: int = 3
    n_features: int = 2


@dataclass
class CsvConfig(DatasetConfig):
    path: Optional[str] = None
    target: Any = None  # a column name, or a list of them
    delimiter: str = ","
    header: bool = True


@dataclass
class ModelConfig:
    hidden: list[int] = field(default_factory=lambda: [4])
    activation: str = "sigmoid"
    output: str = "sigmoid"
    init: str = "uniform"


@dataclass
class TrainConfig:
    iterations: int = 60000
    lr: float = 1.0
    log_every: int = 10000
    batch_size: int = 0


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "nn-runner"
    log_model: bool = True


@dataclass
class RunConfig:
    seed: int = 1
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


ConfigStore.instance().store(name="run_schema", node=RunConfig)
# Schemas a dataset option names in its defaults list (conf/dataset/csv.yaml: `- /csv_schema@_here_`);
# stored outside the dataset group so they are not offered as data sets
for _name, _node in {"parity_schema": ParityConfig, "generated_schema": GeneratedConfig,
                     "circles_schema": CirclesConfig, "blobs_schema": BlobsConfig, "csv_schema": CsvConfig}.items():
    ConfigStore.instance().store(name=_name, node=_node)


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
    check_model(cfg)


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

"""The typed keys of the `dataset` config group (conf/dataset/), registered with Hydra by runner/config.py.

Types only: every value, defaults included, is in the group's YAML files, so a fact has one place.
"""

from dataclasses import dataclass
from typing import Any, Optional

MISSING = "???"  # OmegaConf's mark of a value that the group's YAML must give (no Hydra import here)


@dataclass
class DatasetConfig:
    """Keys of every data set; a conf/dataset/NAME.yaml may extend them with its schema below."""

    name: str = MISSING
    test_fraction: float = MISSING
    val_fraction: float = MISSING
    split_seed: int = MISSING
    scale: str = MISSING
    bias: bool = MISSING


@dataclass
class ParityConfig(DatasetConfig):
    n_bits: int = MISSING


@dataclass
class GeneratedConfig(DatasetConfig):
    n_samples: int = MISSING
    noise: float = MISSING
    seed: int = MISSING


@dataclass
class CirclesConfig(GeneratedConfig):
    factor: float = MISSING


@dataclass
class BlobsConfig(GeneratedConfig):
    centers: int = MISSING
    n_features: int = MISSING


@dataclass
class CsvConfig(DatasetConfig):
    path: Optional[str] = MISSING
    target: Any = MISSING  # a column name, or a list of them
    delimiter: str = MISSING
    header: bool = MISSING


# Schemas a dataset option names in its defaults list (conf/dataset/csv.yaml: `- /csv_schema@_here_`)
OPTION_SCHEMAS = {"parity_schema": ParityConfig, "generated_schema": GeneratedConfig,
                  "circles_schema": CirclesConfig, "blobs_schema": BlobsConfig, "csv_schema": CsvConfig}

"""The typed keys of the `model` and `train` config groups (conf/model/, conf/train/), registered with Hydra
by runner/config.py. Types only: the values are in the groups' YAML files."""

from dataclasses import dataclass

MISSING = "???"  # OmegaConf's mark of a value that the group's YAML must give (no Hydra import here)


@dataclass
class ModelConfig:
    hidden: list[int] = MISSING
    activation: str = MISSING
    output: str = MISSING
    init: str = MISSING


@dataclass
class TrainConfig:
    iterations: int = MISSING
    lr: float = MISSING
    log_every: int = MISSING
    batch_size: int = MISSING
    checkpoint_every: float = MISSING

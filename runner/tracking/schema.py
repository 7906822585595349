"""The typed keys of the `tracking` config group (conf/tracking/), registered with Hydra by runner/config.py.
Types only: the values are in the group's YAML files."""

from dataclasses import dataclass

MISSING = "???"  # OmegaConf's mark of a value that the group's YAML must give (no Hydra import here)


@dataclass
class TrackingConfig:
    uri: str = MISSING
    experiment: str = MISSING
    log_model: bool = MISSING
    log_plots: bool = MISSING

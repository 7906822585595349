"""The `nn-run` command: a Hydra app over conf/config.yaml that runs one job per config."""

import gc
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from runner.config import ConfigError
from runner.job import run_job
from runner.record import HYDRA_OUTPUT_DIR_TAG
from runner.training import DivergenceError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def hydra_main(cfg):
    """Hand the composed config to run_job; a bad value ends the process with one line and exit 2, divergence exit 1."""
    hydra_cfg = HydraConfig.get()
    try:
        return run_job(cfg, hydra_cfg.overrides.task, hydra_cfg.job.override_dirname or cfg.dataset.name,
                       extra_tags={HYDRA_OUTPUT_DIR_TAG: hydra_cfg.runtime.output_dir})
    except ConfigError as error:
        print(f"nn-run: {error}", file=sys.stderr)
        sys.exit(2)
    except DivergenceError as error:  # the run is already marked FAILED with this reason
        print(f"nn-run: {error}", file=sys.stderr)
        sys.exit(1)


def main():
    try:
        hydra_main()
    except KeyboardInterrupt:
        print("nn-run: interrupted; the run is marked KILLED with the metrics logged so far", file=sys.stderr)
        sys.exit(130)
    # Leave mlflow's large object graph to the OS: the interpreter's final garbage collection
    # over it costs about half a second at exit, and everything was flushed and closed above.
    gc.freeze()

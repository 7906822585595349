"""The `nn-run` command: a Hydra app over conf/config.yaml that runs one job per config."""

import gc
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig

from runner.config import ConfigError
from runner.job import run_job
from runner.sweep import job_context

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def hydra_main(cfg):
    """Hand the composed config to run_job and return the final training error (what sweepers minimise).

    A bad value ends a single run with one line and exit 2; in a sweep (`-m`) it fails only its
    own job, before any run exists, and the other jobs go on.
    """
    job = HydraConfig.get().job
    sweep = job_context()  # None for a single run
    in_sweep = {"parent_run_id": sweep.parent_run_id, "experiment_id": sweep.experiment_id} if sweep else {}
    try:
        result = run_job(cfg, HydraConfig.get().overrides.task, job.override_dirname or cfg.dataset.name, **in_sweep)
    except ConfigError as error:
        if sweep is not None:
            raise
        print(f"nn-run: {error}", file=sys.stderr)
        sys.exit(2)
    return result.final_error


def main():
    hydra_main()
    # Leave mlflow's large object graph to the OS: the interpreter's final garbage collection
    # over it costs about half a second at exit, and everything was flushed and closed above.
    gc.freeze()

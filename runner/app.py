"""The `nn-run` command: a Hydra app over conf/config.yaml that runs one job per config."""

import gc
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode

from runner.config import ConfigError
from runner.job import run_job
from runner.progress import wanted
from runner.tracking_uri import ServerUnreachable, check_server
from runner.training import DivergenceError

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def hydra_main(cfg):
    """Hand the composed config to run_job; a bad value ends the process with one line and exit 2, divergence exit 1."""
    hydra_cfg = HydraConfig.get()
    job = hydra_cfg.job
    progress = wanted(sys.stderr, multirun=hydra_cfg.mode == RunMode.MULTIRUN)
    try:
        return run_job(cfg, hydra_cfg.overrides.task, job.override_dirname or cfg.dataset.name, progress=progress)
    except (ConfigError, ServerUnreachable) as error:
        fail(error)
    except DivergenceError as error:  # the run is already marked FAILED with this reason
        fail(error, status=1)


def fail(error, status=2):
    """End nn-run with the error's one-line message and exit `status`."""
    print(f"nn-run: {error}", file=sys.stderr)
    sys.exit(status)


class ServerCheck(Callback):
    """Before a sweep's first job: the tracking server must answer, or the sweep stops at once."""

    def on_multirun_start(self, config, **kwargs):
        try:
            check_server(config.tracking.uri)
        except ServerUnreachable as error:
            fail(error)


def main():
    try:
        hydra_main()
    except KeyboardInterrupt:
        print("nn-run: interrupted; the run is marked KILLED with the metrics logged so far", file=sys.stderr)
        sys.exit(130)
    # Leave mlflow's large object graph to the OS: the interpreter's final garbage collection
    # over it costs about half a second at exit, and everything was flushed and closed above.
    gc.freeze()

"""A Hydra callback that refuses a tracking.uri with a user or password in it before Hydra writes a run's or
a sweep's folder (.hydra/overrides.yaml, config.yaml, multirun.yaml and the log would keep the password).

Registered first under `hydra.callbacks`, before the callback that makes the folder (runner/output_folders.py).
"""

import sys

from hydra.experimental.callback import Callback

from runner import exit_codes
from runner.config import ConfigError, check_tracking_uri


class TrackingUriCheck(Callback):
    """Hydra callback (registered under `hydra.callbacks` in conf/config.yaml): see the module docstring."""

    def on_run_start(self, config, **kwargs):
        _refuse_credentials(config, "nn-run: ")

    def on_multirun_start(self, config, **kwargs):
        _refuse_credentials(config, "nn-run: the sweep cannot start: ")


def _refuse_credentials(config, prefix):
    try:
        check_tracking_uri(config.tracking.uri)
    except ConfigError as error:
        # Hydra would only warn about a callback's error, then write the folder and run the job
        print(f"{prefix}{error}", file=sys.stderr)
        sys.exit(exit_codes.BAD_INPUT)

"""A Hydra callback that refuses a single run's tracking.uri with a user or password in it before Hydra
writes the run's output folder (.hydra/overrides.yaml, config.yaml and the log would keep the password).

A sweep's is refused at its start by runner/sweep/callback.py; both use runner.config.check_tracking_uri.
"""

import sys

from hydra.experimental.callback import Callback

from runner import exit_codes
from runner.config import ConfigError, check_tracking_uri


class TrackingUriCheck(Callback):
    """Hydra callback (registered under `hydra.callbacks` in conf/config.yaml): see the module docstring."""

    def on_run_start(self, config, **kwargs):
        try:
            check_tracking_uri(config.tracking.uri)
        except ConfigError as error:
            # Hydra would only warn about a callback's error, then write the folder and run the job
            print(f"nn-run: {error}", file=sys.stderr)
            sys.exit(exit_codes.BAD_INPUT)

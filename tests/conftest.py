"""Shared test set-up: oracles importable by name, no telemetry, one composed config."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["DO_NOT_TRACK"] = "true"

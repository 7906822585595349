"""nn-runner: config-driven NumPy neural-network experiments, tracked in MLflow."""

__version__ = "0.1.0"

"""Sweeps (`nn-run -m`): the MLflow parent run around a Hydra multirun, batches of jobs trained together,
and the ranking of a sweep's runs."""

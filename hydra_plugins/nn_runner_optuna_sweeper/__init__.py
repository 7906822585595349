"""nn-runner's Optuna sweeper: `nn-run -m hydra/sweeper=nn_optuna ...` (see optuna_sweeper.py)."""

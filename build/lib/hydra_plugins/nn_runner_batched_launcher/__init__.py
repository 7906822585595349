"""nn-runner's batched Hydra launcher: `nn-run -m hydra/launcher=batched ...` (see batched_launcher.py)."""

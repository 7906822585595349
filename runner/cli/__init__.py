"""The command-line tools, as thin entry points: nn-run (run.py), nn-rerun (rerun.py), nn-compare (compare.py)."""

"""nn-runner installed into a user's own environment: a new venv that already holds the versions people have
(MLflow, NumPy, scikit-learn and Hydra releases other than the lock's). Installing the wheel adds what is
missing and changes none of them, and every command works there (pyproject.toml's ranges, not the lock)."""

import os
import re
import subprocess
import sys

import pytest

from conftest import build_wheel

# what the user had before nn-runner: none of them the lock's version (constraints.txt); optuna 4.5.0, the oldest
# nn-runner's own sweeper takes (hydra-optuna-sweeper, which it replaces, would have downgraded it to 2.10)
USER_PACKAGES = ["mlflow==3.17.1", "numpy==2.3.*", "scikit-learn==1.7.*", "hydra-core==1.3.8", "optuna==4.5.0"]


def run(cmd, cwd, env, timeout=900):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def installed(pip, env):
    """{normalised name: version} of every package in the venv of `pip`."""
    frozen = run([pip, "list", "--format=freeze"], "/", env).stdout
    return {re.sub(r"[-_.]+", "-", name).lower(): version
            for name, _, version in (line.partition("==") for line in frozen.splitlines())}


@pytest.mark.slow
def test_the_wheel_keeps_a_users_versions_and_every_command_works_among_them(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    wheel = build_wheel(tmp_path)
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    bin_ = venv / "bin"
    pip = str(bin_ / "pip")
    run([pip, "install", "--quiet", *USER_PACKAGES], tmp_path, env)
    before = installed(pip, env)
    assert before["mlflow"] == "3.17.1" and before["hydra-core"] == "1.3.8"
    assert before["numpy"].startswith("2.3.") and before["scikit-learn"].startswith("1.7.")
    assert before["optuna"] == "4.5.0"

    added = run([pip, "install", str(wheel)], tmp_path, env)
    after = installed(pip, env)
    # pip names what it replaces ("Found existing installation: numpy 2.3.5", "Attempting uninstall"): nothing
    assert not re.search(r"Found existing installation|Attempting uninstall|Uninstalling", added.stdout), added.stdout
    assert {name: after.get(name) for name in before} == before  # no package removed, up- or downgraded
    assert {"nn-runner", "hydra-joblib-launcher", "hydra-submitit-launcher", "cmaes"} <= set(after)
    assert "hydra-optuna-sweeper" not in after

    short = ["train.iterations=200", "train.log_every=100"]
    single = run([str(bin_ / "nn-run"), *short], work, env)
    (run_id,) = re.findall(r"MLflow run ([0-9a-f]{32}) ", single.stdout + single.stderr)
    for launcher in ("basic", "joblib", "batched"):
        sweep = run([str(bin_ / "nn-run"), "-m", f"hydra/launcher={launcher}", "seed=1,2",
                     f"tracking.experiment=sweep-{launcher}", *short], work, env)
        assert "2 runs ranked by final error" in sweep.stdout, (launcher, sweep.stdout, sweep.stderr[-2000:])
    # a seeded search on the user's optuna 4.5.0, with nn-runner's sweeper and a pruner
    search = run([str(bin_ / "nn-run"), "-m", "hydra/sweeper=nn_optuna", "hydra.sweeper.n_trials=3",
                  "hydra.sweeper.sampler.seed=1", "hydra.sweeper.pruner.name=median", "train.lr=interval(0.1,4)",
                  "tracking.experiment=search", *short], work, env)
    assert "3 runs ranked by final error" in search.stdout, search.stderr[-2000:]
    (results,) = work.glob("multirun/*/*/optimization_results.yaml")
    assert "best_value: " in results.read_text()
    compared = run([str(bin_ / "nn-compare"), "--no-log", "--experiment", "sweep-batched"], work, env)
    assert "2 runs ranked by final error" in compared.stdout
    rerun = run([str(bin_ / "nn-rerun"), run_id], work, env)
    assert rerun.stdout.splitlines()[-1] == "reproduced"
    assert installed(pip, env) == after  # running changed nothing either

"""The package as a plain wheel: built from the checkout, installed into a new venv outside it, and every command
run from another folder (the configs travel inside the wheel as runner/conf). The venv takes the locked versions
(constraints.txt), as `make setup` does: tests/test_user_env.py installs the wheel among a user's own versions."""

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, build_wheel


def run(cmd, cwd, env, timeout=900):
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_a_wheel_installs_and_every_command_runs_from_anywhere(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    wheel = build_wheel(tmp_path)
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    run([str(venv / "bin" / "pip"), "install", "--quiet", "-c", str(ROOT / "constraints.txt"), str(wheel)], tmp_path,
        env)
    bin_ = venv / "bin"

    where = run([str(bin_ / "python"), "-c", "import runner.config as c; print(c.__file__); print(c.CONFIG_DIR)"],
                work, env).stdout.split()
    assert where[0].startswith(str(venv)) and where[1].startswith(str(venv)) and where[1].endswith("runner/conf")
    assert os.path.isfile(os.path.join(where[1], "experiment", "iris.yaml"))  # the presets came along

    short = ["train.iterations=200", "train.log_every=100"]
    single = run([str(bin_ / "nn-run"), *short], work, env)
    assert "runs page: http://127.0.0.1:5000/#/experiments/1/runs?workflowType=machine_learning" in single.stdout + single.stderr
    assert (work / "mlflow.db").is_file()
    sweep = run([str(bin_ / "nn-run"), "-m", "seed=1,2", *short], work, env)
    assert "2 runs ranked by final error" in sweep.stdout
    compared = run([str(bin_ / "nn-compare"), "--no-log"], work, env)
    assert "2 runs ranked by final error" in compared.stdout
    (run_id,) = re.findall(r"MLflow run ([0-9a-f]{32}) ", single.stdout + single.stderr)
    rerun = run([str(bin_ / "nn-rerun"), run_id], work, env)
    assert rerun.stdout.splitlines()[-1] == "reproduced"

"""Hydra's own launcher contract for hydra/launcher=batched, parametrized as Hydra's plugins do it.

LauncherTestSuite and IntegrationTestSuite come with hydra-core (hydra.test_utils.launcher_common_tests);
their fixtures (hydra_sweep_runner, hydra_restore_singletons) come from Hydra's pytest plugin
(hydra.extra.pytest_plugin, loaded through its pytest11 entry point).
"""

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite

from hydra_plugins.nn_runner_batched_launcher.batched_launcher import BatchedLauncher


@pytest.fixture(autouse=True)
def version_base_1_1():
    """Hydra's suites expect the defaults of a process where no version_base was chosen (Hydra 1.1's: a job
    changes into its folder); other tests of the session composed configs with version_base=None."""
    import hydra.version

    from packaging.version import Version

    chosen = hydra.version.getbase()
    hydra.version.setbase("1.1")
    yield
    if isinstance(chosen, Version):  # else no version_base was chosen before: 1.1's defaults stay
        hydra.version.VersionBase.instance().setbase(chosen)


def test_discovery():
    """Hydra finds the launcher through its plugin scan, as it finds any launcher plugin."""
    assert BatchedLauncher.__name__ in [x.__name__ for x in Plugins.instance().discover(Launcher)]


@pytest.mark.parametrize("launcher_name, overrides", [("batched", [])])
class TestBatchedLauncher(LauncherTestSuite):
    """Hydra's launcher test suite with the default n_jobs=-1: a sweep's jobs run in forked workers, one per CPU."""


@pytest.mark.parametrize("launcher_name, overrides", [("batched", ["hydra.launcher.n_jobs=1"])])
class TestBatchedLauncherInProcess(LauncherTestSuite):
    """The same suite with the jobs run in the sweep's own process."""


@pytest.mark.slow
@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [
        # the launcher chosen on the command line, as Hydra's own joblib launcher tests choose theirs
        ({}, ["-m", "hydra/launcher=batched", "hydra/hydra_logging=hydra_debug", "hydra/job_logging=disabled"]),
        # the launcher chosen in the app's config file
        ({"defaults": [{"override hydra/launcher": "batched"}, {"override hydra/hydra_logging": "hydra_debug"},
                       {"override hydra/job_logging": "disabled"}]},
         ["-m"]),
    ],
    ids=["command_line", "config_file"],
)
class TestBatchedLauncherIntegration(IntegrationTestSuite):
    """Hydra's integration suite: each test runs a small app in a fresh Python process, with the launcher."""


APP = '''import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base=None, config_path=".", config_name="config")
def app(cfg):
    if cfg.a == 3:
        raise ValueError("job a=3 fails")
    # nn-run's training and tracking (Hydra's plugin scan loads only the launcher's own modules)
    nn_run_loaded = any(name.split(".")[0] == "mlflow" or name.startswith(("runner.job", "runner.sweep", "runner.nn",
                                                                           "runner.tracking", "runner.cli"))
                        for name in sys.modules)
    with open(os.path.join(HydraConfig.get().runtime.output_dir, "ran.txt"), "w") as out:
        out.write(f"{cfg.a} {HydraConfig.get().runtime.choices['hydra/launcher']} {os.getpid()} {nn_run_loaded}")
    return cfg.a * 10


if __name__ == "__main__":
    print(f"main {os.getpid()}", flush=True)
    app()
'''


def test_another_apps_jobs_run_in_the_launchers_workers_as_the_basic_launcher_runs_them(tmp_path):
    """Every job of a sweep of another app runs its own task function in a forked worker; nn-run's training and
    MLflow are never loaded.

    The failed job fails alone and the sweep reports its error, as with Hydra's basic launcher.
    """
    import subprocess
    import sys

    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "config.yaml").write_text("a: 0\n")
    done = subprocess.run([sys.executable, "app.py", "-m", "hydra/launcher=batched", "hydra.launcher.n_jobs=2",
                           "hydra.sweep.dir=sweep", "a=1,2,3,4,5"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 1 and "job a=3 fails" in done.stderr, done.stderr
    assert "Launching 5 jobs, none batched: the task function is not nn-run's" in done.stdout
    main_pid = int(done.stdout.split("main ")[1].split()[0])
    ran = {}
    for job in range(5):
        if job == 2:
            assert not (tmp_path / "sweep" / "2" / "ran.txt").exists()
            continue
        a, launcher, pid, nn_run_loaded = (tmp_path / "sweep" / str(job) / "ran.txt").read_text().split()
        assert (int(a), launcher, nn_run_loaded) == (job + 1, "batched", "False")
        assert (tmp_path / "sweep" / str(job) / ".hydra" / "config.yaml").exists()
        ran[job] = int(pid)
    assert main_pid not in ran.values() and len(set(ran.values())) == 2  # two forked workers, jobs dealt in turns
    assert ran[0] == ran[4] != ran[1] == ran[3]

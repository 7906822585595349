"""Every command block of README.md and docs/*.md runs as written.

Each ```sh block is cut into commands (a line with its backslash continuations; comments and
comment lines dropped). Every command is either run here, as written, by bash in a fresh empty
folder with the venv's bin first on PATH (SCENARIOS; the only changes are placeholders such as
RUN_ID, filled from a run made earlier in the same folder, and the data files a command names),
or listed in NOT_RUN with the reason and the test that covers it instead. A command that is
neither fails test_every_command_is_run_or_listed, and so does a listed command the docs no
longer have. A command passes when it exits 0 and prints no Python traceback; the console's
exact text is checked by the tests of each command.
"""

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from mlflow import MlflowClient

from runner.tracking.record import HYDRA_OUTPUT_DIR_TAG

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent  # the venv's bin: nn-run, nn-rerun, nn-compare, mlflow


def commands_in(text):
    """The commands of the ```sh blocks of a Markdown text, each as (command as written, its key).

    The key is the command without its comment, on one line with single spaces."""
    found = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.S | re.M):
        for logical in re.split(r"(?<!\\)\n", block):
            if not logical.strip() or logical.lstrip().startswith("#"):
                continue
            written = re.sub(r"\s+#\s.*$", "", logical)
            found.append((written, " ".join(written.replace("\\\n", " ").split())))
    return found


def documented_commands():
    """{key: (page, command as written)} over README.md and docs/*.md."""
    return {key: (page.relative_to(ROOT), written) for page in PAGES for written, key in commands_in(page.read_text())}


@dataclass
class Scenario:
    """Commands of the docs run one after the other in one fresh folder, after `files` are written there."""

    commands: list
    files: dict = field(default_factory=dict)  # {relative path: text}
    before: list = field(default_factory=list)  # set-up commands that are not the docs' (e.g. a sweep to compare)


def iris_rows():
    from sklearn.datasets import load_iris

    iris = load_iris()
    return [(*features, iris.target_names[label]) for features, label in zip(iris.data.tolist(), iris.target)]


def flowers_csv():
    """A user's file as README and datasets.md describe it: numeric features, the species last."""
    rows = [",".join(map(str, row)) for row in iris_rows()]
    return "sepal_length,sepal_width,petal_length,petal_width,species\n" + "\n".join(rows) + "\n"


def xy_csv():
    """Two numeric features and two numeric targets, y1 and y2."""
    lines = ["x1,x2,y1,y2"]
    for i in range(40):
        x1, x2 = (i % 7) / 7, (i % 5) / 5
        lines.append(f"{x1:.4f},{x2:.4f},{(x1 + x2) / 2:.4f},{abs(x1 - x2):.4f}")
    return "\n".join(lines) + "\n"


def raw_tsv():
    """Tab-separated, no header: four features, the class index in column 4."""
    names = sorted({row[-1] for row in iris_rows()})
    return "\n".join("\t".join([*map(str, row[:4]), str(names.index(row[4]))]) for row in iris_rows()) + "\n"


CSV_FILES = {"data/flowers.csv": flowers_csv, "data/xy.csv": xy_csv, "data/raw.tsv": raw_tsv}

SCENARIOS = {
    # README "Installing it as a package" (its nn-run), "A rerun", docs/reruns.md: the default run, then its reruns.
    "a run and its reruns": Scenario([
        "cd /anywhere && nn-run",
        "nn-rerun RUN_ID",
        "nn-rerun RUN_ID --override train.iterations=100",
        "nn-rerun outputs/2026-11-28/14-27-44",
    ]),
    "README: a data set": Scenario([
        "nn-run experiment=iris",
        "nn-run dataset=moons dataset.noise=0.3",
        "nn-run dataset=csv dataset.path=data/flowers.csv dataset.target=species",
    ], files={"data/flowers.csv": flowers_csv}),
    "README and sweeps.md: a sweep and its comparison": Scenario([
        "nn-run -m train.lr=0.1,1,10 model.hidden=[4],[8]",
        "nn-compare",
    ]),
    "datasets.md: built-in data sets": Scenario([
        "nn-run dataset=xor",
        "nn-run dataset=parity dataset.n_bits=4 model.hidden=[8]",
        "nn-run dataset=iris model.hidden=[8] train.lr=0.05 train.iterations=1000 train.log_every=100",
        "nn-run dataset=moons dataset.noise=0.3 dataset.n_samples=500 train.lr=0.02",
        "nn-run -m dataset=iris,wine,breast_cancer model.hidden=[8] train.lr=0.01 train.iterations=1000",
    ]),
    "datasets.md: your own CSV file": Scenario([
        "nn-run dataset=csv dataset.path=data/flowers.csv",
        "nn-run dataset=csv dataset.path=data/flowers.csv dataset.target=species",
        "nn-run dataset=csv dataset.path=data/xy.csv dataset.target=[y1,y2]",
        "nn-run dataset=csv dataset.path=data/raw.tsv dataset.delimiter='\\t' dataset.header=false dataset.target=4",
    ], files=CSV_FILES),
    "datasets.md: split and scaling": Scenario([
        "nn-run dataset=wine dataset.test_fraction=0.3 dataset.split_seed=7 dataset.scale=minmax",
        "nn-run -m dataset=iris dataset.split_seed=0,1,2,3,4",
        "nn-run dataset=iris dataset.val_fraction=0.2",
    ]),
    "model.md: model and training options": Scenario([
        "nn-run dataset=iris model.hidden=[16,8] model.activation=relu model.init=he model.output=softmax "
        "train.batch_size=32 train.lr=0.01 train.iterations=3000 train.log_every=500",
    ]),
    "reruns.md: rerunning a sweep": Scenario([
        "nn-run -m seed=1,2 train.iterations=100",
        "nn-rerun PARENT_RUN_ID",
    ]),
    "reruns.md: a run's numerics on another machine": Scenario([
        'export OPENBLAS_CORETYPE=Haswell NPY_DISABLE_CPU_FEATURES="X86_V4 AVX512_ICL AVX512_SPR"',
    ]),
    "sweeps.md: launchers": Scenario([
        "nn-run -m hydra/launcher=joblib hydra.launcher.n_jobs=2 seed='range(1,9)'",
        "nn-run -m hydra/launcher=submitit_local seed=1,2",
    ]),
    "sweeps.md: batched, seeds and learning rates mixed": Scenario([
        "nn-run -m hydra/launcher=batched seed='range(1,9)' train.lr=0.5,1,2",
    ]),
    # The latest sweep of the default experiment has a held-out split (--metric test_error); "other" has one too.
    "sweeps.md: nn-compare": Scenario([
        "nn-compare",
        "nn-compare --experiment other",
        "nn-compare --metric test_error",
    ], before=[
        "nn-run -m tracking.experiment=other seed=1,2 train.iterations=100",
        "nn-run -m dataset=iris seed=1,2 train.iterations=100",
    ]),
    "sweeps.md: the validation split and the objective": Scenario([
        "nn-run -m dataset=iris dataset.val_fraction=0.2 model.hidden=[3],[8] train.lr=0.01,0.05 train.iterations=1000",
        "nn-compare --metric val_accuracy",
    ]),
    "tracking-and-ui.md: plots": Scenario([
        "nn-run experiment=moons",
        "nn-run dataset=xor tracking.log_plots=true",
        "nn-run -m experiment=iris seed=1,2,3",
    ]),
}

SLURM = "needs a Slurm cluster (make slurm, root): tests/test_slurm.py and tests/test_batched_slurm.py run it"
NOT_RUN = {  # key: (why it is not run here, the test that covers it instead or None)
    "make run": ("make in a checkout (creates .venv); its nn-run is run here as `cd /anywhere && nn-run`", None),
    "make test": ("the whole suite: what CI runs", None),
    "pip install .": ("installs into an environment",
                      "tests/test_wheel.py::test_a_wheel_installs_and_every_command_runs_from_anywhere"),
    ".venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000": (
        "a server, looked at in a browser",
        "tests/test_browser.py::test_ui_nests_the_children_under_the_parent_and_shows_the_plots"),
    "nn-run resume RUN_ID": ("needs a run stopped mid-training (Ctrl-C)",
                             "tests/test_checkpoints.py::test_ctrl_c_then_nn_run_resume_continues_the_same_run_bit_for_bit"),
    "nn-run resume RUN_ID --tracking-uri URI": (
        "needs a run stopped mid-training (Ctrl-C)",
        "tests/test_checkpoints.py::test_ctrl_c_then_nn_run_resume_continues_the_same_run_bit_for_bit"),
    "nn-run -m seed=1,2,3,4,5,6 train.iterations=300000 hydra.sweep.dir=multirun/2026-12-02/16-30-00": (
        "a long sweep (6 x 300,000 iterations) continuing an interrupted one",
        "tests/test_checkpoints.py::"
        "test_an_interrupted_sweep_continued_into_its_folder_keeps_its_finished_runs_and_resumes_the_stopped_one"),
    "PATH=$PWD/.venv/bin:$PATH MLFLOW_TRACKING_URI=sqlite:///mlflow.db mlflow models serve -m runs:/RUN_ID/model "
    "--env-manager local --host 127.0.0.1 --port 5001": (
        "a server", "tests/test_model.py::test_served_model_answers_invocations_with_the_runners_predictions"),
    "curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' -d "
    "'{\"inputs\": [[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]}'": (
        "asks the server above", "tests/test_model.py::test_served_model_answers_invocations_with_the_runners_predictions"),
    "apt-get install slurmctld slurmd slurmdbd slurm-client munge mariadb-server": ("root, installs packages", None),
    "make slurm": (SLURM, "tests/test_slurm.py::test_the_cluster_runs_a_job_requeues_it_at_once_and_stops_leaving_no_daemon"),
    "export SLURM_CONF=$PWD/.slurm/slurm.conf": (SLURM, None),
    "sinfo": (SLURM, None),
    "squeue": (SLURM, None),
    "make slurm-stop": (SLURM, None),
    "make server": ("a server, started by make in a checkout",
                    "tests/test_auth.py::test_make_server_starts_the_auth_app_with_secrets_it_never_prints"),
    "make server-stop": ("a server, stopped by make in a checkout",
                         "tests/test_auth.py::test_make_server_starts_the_auth_app_with_secrets_it_never_prints"),
    ".venv/bin/nn-run -m hydra/launcher=submitit_slurm hydra.launcher.partition=debug tracking=server seed=1,2,3": (
        SLURM, "tests/test_slurm.py::test_a_submitit_slurm_sweep_lands_three_finished_children_under_one_parent"),
    "nn-run -m hydra/launcher=batched hydra.launcher.executor=slurm hydra.launcher.n_jobs=2 "
    "hydra.launcher.partition=debug hydra.launcher.timeout_min=60 seed='range(0,256)'": (
        SLURM, "tests/test_batched_slurm.py::test_256_seeds_are_two_slurm_jobs_and_a_preempted_one_resumes_with_the_same_bits"),
    "nn-run -m hydra/launcher=submitit_slurm hydra.launcher.partition=PARTITION hydra.launcher.timeout_min=120 "
    "hydra.launcher.cpus_per_task=1 hydra.launcher.array_parallelism=32 hydra.sweep.dir=/shared/sweeps/lr-$(date +%F) "
    "tracking.uri=http://HOST:5000 tracking.experiment=NAME train.lr=0.1,1,10": (SLURM + "; a real cluster's names", None),
    "nn-run -m hydra/sweeper=nn_optuna hydra.sweeper.n_trials=20 'train.lr=tag(log,interval(0.01,30))'": (
        "a long sweep (20 trials of 60,000 iterations)",
        "tests/test_sweeps.py::test_optuna_search_minimises_the_final_error_with_a_child_per_trial"),
    "nn-run -m hydra/sweeper=nn_optuna hydra/launcher=joblib hydra.sweeper.n_jobs=2 hydra.sweeper.sampler.seed=1 "
    "'train.lr=tag(log,interval(0.1,10))' 'model.activation=choice(sigmoid,tanh)'": (
        "a search of 20 trials of 60,000 iterations",
        "tests/test_optuna_sweeper.py::"
        "test_a_seeded_search_gives_the_same_trials_bit_for_bit_on_the_basic_and_the_joblib_launcher"),
    "nn-run -m hydra/sweeper=nn_optuna hydra.sweeper.n_trials=20 'train.lr=tag(log,interval(0.01,1))' "
    "hydra.sweep.dir=multirun/lr-search": (
        "a search of 20 trials of 60,000 iterations, run twice",
        "tests/test_study_resume.py::"
        "test_a_search_killed_mid_trial_continues_its_study_and_parent_and_resumes_the_trial"),
    "nn-run -m hydra/sweeper=nn_optuna hydra/launcher=submitit_local hydra.sweeper.workers=3 hydra.sweeper.n_trials=12 "
    "'train.lr=tag(log,interval(0.1,10))' 'train.iterations=choice(1000,3000,10000)'": (
        "a search of 3 submitit jobs (about a minute here)",
        "tests/test_search_workers.py::test_three_submitit_local_workers_fill_the_study_with_one_child_run_per_trial"),
    "read -rs PGPASSWORD && export PGPASSWORD": ("reads a password at the terminal", None),
    "nn-run -m hydra/sweeper=nn_optuna hydra/launcher=submitit_slurm hydra.launcher.partition=PARTITION "
    "hydra.launcher.timeout_min=120 hydra.sweeper.workers=16 hydra.sweeper.n_trials=400 "
    "'hydra.sweeper.storage=${oc.env:OPTUNA_STORAGE}' hydra.sweeper.sampler.constant_liar=true "
    "hydra.sweep.dir=/shared/searches/lr tracking.uri=https://mlflow.example.org 'train.lr=tag(log,interval(0.01,10))'": (
        SLURM + "; a real cluster's names and database",
        "tests/test_search_workers_slurm.py::"
        "test_three_slurm_workers_fill_24_trials_and_a_preempted_worker_resumes_its_trial_bit_for_bit"),
    "nn-run -m hydra/launcher=batched seed='range(1,257)'": (
        "a long sweep (256 jobs; benchmarks/batched_sweep.py times it)",
        "tests/test_batched.py::test_batched_sweep_of_seeds_and_learning_rates_logs_each_child_as_its_single_run"),
    "nn-run -m hydra/launcher=batched hydra.launcher.executor=slurm hydra.launcher.n_jobs=4 "
    "hydra.launcher.partition=PARTITION hydra.launcher.timeout_min=120 seed='range(0,1024)'": (
        SLURM + "; a real cluster's names", None),
    "nn-run -m hydra/launcher=batched hydra.launcher.executor=local hydra.launcher.n_jobs=2 seed='range(0,64)'": (
        "a long sweep (64 jobs as submitit jobs)",
        "tests/test_batched_slurm.py::test_a_local_executor_sweep_runs_each_share_as_a_submitit_job"),
    "nn-compare PARENT_RUN_ID --tracking-uri http://HOST:5000": ("needs a tracking server at HOST", None),
    "make server-user NAME=$USER": ("adds a user on `make server`'s server (asks for a password)",
                                    "tests/test_auth.py::test_make_server_starts_the_auth_app_with_secrets_it_never_prints"),
    "make server-user NAME=alice": ("adds a user on `make server`'s server (asks for a password)",
                                    "tests/test_auth.py::test_make_server_starts_the_auth_app_with_secrets_it_never_prints"),
    "make server-user NAME=bob EXPERIMENT=xor-study PERMISSION=READ": (
        "grants a permission on `make server`'s server",
        "tests/test_auth.py::test_a_user_with_read_only_is_refused_in_one_line_and_the_store_is_unchanged"),
    "export MLFLOW_TRACKING_USERNAME=$USER": ("sets the shell's environment for the commands after it",
                                              "tests/test_auth.py::test_credentials_come_from_the_environment_then_mlflows_own_file"),
    "export MLFLOW_TRACKING_USERNAME=alice": ("sets the shell's environment for the commands after it",
                                              "tests/test_auth.py::test_credentials_come_from_the_environment_then_mlflows_own_file"),
    "read -rs MLFLOW_TRACKING_PASSWORD && export MLFLOW_TRACKING_PASSWORD": (
        "reads a password at the terminal", "tests/test_auth.py::test_credentials_come_from_the_environment_then_mlflows_own_file"),
    "echo 'DBHOST:5432:mlflow:mlflow:DBPASSWORD' >> ~/.pgpass && chmod 600 ~/.pgpass": (
        "writes the user's ~/.pgpass for a real database host", None),
    "make server SERVER_STORE=postgresql+psycopg2://mlflow@DBHOST:5432/mlflow": (
        "a server over a real PostgreSQL host", "tests/test_server.py::test_a_parallel_sweep_lands_every_run_on_the_server"),
    "nn-run -m hydra/launcher=submitit_slurm hydra.launcher.partition=PARTITION tracking.uri=https://mlflow.example.org "
    "train.lr=0.1,1,10": (SLURM + "; a real cluster's names", None),
    ".venv/bin/nn-run tracking=server": ("needs `make server`",
                                         "tests/test_server.py::test_a_parallel_sweep_lands_every_run_on_the_server"),
    ".venv/bin/nn-run -m tracking=server hydra/launcher=joblib train.lr=0.3,1,3": (
        "needs `make server`", "tests/test_server.py::test_a_parallel_sweep_lands_every_run_on_the_server"),
}


def scenario_keys():
    return {" ".join(command.split()) for scenario in SCENARIOS.values() for command in scenario.commands}


def test_every_command_is_run_or_listed():
    documented = documented_commands()
    run, listed = scenario_keys(), set(NOT_RUN)
    assert not run & listed, f"both run and listed as not run: {sorted(run & listed)}"
    unaccounted = {key: str(page) for key, (page, _) in documented.items() if key not in run | listed}
    assert not unaccounted, f"commands in the docs that this test neither runs nor lists in NOT_RUN: {unaccounted}"
    gone = sorted((run | listed) - set(documented))
    assert not gone, f"commands this test runs or lists that no page has any more: {gone}"


def test_every_covering_test_exists():
    for key, (_, covered_by) in NOT_RUN.items():
        if covered_by:
            path, name = covered_by.split("::")
            assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), f"{key}: no test {covered_by}"


def test_the_blocks_are_cut_into_commands_as_written():
    text = "```sh\nnn-run a=1   # why\n# a note\nnn-run -m b=1 \\\n    c=2\n```\n```\nnot sh\n```\n"
    assert commands_in(text) == [("nn-run a=1", "nn-run a=1"), ("nn-run -m b=1 \\\n    c=2", "nn-run -m b=1 c=2")]


def first_run(folder):
    """The first run the folder's store holds, and its Hydra output folder relative to `folder`."""
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name("nn-runner")
    run = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"], max_results=1)[0]
    return run.info.run_id, os.path.relpath(os.path.realpath(run.data.tags[HYDRA_OUTPUT_DIR_TAG]), os.path.realpath(folder))


def latest_sweep(folder):
    """The id of the newest sweep parent run (tag sweep_id) the folder's store holds."""
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name("nn-runner")
    (run,) = client.search_runs([experiment.experiment_id], filter_string="tags.sweep_id LIKE '%'",
                                order_by=["attributes.start_time DESC"], max_results=1)
    return run.info.run_id


def filled_in(command, folder):
    """The command with its placeholders filled from this folder: PARENT_RUN_ID, RUN_ID and its output folder,
    /anywhere."""
    command = command.replace("/anywhere", str(folder))
    if "PARENT_RUN_ID" in command:
        command = command.replace("PARENT_RUN_ID", latest_sweep(folder))
    if "RUN_ID" in command or "outputs/2026-11-28/14-27-44" in command:
        run_id, output_dir = first_run(folder)
        command = command.replace("RUN_ID", run_id).replace("outputs/2026-11-28/14-27-44", output_dir)
    return command


def user_environment():
    """A user's shell: the venv's commands first on PATH, no tracking settings of the test session's."""
    assert (BIN / "nn-run").exists(), f"no nn-run beside {sys.executable}"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_TRACKING", "HYDRA_"))}
    return env | {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "MLFLOW_DISABLE_TELEMETRY": "true",
                  "DO_NOT_TRACK": "true"}


def run_in_shell(command, folder, env):
    done = subprocess.run(["bash", "-c", command], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{output[-3000:]}"
    assert "Traceback" not in output, f"`{command}` printed a traceback:\n{output[-3000:]}"


@pytest.mark.slow
@pytest.mark.parametrize("name", SCENARIOS)
def test_the_documented_commands_run_as_written(name, tmp_path):
    scenario, env = SCENARIOS[name], user_environment()
    documented = documented_commands()
    for relative, make in scenario.files.items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text(make())
    for command in scenario.before:
        run_in_shell(command, tmp_path, env)
    for command in scenario.commands:
        _, written = documented[" ".join(command.split())]
        run_in_shell(filled_in(written, tmp_path), tmp_path, env)

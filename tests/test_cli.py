"""The real `nn-run` command in a subprocess: output, exit codes, what lands in MLflow."""

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NN_RUN, ROOT, interrupt_after, runs_of


def nn_run(cwd, *args):
    return subprocess.run([*NN_RUN, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_cli_run_prints_progress_predictions_and_run(tmp_path, client, tracking_uri, experiment):
    done = nn_run(tmp_path, "train.iterations=3000", "train.log_every=1000", f"tracking.uri={tracking_uri}",
                  f"tracking.experiment={experiment}")
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    for step in (0, 1000, 2000, 3000):
        assert f"step {step}: error " in out
    assert "0 0 1 | 0 | " in out and "1 1 1 | 0 | " in out
    (run,) = runs_of(client, experiment)
    assert f"MLflow run {run.info.run_id}" in out
    assert f"mlflow ui --backend-store-uri {tracking_uri}" in out
    # the run is named after the overrides; where it is logged is not part of the name
    assert run.info.run_name == "train.iterations=3000,train.log_every=1000"
    assert (tmp_path / "outputs").is_dir()  # hydra.job.chdir=false: outputs beside the user, cwd unchanged


def doc_block_after(path, text):
    """The lines of the first plain ``` block after `text` in a doc."""
    doc = (ROOT / path).read_text()
    fences = [n for n, line in enumerate(doc[doc.index(text):].splitlines()) if line.startswith("```")]
    lines = doc[doc.index(text):].splitlines()
    start = next(opening for opening in fences[::2] if lines[opening] == "```")  # fences pair up: open, close
    return lines[start + 1:fences[fences.index(start) + 1]]


def as_pattern(doc_line):
    """A doc's console line as a regex: RUN_ID and ID stand for ids, .venv/bin/ for wherever the venv is."""
    pattern = re.escape(doc_line).replace("RUN_ID", "[0-9a-f]{32}").replace("ID", "[0-9]+")
    return pattern.replace(re.escape(".venv/bin/"), "\\S*/")


def test_cli_default_store_is_sqlite_in_the_working_directory_and_the_console_is_as_the_docs_show(tmp_path):
    done = nn_run(tmp_path, "train.iterations=5", "train.log_every=5")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mlflow.db").is_file()
    assert done.stderr == ""  # stdout: progress and results; stderr: warnings and errors only
    lines = done.stdout.splitlines()
    assert [re.fullmatch(r"step (\d+): error [-+.e0-9]+", line)[1] for line in lines[:2]] == ["0", "5"]  # bare
    for doc, heading in (("README.md", "### A run"), ("docs/tracking-and-ui.md", "## What a run prints")):
        shown = doc_block_after(doc, heading)
        assert len(shown) == 2 and all(re.fullmatch(as_pattern(d), line) for d, line in zip(shown, lines[-2:])), (
            doc, shown, lines[-2:])
    (log,) = tmp_path.glob("outputs/*/*/run.log")  # the timestamped log is the run's own file
    assert re.fullmatch(r"\[[-0-9]+ [:,0-9]+\]\[runner\.job\]\[INFO\] - " + re.escape(lines[0]),
                        log.read_text().splitlines()[0])


def test_hydras_own_console_logging_is_one_override_away(tmp_path):
    done = nn_run(tmp_path, "hydra/job_logging=default", "train.iterations=5", "train.log_every=5")
    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert re.fullmatch(r"\[[-0-9]+ [:,0-9]+\]\[runner\.job\]\[INFO\] - step 0: error [.0-9]+", first)


@pytest.mark.parametrize("override, expected", [
    ("train.lr=-1", "nn-run: train.lr=-1.0 is not allowed: must be a finite number > 0"),
    ("model.activation=swish", "nn-run: model.activation='swish' is not allowed: one of sigmoid, tanh, relu"),
])
def test_cli_bad_value_is_one_line_and_exit_2(tmp_path, override, expected):
    done = nn_run(tmp_path, override, "tracking.uri=sqlite:///store.db")
    assert done.returncode == 2
    assert done.stderr.strip() == expected
    assert list(tmp_path.iterdir()) == []  # not even a store was opened, nor an outputs/DATE/TIME folder left


@pytest.mark.parametrize("overrides, expected", [
    (["train.lrr=0.5"], "train.lrr is not a config key: did you mean train.lr?"),  # Hydra refuses it composing
    (["+train.lrr=0.5"], "train.lrr is not a config key: did you mean train.lr?"),  # Hydra adds it: nn-run refuses
    (["++model.activaton=tanh"], "model.activaton is not a config key: did you mean model.activation?"),
    (["+dataset.n_bits=3"], "dataset.n_bits is not a key of dataset=seed: other data sets have it"),
    (["dataset=parity", "+dataset.n_bit=3"], "dataset.n_bit is not a config key: did you mean dataset.n_bits?"),
    (["+colour=red"], "colour is not a config key"),
])
def test_cli_unknown_key_is_one_line_naming_the_closest_key(tmp_path, overrides, expected):
    done = nn_run(tmp_path, *overrides, "tracking.uri=sqlite:///store.db")
    assert done.returncode == 2
    assert done.stderr.strip() == f"nn-run: {expected} (`nn-run --cfg job` shows every key)"
    assert done.stdout == "" and list(tmp_path.iterdir()) == []  # no store, no run, no output folder


def test_the_bad_input_transcript_of_the_configuration_page_is_what_nn_run_prints(tmp_path):
    transcript = doc_block_after("docs/configuration.md", "## Bad input")
    commands = [n for n, line in enumerate(transcript) if line.startswith("$ nn-run ")]
    assert len(commands) == 4
    for n in commands:
        done = nn_run(tmp_path, *transcript[n].removeprefix("$ nn-run ").split())
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.splitlines() == [transcript[n + 1]]
    assert list(tmp_path.iterdir()) == []


def test_a_refused_run_leaves_what_was_in_its_folder_before(tmp_path):
    folder = tmp_path / "kept"
    (folder / "notes").mkdir(parents=True)
    done = nn_run(tmp_path, "train.lr=-1", f"hydra.run.dir={folder}/run")
    assert done.returncode == 2 and sorted(p.name for p in folder.iterdir()) == ["notes"]
    done = nn_run(tmp_path, "train.lr=-1", f"hydra.run.dir={folder}")  # a folder that was there: left as it was
    assert done.returncode == 2 and (folder / "notes").is_dir()


@pytest.mark.parametrize("preset, swept", [("lr_sweep", "train.lr"),
                                           ("optuna_search", "train.lr, model.hidden, model.activation")])
def test_a_sweep_preset_without_m_says_how_to_run_it(tmp_path, preset, swept):
    done = nn_run(tmp_path, f"experiment={preset}", "tracking.uri=sqlite:///store.db")
    assert done.returncode == 2 and list(tmp_path.iterdir()) == []
    setting = "set train.lr to one value" if preset == "lr_sweep" else f"set {swept} to one value each"
    assert done.stderr.strip() == (
        f"nn-run: experiment={preset} is a sweep (hydra.sweeper.params sweeps {swept}): run it with "
        f"`nn-run -m experiment={preset} tracking.uri=sqlite:///store.db`, or {setting} to run one job")


def test_one_job_of_a_sweep_preset_runs_without_m(tmp_path):
    done = nn_run(tmp_path, "experiment=lr_sweep", "train.lr=0.3", "train.iterations=20", "train.log_every=10",
                  "tracking.uri=sqlite:///store.db")
    assert done.returncode == 0, done.stderr
    assert "step 20: error " in done.stdout


@pytest.mark.parametrize("args, modes", [(["-m", "experiment=lr_sweep", "--cfg", "job"], "-m and --cfg"),
                                         (["--cfg", "job", "--info"], "--cfg and --info")])
def test_two_modes_at_once_are_one_line(tmp_path, args, modes):
    done = nn_run(tmp_path, *args)
    assert done.returncode == 2 and list(tmp_path.iterdir()) == []
    assert done.stderr.strip() == (
        f"nn-run: {modes} cannot go together: each is a way to run nn-run (-m: a sweep; --cfg: show the config of "
        "one job, without running it; --info: Hydra's information); give one")


def test_help_names_the_app_and_its_groups():
    done = subprocess.run([str(Path(sys.executable).parent / "nn-run"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0
    assert "nn-run" in done.stdout and "train: backprop" in done.stdout
    (datasets,) = [line for line in done.stdout.splitlines() if line.startswith("dataset: ")]
    assert {"seed", "iris", "csv"} <= set(datasets[len("dataset: "):].split(", "))
    assert "schema" not in datasets  # the typed schemas of the options are not options themselves
    for command in ("nn-run -m experiment=lr_sweep", "nn-run experiment=seed --cfg job", "nn-run resume RUN_ID",
                    "nn-rerun RUN_ID", "nn-compare"):
        assert f"\n  {command} " in done.stdout  # the footer names every command and what it does


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C; `kill`, a scheduler's time limit
def test_ctrl_c_or_sigterm_marks_the_run_killed_and_keeps_its_metrics(tmp_path, client, tracking_uri, experiment,
                                                                       stop):
    returncode, rest = interrupt_after([*NN_RUN, "train.iterations=100000000", "train.log_every=20000",
                                        f"tracking.uri={tracking_uri}", f"tracking.experiment={experiment}"],
                                       tmp_path, "step 60000: error", stop)
    assert returncode == 130
    assert rest.strip().endswith("nn-run: interrupted; the run is marked KILLED with the metrics logged so far")
    (run,) = runs_of(client, experiment)
    assert run.info.status == "KILLED"
    steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "error"))
    assert steps[:4] == [0, 20000, 40000, 60000]  # every point printed before Ctrl-C was kept
    assert steps == list(range(0, steps[-1] + 1, 20000))

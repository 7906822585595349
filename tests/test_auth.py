"""nn-runner against a real tracking server that runs MLflow's basic-auth app (users, passwords, permissions).

Credentials come from the environment only; the password of each test's user is random and is then
looked for everywhere: every file under the test's folder (outputs, multirun, submitit's files,
checkpoints), every param, tag and artifact on the server, and the console.
"""

import base64
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import NN_RUN
from servers import ADMIN, add_user, auth_server, credentials_env, new_password

from runner.tracking import record
from runner.tracking.uri import ServerRefused, check_access, masked

NN_RERUN = [sys.executable, "-m", "runner.cli.rerun"]
NN_COMPARE = [str(Path(sys.executable).parent / "nn-compare")]
TIMEOUT = 600
REFUSAL_TIMEOUT = 120  # generous for a loaded machine (seen: over 60 s at load 16); MLflow's own retries take minutes
TINY = ["train.iterations=20", "train.log_every=10"]
QUIET_LINES = ("View run", "View experiment")  # MLflow's own lines for a run on a server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A basic-auth server on loopback; yields (url, admin password)."""
    with auth_server(tmp_path_factory.mktemp("auth-server")) as found:
        yield found


@pytest.fixture
def admin(server, monkeypatch):
    """An MlflowClient of the server's admin (credentials in this process's environment for the test)."""
    from mlflow import MlflowClient

    url, admin_password = server
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
    return MlflowClient(url)


def new_user(name):
    """A user name not yet on the module's server (each test adds its own users)."""
    return f"{name}-{secrets.token_hex(3)}"


def run(cmd, cwd, env, timeout=TIMEOUT):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_together(cmds, cwd, env, timeout=TIMEOUT):
    """Run `cmds` at the same time (their output in files, so no pipe fills up); their CompletedProcesses, in order."""
    outputs = [(tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")) for _ in cmds]
    started = [subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
               for cmd, (out, err) in zip(cmds, outputs)]
    deadline = time.monotonic() + timeout
    try:
        codes = [process.wait(timeout=max(1.0, deadline - time.monotonic())) for process in started]
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()
    done = []
    for cmd, code, (out, err) in zip(cmds, codes, outputs):
        out.seek(0), err.seek(0)
        done.append(subprocess.CompletedProcess(cmd, code, out.read(), err.read()))
        out.close(), err.close()
    return done


def secrets_of(username, password):
    """The password as it could leak: as text, and inside the Basic authorization header."""
    return [password.encode(), base64.standard_b64encode(f"{username}:{password}".encode())]


def files_holding(folder, needles):
    """Every file under `folder` whose bytes hold one of `needles`."""
    return [str(p) for p in Path(folder).rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


def server_record_holding(client, url, experiment_id, folder, needles):
    """Where one of `needles` is among the params, tags and artifacts of every run and logged model of an experiment
    (the artifacts are downloaded under `folder`)."""
    import mlflow

    found, texts = [], []
    for run in client.search_runs([experiment_id]):
        texts += [(f"run {run.info.run_id} param {k}", v) for k, v in run.data.params.items()]
        texts += [(f"run {run.info.run_id} tag {k}", v) for k, v in run.data.tags.items()]
        if client.list_artifacts(run.info.run_id):
            found += files_holding(client.download_artifacts(run.info.run_id, "", str(folder / run.info.run_id)),
                                   needles)
    for model in client.search_logged_models([experiment_id]):
        texts += [(f"model {model.model_id} param {k}", v) for k, v in model.params.items()]
        texts += [(f"model {model.model_id} tag {k}", v) for k, v in model.tags.items()]
        found += files_holding(mlflow.artifacts.download_artifacts(
            artifact_uri=model.artifact_location, dst_path=str(folder / model.model_id), tracking_uri=url), needles)
    return found + [where for where, text in texts if any(n.decode() in text for n in needles)]


def store_snapshot(client):
    """Every experiment and run on the server, as (ids, names, statuses, tags): what a refused user must not change."""
    experiments = sorted((e.experiment_id, e.name, e.lifecycle_stage) for e in client.search_experiments())
    runs = sorted((r.info.run_id, r.info.status, tuple(sorted(r.data.tags.items())), tuple(sorted(r.data.params)))
                  for r in client.search_runs([e[0] for e in experiments]))
    return experiments, runs


@pytest.mark.slow
def test_a_user_with_edit_runs_sweeps_reruns_and_compares_and_the_password_is_nowhere(server, admin, tmp_path,
                                                                                     tmp_path_factory, experiment):
    url, admin_password = server
    password = new_password()
    alice = new_user("alice")
    added = add_user(url, admin_password, alice, password, experiment, "EDIT")
    assert added.startswith(f"added user '{alice}'; EDIT on experiment '{experiment}'") and password not in added
    env, work = credentials_env(alice, password), tmp_path / "work"
    work.mkdir()
    where = [f"tracking.uri={url}", f"tracking.experiment={experiment}", *TINY]
    commands = [
        [*NN_RUN, *where, "hydra.run.dir=outputs/single"],
        [*NN_RUN, "-m", *where, "seed=1,2", "hydra.sweep.dir=multirun/basic"],
        [*NN_RUN, "-m", *where, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "train.lr=0.5,1.0",
         "hydra.sweep.dir=multirun/joblib"],
        [*NN_RUN, "-m", *where, "hydra/launcher=batched", "hydra.launcher.n_jobs=2", "train.lr=0.5,1.0",
         "hydra.sweep.dir=multirun/batched"],
        [*NN_RUN, "-m", *where, "hydra/launcher=submitit_local", "seed=3,4", "hydra.sweep.dir=multirun/submitit"],
    ]
    console = []
    for done in run_together(commands, work, env):  # at once, as a team's users would: one server, one experiment
        console += [done.stdout, done.stderr]
        assert done.returncode == 0, done.stderr[-3000:]
        assert not any(line in done.stdout + done.stderr for line in QUIET_LINES)
    single = console[0].strip().splitlines()
    assert f"in experiment '{experiment}' at {url}" in single[-2]
    experiment_id = admin.get_experiment_by_name(experiment).experiment_id
    assert single[-1].endswith(f"runs page: {url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    assert list((work / "multirun/submitit/.submitit").rglob("*_submitted.pkl"))  # submitit's files are there

    runs = admin.search_runs([experiment_id])
    parents = [r for r in runs if record.SWEEP_ID_TAG in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 4 and len(children) == 8 and len(runs) == 13
    assert {r.info.status for r in runs} == {"FINISHED"}
    single_run = next(r for r in runs if r not in parents and r not in children)

    rerun = run([*NN_RERUN, single_run.info.run_id, "--tracking-uri", url], work, env)
    console += [rerun.stdout, rerun.stderr]
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "reproduced" in rerun.stdout.splitlines()
    compared = run([*NN_COMPARE, "--tracking-uri", url, "--experiment", experiment], work, env)
    console += [compared.stdout, compared.stderr]
    assert compared.returncode == 0, compared.stderr[-3000:]
    latest = max(parents, key=lambda r: r.info.start_time)
    assert f"to parent run {latest.info.run_id}" in compared.stdout
    assert len(admin.search_runs([experiment_id])) == 14  # the rerun's run

    needles = secrets_of(alice, password)
    control = tmp_path_factory.mktemp("control") / "header.txt"  # the scan finds a leak where there is one
    control.write_bytes(b"Authorization: Basic " + needles[1] + b"\n")
    assert files_holding(control.parent, needles) == [str(control)]
    assert not [text for text in console if any(n.decode() in text for n in needles)]
    assert files_holding(tmp_path, needles) == []
    assert server_record_holding(admin, url, experiment_id, tmp_path_factory.mktemp("downloaded"), needles) == []


def refusal(url, experiment, user_line):
    return f"tracking.uri='{url}': {user_line}"


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_a_user_with_read_only_is_refused_in_one_line_and_the_store_is_unchanged(server, admin, tmp_path,
                                                                                experiment, sweep):
    url, admin_password = server
    password = new_password()
    reader = new_user("reader")
    add_user(url, admin_password, reader, password, experiment, "READ")
    before = store_snapshot(admin)
    args = ["-m", "seed=1,2", "hydra/launcher=joblib"] if sweep else []
    done = run([*NN_RUN, *args, f"tracking.uri={url}", f"tracking.experiment={experiment}", *TINY], tmp_path,
               credentials_env(reader, password), timeout=REFUSAL_TIMEOUT)
    assert done.returncode == 2
    prefix = "nn-run: the sweep cannot start: " if sweep else "nn-run: "
    assert done.stderr.strip() == prefix + refusal(url, experiment, (
        f"the server refused user '{reader}' permission to create a run in experiment '{experiment}' (HTTP 403); ask "
        "the server's admin for EDIT on it (docs/tracking-server.md) or choose another tracking.experiment"))
    assert "Launching" not in done.stdout and "Traceback" not in done.stderr
    assert store_snapshot(admin) == before
    assert not (tmp_path / "multirun").exists()


@pytest.mark.parametrize("who", ["wrong password", "unknown user", "no credentials"])
@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_a_login_the_server_refuses_is_one_line_before_anything_exists(server, admin, tmp_path, experiment, who,
                                                                      sweep):
    url, admin_password = server
    password = new_password()
    bob, nobody = new_user("bob"), new_user("nobody")
    add_user(url, admin_password, bob, password, experiment, "EDIT")
    env = {"wrong password": credentials_env(bob, password + "x"),
           "unknown user": credentials_env(nobody, password),
           "no credentials": {k: v for k, v in credentials_env(bob, password).items()
                              if not k.startswith("MLFLOW_TRACKING_")}}[who]
    before = store_snapshot(admin)
    args = ["-m", "seed=1,2"] if sweep else []
    done = run([*NN_RUN, *args, f"tracking.uri={url}", f"tracking.experiment={experiment}", *TINY], tmp_path, env,
               timeout=REFUSAL_TIMEOUT)
    assert done.returncode == 2
    user = {"wrong password": bob, "unknown user": nobody}.get(who)
    give = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment "
            "to an account on that server")
    line = (f"the server refused the login of user '{user}' for experiment '{experiment}' (HTTP 401: wrong password "
            f"or unknown user); {give}" if user else
            f"the server asks for a login for experiment '{experiment}' (HTTP 401) and none is set; {give}")
    prefix = "nn-run: the sweep cannot start: " if sweep else "nn-run: "
    assert done.stderr.strip() == prefix + refusal(url, experiment, line)
    assert store_snapshot(admin) == before and not (tmp_path / "multirun").exists()
    assert password not in done.stdout + done.stderr


@pytest.mark.parametrize("sweep", [False, True], ids=["run", "sweep"])
def test_a_password_in_the_tracking_uri_is_refused_before_any_file_is_written(server, admin, tmp_path, experiment,
                                                                             sweep):
    url, admin_password = server
    password = new_password()
    carol = new_user("carol")
    add_user(url, admin_password, carol, password, experiment, "EDIT")
    before = store_snapshot(admin)
    with_password = url.replace("http://", f"http://{carol}:{password}@")
    args = ["-m", "seed=1,2", "hydra/launcher=submitit_local"] if sweep else []
    done = run([*NN_RUN, *args, f"tracking.uri={with_password}", f"tracking.experiment={experiment}", *TINY],
               tmp_path, credentials_env(carol, password), timeout=REFUSAL_TIMEOUT)
    assert done.returncode == 2
    prefix = "nn-run: the sweep cannot start: " if sweep else "nn-run: "
    assert done.stderr.strip() == (
        f"{prefix}tracking.uri='{masked(with_password)}' is not allowed: a user or password in it would be written "
        "into Hydra's, submitit's and MLflow's files; give them in the environment: MLFLOW_TRACKING_USERNAME and "
        f"MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN), and use tracking.uri='{url}'")
    assert password not in done.stdout + done.stderr and carol not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no outputs/, no multirun/: Hydra wrote nothing
    assert store_snapshot(admin) == before


def test_nn_rerun_refuses_a_password_in_its_tracking_uri(tmp_path):
    done = run([*NN_RERUN, "0" * 32, "--tracking-uri", "http://zed:pa55word-zed@127.0.0.1:9"], tmp_path, None,
               timeout=REFUSAL_TIMEOUT)
    assert done.returncode == 2 and "pa55word" not in done.stdout + done.stderr
    assert done.stderr.strip().startswith("nn-rerun: tracking.uri='http://***@127.0.0.1:9' is not allowed: ")
    assert list(tmp_path.iterdir()) == []


def test_the_value_check_refuses_credentials_in_any_uri_without_showing_them():
    from conftest import compose_config

    from runner.config import ConfigError, check

    for uri, advice in [("https://tok3n@mlflow.example", "MLFLOW_TRACKING_TOKEN"),
                        ("postgresql://me:pa55word@db/mlflow", "PGPASSWORD")]:
        with pytest.raises(ConfigError) as refused:
            check(compose_config(f"tracking.uri={uri}"))
        assert advice in str(refused.value) and "tok3n" not in str(refused.value) and "pa55" not in str(refused.value)
    check(compose_config("tracking.uri=http://127.0.0.1:5000"))  # no credentials: allowed


def test_the_probe_lets_a_good_login_in_and_names_a_bad_one(server, monkeypatch, experiment):
    url, admin_password = server
    monkeypatch.setenv("HOME", "/nonexistent")  # no ~/.mlflow/credentials of the machine's user
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password)
    check_access(url, experiment)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_password[::-1])
    with pytest.raises(ServerRefused, match="refused the login of user 'admin'"):
        check_access(url, experiment)


def test_make_server_starts_the_auth_app_with_secrets_it_never_prints(tmp_path):
    import os
    import signal

    from conftest import ROOT
    from servers import free_port, group_alive

    from runner.tracking.uri import check_login

    folder, port = tmp_path / "server", free_port()
    url = f"http://127.0.0.1:{port}"
    # this environment's Python, not a checkout's .venv; -o: do not install it again
    make = ["make", "--no-print-directory", "-C", str(ROOT), "-o", f"{sys.prefix}/.installed", f"VENV={sys.prefix}",
            f"SERVER_DIR={folder}", f"SERVER_PORT={port}"]
    try:
        started = run([*make, "server"], tmp_path, None)
        assert started.returncode == 0, started.stdout + started.stderr
        admin_password = (folder / "admin_password").read_text().strip()
        assert started.stdout.splitlines()[0] == (f"users: admin 'admin', its password in {folder}/admin_password "
                                                  "(mode 600: cat it); add users with make server-user")
        assert started.stdout.splitlines()[1].startswith(f"MLflow server: {url} (PID ")
        for name in ("admin_password", "flask_secret_key", "basic_auth.ini"):
            assert (folder / name).stat().st_mode & 0o777 == 0o600
        secret_key = (folder / "flask_secret_key").read_text().strip()
        assert len(admin_password) >= 32 and len(secret_key) >= 32 and admin_password != secret_key
        assert not [s for s in (admin_password, secret_key) if s in started.stdout + started.stderr
                    or s in (folder / "basic_auth.ini").read_text()]

        with pytest.raises(ServerRefused, match="asks for a login"):
            check_login(url, environ={})
        check_login(url, environ=credentials_env(ADMIN, admin_password))
        password = new_password()
        added = subprocess.run([*make, "server-user", "NAME=dora", "EXPERIMENT=dora-s"], cwd=tmp_path,
                               input=f"{password}\n", capture_output=True, text=True, timeout=TIMEOUT)
        assert added.returncode == 0, added.stderr
        assert added.stdout.startswith(f"added user 'dora'; EDIT on experiment 'dora-s' (id ")
        check_login(url, environ=credentials_env("dora", password))
        again = run([*make, "server"], tmp_path, None)
        assert again.stdout.strip().startswith(f"MLflow server already running: {url} (PID ")
        assert (folder / "admin_password").read_text().strip() == admin_password  # made once, kept
    finally:
        pid = int((folder / "server.pid").read_text()) if (folder / "server.pid").exists() else None
        stopped = run([*make, "server-stop"], tmp_path, None)
        if pid is not None and group_alive(pid):
            os.killpg(pid, signal.SIGKILL)
    assert stopped.stdout.strip() == f"MLflow server (PID {pid}) stopped" and not group_alive(pid)


def test_credentials_come_from_the_environment_then_mlflows_own_file(tmp_path, monkeypatch):
    from runner.tracking.uri import authorization, credentials

    monkeypatch.setenv("HOME", str(tmp_path))
    assert credentials({}) == (None, None, None) and authorization({}) is None
    (tmp_path / ".mlflow").mkdir()
    (tmp_path / ".mlflow/credentials").write_text("[mlflow]\nmlflow_tracking_username = fay\n"
                                                  "mlflow_tracking_password = from-the-file\n")
    assert credentials({}) == ("fay", "from-the-file", None)
    assert authorization({}) == "Basic " + base64.standard_b64encode(b"fay:from-the-file").decode()
    env = {"MLFLOW_TRACKING_USERNAME": "gus", "MLFLOW_TRACKING_PASSWORD": "from-the-env", "MLFLOW_TRACKING_TOKEN": "t"}
    assert credentials(env) == ("gus", "from-the-env", "t")  # MLflow's order: the environment first
    monkeypatch.setenv("HOME", "/nonexistent")
    assert authorization({"MLFLOW_TRACKING_TOKEN": "t"}) == "Bearer t"

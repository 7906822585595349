"""nn-rerun of a whole sweep (runner/sweep/rerun.py): real `nn-run -m` sweeps into a real SQLite store, real nn-rerun
processes. Each sweep is rerun as it is (`N/N reproduced`, exit 0), then with one child's logged weights changed by
1e-12 in the store's artifact folder (that child named, exit 1).

The oracle is the source sweep's own record: every rerun child must repeat its source child's weights (the logged
matrices and their sha256 tag) and every metric point exactly; the changed matrix shows that the comparison sees
one ulp-sized change.
"""

import os
import signal
import subprocess
import time

import numpy as np
import optuna
import pytest
from conftest import runs_of
from test_rerun import NN_RERUN, artifact_dir, cli
from test_rerun_numerics import PLAIN, kernel_or_skip
from test_sweeps import nn_run_m, sweep_of

from runner.cli.rerun import nn_rerun
from runner.exit_codes import BAD_INPUT as EXIT_BAD_INPUT
from runner.exit_codes import FAILED as EXIT_NOT_REPRODUCED
from runner.exit_codes import INTERRUPTED as EXIT_INTERRUPTED
from runner.sweep.rerun import NOT_RERUN_METRIC, REPRODUCED_METRIC, VERDICT_TAG
from runner.tracking import record
from runner.tracking.client import PARENT_RUN_TAG

SHORT = ["train.iterations=200", "train.log_every=100", "tracking.log_model=false"]


def rerun_sweep(cwd, uri, parent_id, *args, env=None):
    return cli(NN_RERUN, cwd, parent_id, "--tracking-uri", uri, *args, env=env)


def the_rerun_parent(client, experiment, parent_id, count=1):
    """The newest of the rerun parents of `parent_id` (there are `count`) and its children."""
    runs = runs_of(client, experiment)
    parents = [r for r in runs if r.data.tags.get(record.RERUN_OF_TAG) == parent_id]
    assert len(parents) == count
    newest = max(parents, key=lambda r: r.info.start_time)
    return newest, [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == newest.info.run_id]


def assert_reproduced(client, experiment, parent, children, done, count=1, env=None):
    """nn-rerun's output and record of a sweep whose every child reproduced."""
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == f"{len(children)}/{len(children)} reproduced"
    assert not any(line.startswith(("differs:", "not rerun:")) for line in lines)
    assert "Traceback" not in done.stderr
    new_parent, reruns = the_rerun_parent(client, experiment, parent.info.run_id, count)
    assert new_parent.info.status == "FINISHED" and new_parent.data.tags[VERDICT_TAG] == lines[-1]
    assert PARENT_RUN_TAG not in new_parent.data.tags and new_parent.info.run_name == f"{parent.info.run_name} (rerun)"
    assert new_parent.data.metrics[REPRODUCED_METRIC] == len(children)
    assert f"new parent run {new_parent.info.run_id} (rerun_of={parent.info.run_id})" in done.stdout
    by_source = {r.data.tags[record.RERUN_OF_TAG]: r for r in reruns}
    assert sorted(by_source) == sorted(c.info.run_id for c in children) and len(reruns) == len(children)
    for child in children:
        new = by_source[child.info.run_id]
        assert new.info.status == "FINISHED" and new.info.run_name == f"{child.info.run_name} (rerun)"
        assert new.data.tags[record.WEIGHTS_HASH_TAG] == child.data.tags[record.WEIGHTS_HASH_TAG]
        assert new.data.tags.get(record.PRUNED_AT_TAG) == child.data.tags.get(record.PRUNED_AT_TAG)
        assert new.data.params == child.data.params  # a search's trials replayed with their values, none sampled
    return new_parent, by_source


def alter_weights(client, child):
    """Add 1e-12 to one entry of the child's logged first weight matrix, in the store's artifact folder."""
    path = os.path.join(artifact_dir(client.get_run(child.info.run_id)), record.weight_file(0))
    weights = np.load(path)
    weights.flat[0] += 1e-12
    np.save(path, weights)


def assert_one_named(done, children, altered):
    """nn-rerun's output when `altered` alone differs."""
    assert done.returncode == EXIT_NOT_REPRODUCED, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == f"{len(children) - 1}/{len(children)} reproduced"
    (line,) = [line for line in lines if line.startswith("differs:")]
    assert line.startswith(f"differs: {altered.info.run_id} ({altered.info.run_name}): ")
    assert "weights" in line and "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_64_seed_batched_sweep_is_rerun_in_stacks_and_reproduced_and_a_changed_child_is_named(
        tmp_path, tracking_uri, experiment, client):
    done = nn_run_m(tmp_path, tracking_uri, experiment, "hydra/launcher=batched", "seed=range(0,64)", *SHORT,
                    timeout=600)
    assert done.returncode == 0, done.stderr
    parent, children = sweep_of(client, experiment)
    assert len(children) == 64

    done = rerun_sweep(tmp_path, tracking_uri, parent.info.run_id)
    assert_reproduced(client, experiment, parent, children, done)
    assert "rebuilding" not in done.stdout  # the sweep's process computed as this one does: one stack, here

    altered = children[37]
    alter_weights(client, altered)
    done = rerun_sweep(tmp_path, tracking_uri, parent.info.run_id)
    assert_one_named(done, children, altered)
    line = next(line for line in done.stdout.splitlines() if line.startswith("differs:"))
    assert "source weights: the logged matrices do not hash to the source's weights_sha256 tag" in line


@pytest.mark.slow
def test_a_joblib_sweep_is_rerun_with_its_workers_numerics_and_a_failed_source_child_is_counted(
        tmp_path, tracking_uri, experiment, client):
    done = nn_run_m(tmp_path, tracking_uri, experiment, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                    "seed=1,2,3,4", *SHORT)
    assert done.returncode == 0, done.stderr
    parent, children = sweep_of(client, experiment)
    assert {c.data.tags.get("env.OPENBLAS_NUM_THREADS") for c in children} == {"1"}  # joblib's workers' setting

    done = rerun_sweep(tmp_path, tracking_uri, parent.info.run_id, env=PLAIN)
    assert_reproduced(client, experiment, parent, children, done)
    (rebuilt,) = [line for line in done.stdout.splitlines() if line.startswith("rebuilding the numerics of ")]
    assert rebuilt.startswith("rebuilding the numerics of 4 children in a child process: ")
    assert "OPENBLAS_NUM_THREADS=1" in rebuilt
    _, reruns = the_rerun_parent(client, experiment, parent.info.run_id)
    assert {r.data.tags.get("env.OPENBLAS_NUM_THREADS") for r in reruns} == {"1"}

    altered, failed = children[2], children[3]
    alter_weights(client, altered)
    client.set_terminated(failed.info.run_id, "FAILED")  # as a job whose process died: its record is incomplete
    done = rerun_sweep(tmp_path, tracking_uri, parent.info.run_id, env=PLAIN)
    assert done.returncode == EXIT_NOT_REPRODUCED, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1] == "2/4 reproduced (1 source child not FINISHED, not rerun: 1 FAILED)"
    assert f"not rerun: {failed.info.run_id} ({failed.info.run_name}): the source child is FAILED" in lines
    (line,) = [line for line in lines if line.startswith("differs:")]
    assert line.startswith(f"differs: {altered.info.run_id} ({altered.info.run_name}): ")
    new_parent, reruns = the_rerun_parent(client, experiment, parent.info.run_id, count=2)
    assert len(reruns) == 3 and failed.info.run_id not in {r.data.tags[record.RERUN_OF_TAG] for r in reruns}
    assert new_parent.data.metrics[NOT_RERUN_METRIC] == 1 and new_parent.data.metrics[REPRODUCED_METRIC] == 2

    # Ctrl-C while the rebuilt group trains: nothing is left RUNNING, the rerun's parent ends KILLED
    proc = subprocess.Popen([*NN_RERUN, parent.info.run_id, "--tracking-uri", tracking_uri], cwd=tmp_path, env=PLAIN,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("rebuilding the numerics"):
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_INTERRUPTED, out + err
    assert not [r.info.run_name for r in runs_of(client, experiment) if r.info.status == "RUNNING"]
    killed, _ = the_rerun_parent(client, experiment, parent.info.run_id, count=3)
    assert killed.info.status == "KILLED"


# a search of 10 trials on iris with a validation split and a median pruner, 4 trials a batch (test_pruning's)
@pytest.mark.slow
def test_a_submitit_sweep_is_rerun_and_reproduced(tmp_path, tracking_uri, experiment, client):
    """A submitit_local sweep: each job ran in a process submitit started for it, with the sweep's environment."""
    done = nn_run_m(tmp_path, tracking_uri, experiment, "hydra/launcher=submitit_local", "seed=1,2,3", *SHORT,
                    timeout=600)
    assert done.returncode == 0, done.stderr
    parent, children = sweep_of(client, experiment)
    assert len(children) == 3 and len({c.data.tags["pid"] for c in children}) == 3  # a process each
    assert_reproduced(client, experiment, parent, children, rerun_sweep(tmp_path, tracking_uri, parent.info.run_id))


@pytest.mark.slow
def test_a_rerun_killed_outright_is_ended_failed_by_the_next_rerun_of_the_sweep(tmp_path, tracking_uri, experiment,
                                                                                client):
    """SIGKILL leaves MLflow runs RUNNING (nothing in the process runs again); the next nn-rerun of the same sweep
    finds the rerun parent whose process is gone and ends it FAILED, saying why."""
    done = nn_run_m(tmp_path, tracking_uri, experiment, "seed=1,2", "train.iterations=400000",
                    "train.log_every=100000", "tracking.log_model=false", timeout=600)
    assert done.returncode == 0, done.stderr
    parent, children = sweep_of(client, experiment)
    killed = subprocess.Popen([*NN_RERUN, parent.info.run_id, "--tracking-uri", tracking_uri], cwd=tmp_path,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, abandoned = time.monotonic() + 120, None
        while abandoned is None and time.monotonic() < deadline and killed.poll() is None:
            time.sleep(0.2)
            abandoned = next((r for r in runs_of(client, experiment) if r.info.status == "RUNNING"
                              and r.data.tags.get(record.RERUN_OF_TAG) == parent.info.run_id), None)
        assert abandoned is not None, "the rerun's parent run did not appear while it trained"
        killed.kill()
    finally:
        killed.kill()
        killed.wait()
    assert client.get_run(abandoned.info.run_id).info.status == "RUNNING"  # what SIGKILL leaves

    done = rerun_sweep(tmp_path, tracking_uri, parent.info.run_id)
    assert_reproduced(client, experiment, parent, children, done, count=2)
    after = client.get_run(abandoned.info.run_id)
    reason = f"its process (pid {killed.pid} on {abandoned.data.tags['host']}) ended without closing the run"
    assert after.info.status == "FAILED" and after.data.tags["error"] == reason
    assert (f"an earlier rerun of this sweep, parent run {abandoned.info.run_id}, was left RUNNING: {reason}; "
            "ended FAILED") in done.stdout.splitlines()
    assert not [r for r in runs_of(client, experiment) if r.info.status == "RUNNING"]


TRIAL = ["dataset=iris", "dataset.val_fraction=0.2", "train.iterations=600", "train.log_every=100"]
SEARCH = ["hydra/sweeper=nn_optuna", "hydra.sweeper.n_trials=10", "hydra.sweeper.sampler.name=random",
          "hydra.sweeper.sampler.seed=1", "hydra.sweeper.pruner.name=median", "hydra.sweeper.pruner.n_startup_trials=2",
          "train.lr=tag(log,interval(0.0001,0.1))", *TRIAL, "tracking.log_model=false", "hydra.sweep.dir=search",
          "hydra/launcher=batched", "hydra.launcher.n_jobs=1", "hydra.sweeper.n_jobs=4"]


@pytest.mark.slow
def test_a_pruned_search_is_replayed_from_its_trials_configs_to_their_pruning_steps(
        tmp_path, tracking_uri, experiment, client):
    done = nn_run_m(tmp_path, tracking_uri, experiment, *SEARCH)
    assert done.returncode == 0, done.stderr
    parent, children = sweep_of(client, experiment)
    pruned = [c for c in children if record.PRUNED_AT_TAG in c.data.tags]
    assert 0 < len(pruned) < len(children) == 10

    done = rerun_sweep(tmp_path, tracking_uri, parent.info.run_id)
    _, by_source = assert_reproduced(client, experiment, parent, children, done)
    for child in pruned:  # trained to the step its pruner stopped it at, no further
        new = by_source[child.info.run_id]
        step = int(child.data.tags[record.PRUNED_AT_TAG])
        errors = client.get_metric_history(new.info.run_id, record.VAL_ERROR_METRIC)
        assert max(m.step for m in errors) == step < 600
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{tmp_path}/search/optuna.db")
    assert len(study.trials) == 10  # no trial asked

    altered = pruned[0]
    alter_weights(client, altered)
    assert_one_named(rerun_sweep(tmp_path, tracking_uri, parent.info.run_id), children, altered)


@pytest.mark.slow
def test_a_sweep_from_another_kernel_is_rebuilt_and_reproduced(tmp_path, tracking_uri, experiment, client):
    """A basic launcher's sweep, made under another OPENBLAS_CORETYPE: its children are rerun in one stack, in a
    child process with that kernel."""
    kernel = kernel_or_skip()
    done = nn_run_m(tmp_path, tracking_uri, experiment, "seed=1,2,3", *SHORT, env={"OPENBLAS_CORETYPE": kernel})
    assert done.returncode == 0, done.stderr
    parent, children = sweep_of(client, experiment)

    done = rerun_sweep(tmp_path, tracking_uri, parent.info.run_id, env=PLAIN)
    assert_reproduced(client, experiment, parent, children, done)
    (rebuilt,) = [line for line in done.stdout.splitlines() if line.startswith("rebuilding the numerics of ")]
    assert f"OPENBLAS_CORETYPE={children[0].data.tags['blas_architecture']}" in rebuilt

    done = rerun_sweep(tmp_path, tracking_uri, parent.info.run_id, "--no-rebuild", env=PLAIN)
    assert done.returncode == EXIT_NOT_REPRODUCED and done.stdout.splitlines()[-1] == "0/3 reproduced"
    assert all("recorded environment facts that differ: " in line and "blas_architecture" in line
               for line in done.stdout.splitlines() if line.startswith("differs:"))

    altered = children[1]
    alter_weights(client, altered)
    assert_one_named(rerun_sweep(tmp_path, tracking_uri, parent.info.run_id, env=PLAIN), children, altered)


def test_bad_input_to_a_sweep_rerun_is_one_line_and_makes_no_run(tracking_uri, experiment, client, capsys):
    experiment_id = client.create_experiment(experiment)
    parent = client.create_run(experiment_id, tags={record.SWEEP_ID_TAG: "s"}, run_name="empty sweep")
    client.set_terminated(parent.info.run_id)
    args = [parent.info.run_id, "--tracking-uri", tracking_uri]
    assert nn_rerun(args) == EXIT_BAD_INPUT
    assert capsys.readouterr() == ("", f"nn-rerun: sweep parent run {parent.info.run_id} has no child runs: "
                                       "nothing to rerun\n")

    child = client.create_run(experiment_id, tags={PARENT_RUN_TAG: parent.info.run_id}, run_name="not nn-run's")
    client.set_terminated(child.info.run_id)
    assert nn_rerun(args) == EXIT_BAD_INPUT
    assert capsys.readouterr() == ("", f"nn-rerun: child run {child.info.run_id} (not nn-run's) has no config.yaml "
                                       "artifact: it was not logged by nn-run\n")

    assert nn_rerun([*args, "--override", "seed=3"]) == EXIT_BAD_INPUT
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("nn-rerun: --override seed=3: not allowed for a sweep's parent run ")
    assert len(err.splitlines()) == 1
    assert len(runs_of(client, experiment)) == 2  # no rerun parent was made

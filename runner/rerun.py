"""Reruns: train a recorded run's config again and prove the result identical (the logic of `nn-rerun`).

A source is an MLflow run or a Hydra output folder; its recorded config is composed with nn-run's
configs (real Hydra composition), trained as a new run linked to it, and the two records are
compared exactly (runner/tracking/record_diff.py). A pruned source (tag pruned_at_step) is
reproduced by training to that step; a run derived from it with overrides trains in full. A
reproduction whose source recorded another BLAS kernel, other NumPy SIMD loops or other
OPENBLAS_*/NPY_*/OMP_*/MKL_* values than this process has trains in a child process whose
environment rebuilds them (runner/tracking/numeric_env.py), after one line saying what it set.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner import checkpoint, exit_codes
from runner.config import CONFIG_DIR, PRIMARY_CONFIG, check_tracking_uri, tracking_defaults
from runner.job import run_job
from runner.tracking import numeric_env, provenance, record
from runner.tracking.record_diff import (
    Difference,
    compare_metrics,
    compare_weights,
    differing_facts,
)
from runner.tracking.uri import redact

HYDRA_CONFIG = os.path.join(".hydra", "config.yaml")
HYDRA_OVERRIDES = os.path.join(".hydra", "overrides.yaml")
RECORDED_CONFIG, CHANGED_CONFIG = "_rerun_recorded", "_rerun_changed"  # written into a copy of conf/


class RerunError(ValueError):
    """Input nn-rerun cannot use; the message is the one line the user sees."""


class DatasetChanged(RerunError):
    """The dataset file a run trained on is missing or no longer has the recorded sha256."""


@dataclass
class Source:
    """What a rerun starts from."""

    label: str  # the MLflow run id, or the output folder when no run records it
    config: dict  # the composed config it ran with
    overrides: list  # its command-line overrides
    run_name: str
    experiment: str
    uri: str  # the tracking URI the new run is logged to
    run: object = None  # the MLflow run to compare with; None when there is none
    artifacts: str | None = None  # local copy of that run's artifacts
    pruned_at_step: int | None = None  # the step a pruner stopped it at (record.PRUNED_AT_TAG), else None


def pruned_at(tags):
    """The step of a run's record.PRUNED_AT_TAG, or None for a run that was not pruned."""
    value = tags.get(record.PRUNED_AT_TAG)
    return None if value is None else int(value)


def _read_yaml(path, what):
    try:
        with open(path) as handle:
            return yaml.safe_load(handle)
    except OSError as error:
        raise RerunError(f"cannot read {what}: {error.strerror}: {path}") from None
    except yaml.YAMLError as error:
        raise RerunError(f"{what} is not valid YAML: {str(error).splitlines()[0]}: {path}") from None


def _read_config(path, what):
    config = _read_yaml(path, what)
    if not isinstance(config, dict):
        raise RerunError(f"{what} holds no config mapping: {path}")
    return config


def source_from_run(run_id, uri, folder):
    """The run `run_id` in the store at `uri`, its artifacts downloaded under `folder`."""
    # stored_run imports MLflow (~1.5 s): only once a source is looked up
    from runner.tracking import stored_run

    run = stored_run.get_run(uri, run_id)
    artifacts = stored_run.download_artifacts(uri, run_id, folder)
    config_path = os.path.join(artifacts, record.CONFIG_FILE)
    if not os.path.isfile(config_path):
        raise RerunError(f"run {run_id} has no {record.CONFIG_FILE} artifact: it was not logged by nn-run")
    overrides_path = os.path.join(artifacts, record.OVERRIDES_FILE)
    overrides = _read_yaml(overrides_path, "the run's overrides") if os.path.isfile(overrides_path) else []
    return Source(run_id, _read_config(config_path, "the run's config"), list(overrides or []),
                  run.info.run_name or run_id, stored_run.experiment_name(uri, run), uri, run, artifacts,
                  pruned_at(run.data.tags))


def source_from_output_dir(path, uri, folder):
    """A Hydra output folder; the MLflow run that recorded it (tag hydra_output_dir) if the store has one."""
    # stored_run imports MLflow (~1.5 s): only once a source is looked up
    from runner.tracking import stored_run

    config = _read_config(os.path.join(path, HYDRA_CONFIG), "the folder's Hydra config")
    overrides_path = os.path.join(path, HYDRA_OVERRIDES)
    overrides = _read_yaml(overrides_path, "the folder's overrides") if os.path.isfile(overrides_path) else []
    tracking = config.get("tracking") or {}
    default_uri, default_experiment = tracking_defaults()
    uri = uri or tracking.get("uri", default_uri)
    experiment = tracking.get("experiment", default_experiment)
    source = Source(os.path.abspath(path), config, list(overrides or []), os.path.normpath(path), experiment, uri)
    source.pruned_at_step = (checkpoint.read_meta(path) or {}).get("pruned_at_step")  # its checkpoint note's
    run = stored_run.run_with_tag(uri, experiment, record.HYDRA_OUTPUT_DIR_TAG, os.path.abspath(path))
    if run is not None:
        source.label, source.run, source.run_name = run.info.run_id, run, run.info.run_name or run.info.run_id
        source.artifacts = stored_run.download_artifacts(uri, run.info.run_id, folder)
        source.pruned_at_step = pruned_at(run.data.tags)
    return source


def load_source(text, uri, folder):
    """A Source from a run id or a Hydra output folder (anything naming a folder or holding a '/')."""
    if os.path.isdir(text):
        if not os.path.isfile(os.path.join(text, HYDRA_CONFIG)):
            raise RerunError(f"{text} has no {HYDRA_CONFIG}: not a Hydra output folder")
        return source_from_output_dir(text, uri, folder)
    if os.sep in text or "/" in text:
        raise RerunError(f"no folder {text} (a run id has no '/'; a Hydra output folder must exist)")
    return source_from_run(text, uri or tracking_defaults()[0], folder)


def _one_line(error):
    """Hydra's and OmegaConf's multi-line messages as one line: their unindented lines, joined."""
    lines = []
    while error is not None:
        lines += [line.removeprefix(f"In '{RECORDED_CONFIG}': ") for line in str(error).splitlines()
                  if line.strip() and not line[0].isspace() and not line.startswith("See https://")]
        error = error.__cause__
    return "; ".join(lines)


def _primary(config, overrides=()):
    """A primary config that composes like nn-run's conf/config.yaml, then sets the recorded values.

    Each group takes the option its recorded `name` names, so a data set brings its own schema
    (dataset=csv: CsvConfig); a group the overrides switch (`dataset=iris`) drops its recorded values.
    """
    groups = {entry.name for entry in os.scandir(CONFIG_DIR) if entry.is_dir()}
    switched = {override.split("=", 1)[0].lstrip("+~") for override in overrides} & groups
    recorded = {key: value for key, value in config.items() if key not in switched}
    chosen = [{f"override {group}": node["name"]} for group, node in recorded.items()
              if group in groups and isinstance(node, dict)
              and os.path.isfile(os.path.join(CONFIG_DIR, group, f"{node.get('name')}.yaml"))]
    return {"defaults": [PRIMARY_CONFIG, *chosen, "_self_"], **recorded}


def compose_from(config, overrides, label):
    """`config` checked against the schema, with Hydra-style `overrides` applied: real Hydra composition
    of nn-run's configs with the recorded values on top, in a copy of conf/."""
    with tempfile.TemporaryDirectory() as folder:
        conf = shutil.copytree(CONFIG_DIR, os.path.join(folder, "conf"))
        for name, primary in ((RECORDED_CONFIG, _primary(config)), (CHANGED_CONFIG, _primary(config, overrides))):
            with open(os.path.join(conf, f"{name}.yaml"), "w") as handle:
                yaml.safe_dump(primary, handle)
        with initialize_config_dir(config_dir=conf, version_base=None):
            try:
                compose(config_name=RECORDED_CONFIG)
            except (HydraException, OmegaConfBaseException) as error:
                raise RerunError(f"the config of {label} does not fit the schema: {_one_line(error)}") from None
            try:
                return compose(config_name=CHANGED_CONFIG, overrides=list(overrides))
            except (HydraException, OmegaConfBaseException) as error:
                raise RerunError(f"--override {' '.join(overrides)}: {_one_line(error)}") from None


def reproduction_values(source):
    """The source's recorded config with its tracking settings replaced by where the rerun logs: the source's store
    and experiment."""
    return {**source.config, "tracking": {**(source.config.get("tracking") or {}),
                                          "uri": source.uri, "experiment": source.experiment}}


def check_dataset_file(path, expected_sha256, label):
    """Raise DatasetChanged unless the file at `path` (relative to the working directory) has the
    sha256 recorded with run `label`."""
    full = os.path.expanduser(path)  # as the csv data set reads it
    if not os.path.isfile(full):
        raise DatasetChanged(f"dataset.path={path!r} is missing: run {label} trained on a file with "
                             f"sha256 {expected_sha256}")
    actual = record.file_sha256(full)
    if actual != expected_sha256:
        raise DatasetChanged(f"dataset.path={path!r} has changed since run {label}: sha256 {actual}, "
                             f"recorded {expected_sha256}")


def check_dataset(source, cfg):
    """When the source recorded a dataset file's sha256 and the new config reads the same path, the
    file must still be that file."""
    expected = source.run.data.tags.get(record.DATASET_SHA256_TAG) if source.run else None
    if not expected:
        return
    path = (source.config.get("dataset") or {}).get("path")
    if path is None:
        raise DatasetChanged(f"run {source.label} records {record.DATASET_SHA256_TAG} but its config has no dataset.path")
    if OmegaConf.select(cfg, "dataset.path") == path:  # an override to another file is the user's choice
        check_dataset_file(path, expected, source.label)


def compare_records(source_run, new_tags, source_weights, new_weights, source_points, new_points):
    """(differences, differing environment facts) between a source run's record and its rerun's: plain data in.

    `source_run` is the source's MLflow run (status, tags), the weights are lists of matrices, the points
    {metric key: [(step, value), ...]}. Both nn-rerun of one run and of a sweep (runner/sweep/rerun.py) compare so.
    """
    source_tags = source_run.data.tags
    differences = []
    if source_run.info.status != "FINISHED":
        differences.append(Difference("source run", f"status {source_run.info.status}: its record is incomplete"))
    source_hash, new_hash = source_tags.get(record.WEIGHTS_HASH_TAG), new_tags.get(record.WEIGHTS_HASH_TAG)
    if source_hash != new_hash:
        differences.append(Difference(record.WEIGHTS_HASH_TAG, f"source {source_hash}, rerun {new_hash}"))
    if source_hash and record.weights_sha256(source_weights) != source_hash:
        differences.append(Difference("source weights", f"the logged matrices do not hash to the source's "
                                      f"{record.WEIGHTS_HASH_TAG} tag: they were changed after the run"))
    differences += compare_weights(source_weights, new_weights)
    differences += compare_metrics(source_points, new_points)
    return differences, differing_facts(source_tags, new_tags)


def compare_runs(source, new_run_id, folder):
    """(differences, differing environment facts) between the source's record and the new run's."""
    # stored_run imports MLflow (~1.5 s): only once a source is looked up
    from runner.tracking import stored_run

    new_run = stored_run.get_run(source.uri, new_run_id)
    new_weights = record.read_weights(stored_run.download_artifacts(source.uri, new_run_id, folder))
    return compare_records(source.run, new_run.data.tags, record.read_weights(source.artifacts), new_weights,
                           stored_run.metric_histories(source.uri, source.run),
                           stored_run.metric_histories(source.uri, new_run))


def stop_at(pruned_step):
    """A should_stop for run_job that stops training at the logged step `pruned_step`, as its pruner did."""
    def should_stop(step, scores):
        return step == pruned_step

    return should_stop


def report(differences, facts):
    """Print the verdict and the exit code: what differs and the environment facts that differ, then
    `not reproduced` (exit 1); or the facts that differ, if any, then `reproduced` (exit 0)."""
    for difference in differences:
        print(f"differs: {difference}")
    if facts:
        print("recorded environment facts that differ (source -> rerun):")
        for key, before, after in facts:
            print(f"  {key}: {before} -> {after}")
    elif differences:
        print("recorded environment facts: none differ (code, versions, BLAS, CPU, OPENBLAS_* all the same)")
    print("not reproduced" if differences else "reproduced")
    return exit_codes.FAILED if differences else exit_codes.OK


def rebuild_numerics(source, argv):
    """When the source recorded other numerics than this process has, rerun in a child process that has
    them (`argv` plus --no-rebuild) and return its exit code; None when nothing needs rebuilding."""
    recorded = numeric_env.numeric_facts(source.run.data.tags)
    if not recorded or recorded == numeric_env.numeric_facts(provenance.numeric_tags()):
        return None
    plan = numeric_env.rebuild(source.run.data.tags)
    print(f"rebuilding the numerics of run {source.label} in a child process: "
          f"{', '.join(plan.changes) or 'no variable to change'}", flush=True)
    if plan.missing:
        print(f"cannot rebuild on this machine: it lacks {' and '.join(plan.missing)}; comparing anyway", flush=True)
    environ = {**plan.environ, "PYTHONPATH": os.pathsep.join(
        [numeric_env.PACKAGE_PARENT, *filter(None, [plan.environ.get("PYTHONPATH")])])}  # this very runner
    child = subprocess.Popen([sys.executable, "-m", "runner.cli.rerun", *argv, "--no-rebuild"], env=environ,
                             stdout=subprocess.PIPE, text=True)
    try:
        for line in child.stdout:  # relayed, so whoever reads this process's stdout reads the child's too
            print(line, end="", flush=True)
    finally:
        code = child.wait()  # Ctrl-C reaches the child too; it ends its run KILLED before this returns
    return code


def rerun(text, uri, overrides, argv=None):
    """Run nn-rerun on a source (run id or output folder); returns the exit code.

    `argv` (this command's arguments) is given when the numerics may be rebuilt in a child process.
    """
    if uri is not None:  # a password in it would reach the child's command line and the new run's record
        check_tracking_uri(uri)
    with tempfile.TemporaryDirectory() as folder:
        source = load_source(text, uri, os.path.join(folder, "source"))
        if argv is not None and source.run is not None and not overrides:
            code = rebuild_numerics(source, argv)
            if code is not None:
                return code
        cfg = compose_from(reproduction_values(source), overrides, f"run {source.label}" if source.run else source.label)
        check_dataset(source, cfg)
        if overrides:
            name, link = f"{source.run_name} + {','.join(overrides)}", record.DERIVED_FROM_TAG
        else:
            name, link = f"{source.run_name} (rerun)", record.RERUN_OF_TAG
        should_stop = None
        if source.pruned_at_step is not None and not overrides:  # a reproduction stops where the pruner stopped it
            print(f"run {source.label} was pruned at step {source.pruned_at_step}: the rerun stops there too")
            should_stop = stop_at(source.pruned_at_step)
        result = run_job(cfg, [*source.overrides, *overrides], name, extra_tags={link: source.label},
                         should_stop=should_stop)
        print(f"new run {result.run_id} ({link}={source.label}) in experiment {cfg.tracking.experiment!r}")
        if overrides:
            print(f"derived from {source.label} with {' '.join(overrides)}: not a reproduction, nothing compared")
            return 0
        if source.run is None:
            print(f"not compared: no MLflow run at {redact(source.uri)} records the output folder {source.label}")
            return 0
        return report(*compare_runs(source, result.run_id, os.path.join(folder, "rerun")))

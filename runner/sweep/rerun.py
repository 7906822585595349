"""nn-rerun of a whole sweep: every child of a sweep's parent run trained again and compared with its source.

A sweep's parent run (tag sweep_id: runner/sweep/callback.py) of any launcher or sweeper is rerun
from its children's records: each FINISHED child's config.yaml artifact is composed again (a
search's trials are replayed, never sampled), children whose configs differ only in `seed` and
`train.lr` train together as the batched launcher trains them (runner/sweep/batches.py, bit for
bit the single training), a pruned trial stops at its pruning step as a one-run rerun does. The
reruns are logged under a new parent run tagged rerun_of=the source parent, each child tagged
rerun_of=its source child, and compared exactly as one run is (runner/rerun.py compare_records),
with the stores' bulk reads. Children recorded with other numerics (another BLAS kernel, other
OPENBLAS_*/OMP_* values, as a joblib worker's) are grouped by those facts and each group trains in
a child process that rebuilds them (runner/tracking/numeric_env.py). A source child that did not
finish (FAILED, KILLED) is not rerun: it is named and counts as not reproduced.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from contextlib import contextmanager
from copy import deepcopy
from dataclasses import dataclass

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner import exit_codes
from runner.config import check_tracking_uri, tracking_defaults
from runner.job import mlflow_client, release_batch, run_job
from runner.nn.training import DivergenceError
from runner.rerun import (
    RerunError,
    Source,
    check_dataset,
    compare_records,
    compose_from,
    pruned_at,
    reproduction_values,
    stop_at,
)
from runner.sweep.batches import BATCH_FREE_KEYS, plan_batches, train_batch
from runner.tracking import numeric_env, provenance, record, run_owner

MAX_BATCH = 1024  # most networks trained in one stack, as the batched launcher's default hydra.launcher.max_batch
REPRODUCED_METRIC, NOT_REPRODUCED_METRIC, NOT_RERUN_METRIC = "children_reproduced", "children_not_reproduced", \
    "children_not_rerun"  # on the rerun's parent run
VERDICT_TAG = "verdict"  # on the rerun's parent run: its last line, `N/N reproduced`


@dataclass
class Outcome:
    """How the rerun of one source child went: its new run, or why there is none."""

    source: object  # the source child's MLflow run
    new_run_id: str | None = None
    failure: str | None = None  # why the rerun did not end with a run to compare (it diverged, ...)


def is_sweep_parent(run):
    """Whether an MLflow run is a sweep's parent run (runner/sweep/callback.py tags it with sweep_id)."""
    return record.SWEEP_ID_TAG in run.data.tags


def sweep_parent(text, uri):
    """The sweep parent run that `text` names in the store at `uri`, or None (a folder, or another run)."""
    if os.path.isdir(text) or os.sep in text or "/" in text:
        return None
    check_tracking_uri(uri)  # a password in it would reach a child process's command line and the new runs' record
    # stored_run imports MLflow (~1.5 s): only once a run id is looked up
    from runner.tracking import stored_run

    run = stored_run.get_run(uri, text)
    return run if is_sweep_parent(run) else None


def child_name(run):
    """`RUN_ID (name)`: how a line names a child."""
    return f"{run.info.run_id} ({run.info.run_name})"


def load_sources(uri, experiment, children, folder):
    """A runner.rerun.Source per child run (its config.yaml downloaded under `folder`); RerunError for a child
    that has none (not logged by nn-run)."""
    # stored_run imports MLflow (~1.5 s): only once a source is looked up
    from runner.tracking import stored_run

    sources = []
    for child in children:
        run_id = child.info.run_id
        where = os.path.join(folder, run_id)
        try:
            path = stored_run.download_artifact(uri, child, record.CONFIG_FILE, where)
        except stored_run.NotInStore:
            raise RerunError(f"child run {child_name(child)} has no {record.CONFIG_FILE} artifact: it was not "
                             "logged by nn-run") from None
        with open(path) as handle:
            config = yaml.safe_load(handle)
        if not isinstance(config, dict):
            raise RerunError(f"the {record.CONFIG_FILE} of child run {child_name(child)} holds no config mapping")
        overrides = json.loads(child.data.tags.get(record.OVERRIDES_TAG, "[]"))
        sources.append(Source(run_id, config, overrides, child.info.run_name or run_id, experiment, uri, child,
                              where, pruned_at(child.data.tags)))
    return sources


def reproduction_configs(sources):
    """Each source's config composed for its reproduction (runner.rerun.compose_from: real Hydra composition).

    Configs that differ only in the keys a batch may differ in (`seed`, `train.lr`) are composed once: the
    others are that composition with their own values set, which is what composing them gives.
    """
    composed, configs = {}, []
    for source in sources:
        values = reproduction_values(source)
        rest = deepcopy(values)
        free = {}
        for key in BATCH_FREE_KEYS:
            *path, last = key.split(".")
            node = rest
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and last in node:
                free[key] = node.pop(last)
        shape = json.dumps(rest, sort_keys=True, default=str)
        if shape not in composed:
            composed[shape] = compose_from(values, [], f"run {source.label}")
            configs.append(composed[shape])
        else:
            cfg = deepcopy(composed[shape])
            try:
                for key, value in free.items():
                    OmegaConf.update(cfg, key, value, merge=False)
            except OmegaConfBaseException as error:
                raise RerunError(f"the config of run {source.label} does not fit the schema: "
                                 f"{str(error).splitlines()[0]}") from None
            configs.append(cfg)
        check_dataset(source, configs[-1])
    return configs


@contextmanager
def quiet_jobs():
    """run_job's per-step and per-run lines held back: a sweep's rerun prints what differs, not every point."""
    logger = logging.getLogger("runner.job")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def train_reruns(sources, configs, parent_run_id, experiment_id, outcomes, max_batch=MAX_BATCH):
    """Train and log the reruns of `sources` (with their composed `configs`) as children of `parent_run_id`:
    those that can, together (runner/sweep/batches.py), the others alone. Each one's Outcome goes into
    `outcomes` ({source id: Outcome}) as soon as its run has ended."""
    stoppers = [None if s.pruned_at_step is None else stop_at(s.pruned_at_step) for s in sources]

    def log(index, trained=None):
        source = sources[index]
        try:
            result = run_job(configs[index], source.overrides, f"{source.run_name} (rerun)", parent_run_id,
                             experiment_id, extra_tags={record.RERUN_OF_TAG: source.label}, trained=trained,
                             should_stop=stoppers[index])
            outcomes[source.label] = Outcome(source.run, result.run_id)
        except DivergenceError as error:  # its run ended FAILED with the reason
            outcomes[source.label] = Outcome(source.run, failure=f"the rerun diverged: {error}")

    with quiet_jobs():
        batches = plan_batches(configs, max_batch)
        for batch in batches:
            trained = train_batch([configs[i] for i in batch], stoppers=[stoppers[i] for i in batch])
            shared = next((t.shared for t in trained if t is not None), None)
            try:
                for index, done in zip(batch, trained):
                    log(index, done)  # None: one the batch could not train trains alone
            finally:
                if shared is not None:
                    release_batch(shared)
        batched = {i for batch in batches for i in batch}
        for index in range(len(sources)):
            if index not in batched:
                log(index)


def numeric_groups(sources, rebuild):
    """[(recorded numeric facts, sources)] in order of first appearance; with `rebuild` false, one group trained
    here (facts None)."""
    if not rebuild:
        return [(None, list(sources))]
    here = numeric_env.numeric_facts(provenance.numeric_tags())
    groups = {}
    for source in sources:
        facts = numeric_env.numeric_facts(source.run.data.tags)
        key = None if not facts or facts == here else json.dumps(facts, sort_keys=True)
        groups.setdefault(key, []).append(source)
    return [(None if key is None else json.loads(key), members) for key, members in groups.items()]


def rebuilt_part(sources, uri, source_parent_id, parent_run_id, experiment_id, folder):
    """Rerun `sources` (one group of recorded numerics) in a child process whose environment rebuilds them;
    returns {source id: Outcome}."""
    tags = sources[0].run.data.tags
    plan = numeric_env.rebuild(tags)
    count = f"{len(sources)} child{'ren' if len(sources) > 1 else ''}"
    print(f"rebuilding the numerics of {count} in a child process: "
          f"{', '.join(plan.changes) or 'no variable to change'}", flush=True)
    if plan.missing:
        print(f"cannot rebuild on this machine: it lacks {' and '.join(plan.missing)}; comparing anyway", flush=True)
    part = os.path.join(folder, f"part-{uuid.uuid4().hex}.json")
    with open(part, "w") as handle:
        json.dump({"children": [s.label for s in sources], "parent_run_id": parent_run_id,
                   "experiment_id": experiment_id}, handle)
    environ = {**plan.environ, "PYTHONPATH": os.pathsep.join(
        [numeric_env.PACKAGE_PARENT, *filter(None, [plan.environ.get("PYTHONPATH")])])}  # this very runner
    command = [sys.executable, "-m", "runner.cli.rerun", source_parent_id, "--tracking-uri", uri, "--no-rebuild",
               "--sweep-part", part]
    # a session of its own: a terminal's Ctrl-C reaches this process alone, which hands it on once (below)
    child = subprocess.Popen(command, env=environ, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in child.stdout:  # relayed: its warnings and errors went to stderr already
            print(line, end="", flush=True)
        code = child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)  # the child ends its run KILLED
        child.wait()
        raise
    done = {}
    if os.path.isfile(part + ".out"):
        with open(part + ".out") as handle:
            done = json.load(handle)
    by_id = {s.label: s for s in sources}
    outcomes = {}
    for label, source in by_id.items():
        found = done.get(label)
        if found is None:
            outcomes[label] = Outcome(source.run, failure=f"its rebuilt rerun did not end (child process exit {code})")
        else:
            outcomes[label] = Outcome(source.run, found.get("run_id"), found.get("failure"))
    return outcomes


def run_part(text, uri, part):
    """In a child process with rebuilt numerics (rebuilt_part): rerun the children `part` (a JSON file) lists,
    logging under its parent run; writes {source id: {run_id, failure}} beside it. Returns the exit code."""
    with open(part) as handle:
        plan = json.load(handle)
    uri = uri or tracking_defaults()[0]
    parent = sweep_parent(text, uri)
    if parent is None:
        raise RerunError(f"{text} is not a sweep's parent run")
    wanted = set(plan["children"])
    children = [c for c in mlflow_client().child_runs(uri, parent) if c.info.run_id in wanted]
    experiment = mlflow_client().client_for(uri).get_experiment(parent.info.experiment_id).name
    with tempfile.TemporaryDirectory() as folder:
        sources = load_sources(uri, experiment, children, folder)
        configs = reproduction_configs(sources)
        outcomes = {}
        try:
            train_reruns(sources, configs, plan["parent_run_id"], plan["experiment_id"], outcomes)
        finally:  # what ended so far, also after Ctrl-C or an error
            with open(part + ".out", "w") as handle:
                json.dump({k: {"run_id": o.new_run_id, "failure": o.failure} for k, o in outcomes.items()}, handle)
    return exit_codes.OK


def compare_all(uri, parent_run_id, outcomes, folder):
    """{source id: (differences, differing facts)} for every outcome with a new run (a child of `parent_run_id`),
    read with the store's bulk queries (child runs, metric histories) and one download of each run's weights."""
    # stored_run imports MLflow (~1.5 s): only once a source is looked up
    from runner.tracking import stored_run

    tracking = mlflow_client()
    done = [o for o in outcomes if o.new_run_id is not None]
    if not done:
        return {}
    new_runs = {r.info.run_id: r for r in tracking.child_runs(uri, tracking.get_run(uri, parent_run_id))}
    runs = [o.source for o in done] + [new_runs[o.new_run_id] for o in done]
    keys = sorted({key for run in runs for key in run.data.metrics})
    points = {key: tracking.metric_histories(uri, [r.info.run_id for r in runs], key) for key in keys}

    def histories(run):
        return {key: points[key][run.info.run_id] for key in run.data.metrics}

    def weights(run):
        where = os.path.join(folder, run.info.run_id)
        stored_run.download_artifact(uri, run, record.WEIGHTS_DIR, where)
        return record.read_weights(where)

    compared = {}
    for outcome in done:
        source, new = outcome.source, new_runs[outcome.new_run_id]
        compared[source.info.run_id] = compare_records(source, new.data.tags, weights(source), weights(new),
                                                       histories(source), histories(new))
    return compared


def brief(differences, facts):
    """What differs for one child, in one short line: the first difference, how many more, the facts' names."""
    text = str(differences[0])
    if len(differences) > 1:
        text += f" (and {len(differences) - 1} more)"
    if facts:
        text += f"; recorded environment facts that differ: {', '.join(key for key, _, _ in facts)}"
    return text


def summary(reproduced, total, not_rerun):
    """The last line: `N/M reproduced`, and the source children not rerun by status."""
    line = f"{reproduced}/{total} reproduced"
    if not_rerun:
        counts = Counter(run.info.status for run in not_rerun)
        said = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        line += f" ({len(not_rerun)} source child{'ren' if len(not_rerun) > 1 else ''} not FINISHED, not rerun: {said})"
    return line


def end_abandoned_reruns(uri, source):
    """Earlier reruns of the sweep `source` (its parent run) left RUNNING by a process that is gone (SIGKILL, the
    OOM killer): their RUNNING children whose process is gone too, then their parent, end FAILED with the reason,
    as a sweep's end ends its lost children. One whose process runs, or ran on another host, is left as it is."""
    tracking = mlflow_client()
    stale = tracking.client_for(uri).search_runs(
        [source.info.experiment_id],
        filter_string=f"tags.`{record.RERUN_OF_TAG}` = '{source.info.run_id}' and attributes.status = 'RUNNING'")
    for rerun in stale:
        if not run_owner.owner_gone(rerun.data.tags):
            continue
        for child in tracking.child_runs(uri, rerun):
            if child.info.status == "RUNNING" and run_owner.owner_gone(child.data.tags):
                tracking.fail_run(uri, child.info.run_id, run_owner.lost_reason(child.data.tags))
        reason = run_owner.lost_reason(rerun.data.tags)
        tracking.fail_run(uri, rerun.info.run_id, reason)
        print(f"an earlier rerun of this sweep, parent run {rerun.info.run_id}, was left RUNNING: {reason}; "
              "ended FAILED", flush=True)


def rerun_sweep(parent, uri, rebuild=True):
    """nn-rerun of the sweep whose parent run is `parent` in the store at `uri`; returns the exit code.

    Everything is read and composed before the rerun's parent run exists: bad input is one RerunError and no run.
    """
    check_tracking_uri(uri)
    tracking = mlflow_client()
    experiment = tracking.client_for(uri).get_experiment(parent.info.experiment_id).name
    children = tracking.child_runs(uri, parent)
    if not children:
        raise RerunError(f"sweep parent run {parent.info.run_id} has no child runs: nothing to rerun")
    finished = [c for c in children if c.info.status == "FINISHED"]
    not_rerun = [c for c in children if c.info.status != "FINISHED"]
    with tempfile.TemporaryDirectory() as folder:
        sources = load_sources(uri, experiment, finished, os.path.join(folder, "sources"))
        configs = reproduction_configs(sources)
        print(f"rerunning sweep {parent.info.run_id} ({parent.info.run_name}): {len(children)} children, "
              f"{len(finished)} FINISHED", flush=True)
        config_of = {s.label: cfg for s, cfg in zip(sources, configs)}
        tags = {**provenance.provenance_tags(), **run_owner.owner_tags(), record.RERUN_OF_TAG: parent.info.run_id,
                record.SWEEP_ID_TAG: uuid.uuid4().hex}
        for key in (record.SWEPT_KEYS_TAG, record.OBJECTIVE_TAG):  # what nn-compare ranks the reruns by
            if key in parent.data.tags:
                tags[key] = parent.data.tags[key]
        end_abandoned_reruns(uri, parent)
        experiment_id, parent_run_id = tracking.open_run(uri, experiment, f"{parent.info.run_name} (rerun)", tags)
        try:
            outcomes = {}
            for facts, members in numeric_groups(sources, rebuild):
                if facts is None:
                    train_reruns(members, [config_of[s.label] for s in members], parent_run_id, experiment_id,
                                 outcomes)
                else:
                    outcomes.update(rebuilt_part(members, uri, parent.info.run_id, parent_run_id, experiment_id,
                                                 folder))
            status = "FAILED" if any(o.failure for o in outcomes.values()) else "FINISHED"
            ordered = [outcomes[s.label] for s in sources]
            compared = compare_all(uri, parent_run_id, ordered, os.path.join(folder, "compared"))
            reproduced = 0
            for child in children:
                if child.info.status != "FINISHED":
                    print(f"not rerun: {child_name(child)}: the source child is {child.info.status}")
                    continue
                outcome = outcomes[child.info.run_id]
                if outcome.failure:
                    print(f"differs: {child_name(child)}: {outcome.failure}")
                    continue
                differences, facts = compared[child.info.run_id]
                if differences:
                    print(f"differs: {child_name(child)}: {brief(differences, facts)}")
                else:
                    reproduced += 1
            verdict = summary(reproduced, len(children), not_rerun)
            tracking.set_run_tags(uri, parent_run_id, {VERDICT_TAG: verdict})
            metrics = {REPRODUCED_METRIC: reproduced, NOT_REPRODUCED_METRIC: len(finished) - reproduced,
                       NOT_RERUN_METRIC: len(not_rerun)}
        except BaseException as error:
            stopped = isinstance(error, (KeyboardInterrupt, SystemExit))  # Ctrl-C: each child run ended KILLED too
            tracking.close_run(uri, parent_run_id, "KILLED" if stopped else "FAILED", {})
            raise
        tracking.close_run(uri, parent_run_id, status, metrics)
    print(f"new parent run {parent_run_id} ({record.RERUN_OF_TAG}={parent.info.run_id}) with {len(outcomes)} "
          f"child runs in experiment {experiment!r}")
    print(verdict)
    return exit_codes.OK if reproduced == len(children) else exit_codes.FAILED

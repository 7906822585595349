"""One MLflow parent run per Hydra sweep (`nn-run -m`), with one child run per job.

`SweepTracking` is a Hydra callback (registered under `hydra.callbacks` in conf/config.yaml).
In the process that starts the sweep it prepares the store (tables, experiment) before any job
starts, opens the parent run and writes `SWEEP_FILE` into the sweep folder; each job, in whatever
process or machine the launcher gives it, reads that file to log as a child of the parent in the
same experiment. When the sweep is over (or its process exits after a failure), the parent is
ended FINISHED if every job's run finished, KILLED after Ctrl-C, else FAILED, with the counts as
metrics (`trials_pruned`: the children a pruner stopped early, tagged pruned_at_step; they finished,
and are left out of best_error).

The end accounts for every job, whatever the launcher: a child still RUNNING whose process is
gone (SIGKILL, the OOM killer; runner/tracking/run_owner.py) ends FAILED with an `error` tag that says so,
jobs of the basic sweeper that never ran are counted and named on the parent, and a child that its
cluster stopped (`scancel`: it ended KILLED, counted with the failed) is named with the checkpoint it
resumes from.
"""

import atexit
import json
import logging
import math
import re
import signal
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import RunMode
from omegaconf import OmegaConf

from runner import checkpoint, exit_codes, objective
from runner.config import ConfigError
from runner.hydra_private import job_error
from runner.job import mlflow_client, redact_overrides
from runner.output_folders import remove_made
from runner.sweep.compare import CHILD_TAGS, compare_sweep
from runner.tracking import record, run_owner
from runner.tracking.provenance import provenance_tags
from runner.tracking.sweep_store import open_sweep_store
from runner.tracking.uri import check_access, redact

log = logging.getLogger(__name__)

SWEEP_FILE = "mlflow_sweep.json"  # in hydra.sweep.dir: how a sweep's jobs find their parent run
PRUNING_SWEEPER = "nn_optuna"  # the sweeper whose trials can be pruned: its parent run always says how many were
SETTLE_SECONDS = 15.0  # at the end, how long a RUNNING child's live process on this host gets to end its run


_interrupted = []  # non-empty once nn-run was interrupted (Ctrl-C, SIGTERM): the parent then ends KILLED
_open_sweeps = []  # the SweepTracking callbacks of this process whose parent run is open


def note_interrupted():
    """nn-run was stopped by Ctrl-C or SIGTERM: a sweep's parent run ends KILLED, even between two jobs."""
    _interrupted.append(True)


class SweepError(RuntimeError):
    """A job of a sweep cannot log: the sweep has no parent run to log under."""


@dataclass
class SweepContext:
    """What a job needs to log as a child of its sweep's parent run."""

    sweep_id: str
    experiment_id: str
    parent_run_id: str


def sweep_arguments(config):
    """The sweep's arguments as Hydra's sweepers read them: `hydra.sweeper.params`, then the command line."""
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    return [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)


def swept_values(config):
    """{key: values} for every config key a sweep varies, from `hydra.sweeper.params` and the command line.

    The values are the sweep's text (`0.1,1,10`, `interval(0.1, 1)`); a command-line override of a
    key that `hydra.sweeper.params` also sweeps wins, as in Hydra's sweepers.
    """
    candidates = sweep_arguments(config)
    swept = {}
    for text, override in zip(candidates, OverridesParser.create().parse_overrides(candidates)):
        if override.is_sweep_override():
            swept[override.key_or_group] = text.split("=", 1)[1]
    return swept


def sweep_name(config, keys):
    """A readable parent-run name: the named experiment, if any, and the swept keys."""
    name = f"sweep over {', '.join(keys)}" if keys else "sweep"
    experiment = OmegaConf.select(config, "hydra.runtime.choices.experiment")
    return f"{experiment}: {name}" if experiment else name


def planned_jobs(config):
    """Each job's overrides, in job order, as Hydra's basic sweeper launches them; None for another sweeper
    (Optuna's trials are not known in advance) or when the sweep cannot be parsed here.

    The basic sweeper's rule: `hydra.sweeper.params`, then the command line, one entry per key (a
    later one replaces an earlier one in its place), and the cartesian product of their values.
    """
    if OmegaConf.select(config, "hydra.runtime.choices.hydra/sweeper") != "basic":
        return None
    try:
        parsed = OverridesParser.create().parse_overrides(sweep_arguments(config))
        choices = {}
        for override in parsed:
            key = override.get_key_element()
            if override.is_sweep_override():
                if not override.is_discrete_sweep():
                    return None
                choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
            else:
                choices[key] = [f"{key}={override.get_value_element_as_str()}"]
    except Exception:  # noqa: BLE001  e.g. glob() over config groups needs Hydra's config loader
        return None
    jobs = [[]]
    for values in choices.values():
        jobs = [job + [value] for job in jobs for value in values]
    return jobs


def sweep_objective(config, swept):
    """The metric the sweep `config` optimises and ranks by (runner/objective.py), from its config without the
    swept values; ConfigError for one it cannot have, or that its sweeper's `direction` would optimise the wrong
    way. With data-set keys swept, the jobs check their own."""
    try:
        metric = objective.configured(config)
    except objective.ObjectiveError as error:
        metric = config.sweep.objective
        if metric not in objective.CHOICES or not any(key == "dataset" or key.startswith("dataset.") for key in swept):
            raise ConfigError(str(error)) from None
    direction = OmegaConf.select(config, "hydra.sweeper.direction")
    if isinstance(direction, str) and direction != objective.direction(metric):
        raise ConfigError(f"hydra.sweeper.direction={direction} is not allowed: the sweep's objective {metric} "
                          f"(sweep.objective={config.sweep.objective}) is to {objective.direction(metric)}")
    return metric


def launcher_report(error):
    """What a launcher said about a worker that died, in a few words ('exit codes SIGKILL(-9)'), or None."""
    if error is None:
        return None
    # submitit's words for a job that ended without its result (scancel, a time limit): Slurm's state from sacct
    found = re.search(r"Job (\S+) \(task: \d+\) with path .*\s+has not produced any output \(state: ([^)]*)\)",
                      str(error))
    if found is not None:
        return f"job {found.group(1)} {found.group(2)}"
    found = re.search(r"exit codes? of the workers? (?:are|is) \{([^}]*)\}|exit code (-?\d+)", str(error))
    if found is None:
        return None
    if found.group(1):
        return f"exit codes {found.group(1)}"  # joblib's own words: {SIGKILL(-9)}
    code = int(found.group(2))
    named = f" ({signal.Signals(-code).name})" if -code in signal.valid_signals() else ""
    return f"exit code {code}{named}"


def _sweep_file(hydra_cfg):
    """SWEEP_FILE in the sweep folder; a relative folder means the directory nn-run was started in."""
    return Path(hydra_cfg.runtime.cwd, str(hydra_cfg.sweep.dir), SWEEP_FILE)


def job_context():
    """The sweep the running Hydra job belongs to; None outside `-m`.

    Raises SweepError when the sweep has no parent run (the callback is not registered), so that
    no job of a sweep logs a run outside it.
    """
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    return _read_context(hydra_cfg)


def _read_context(hydra_cfg):
    path = _sweep_file(hydra_cfg)
    try:
        return SweepContext(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise SweepError(f"{path} is missing: the sweep callback runner.sweep.callback.SweepTracking must be "
                         "registered under hydra.callbacks (conf/config.yaml)") from None


def _discovered(kind):
    """{`_target_` path: class} of the installed Hydra plugins of `kind` (Launcher, Sweeper), as Hydra finds them."""
    return {f"{cls.__module__}.{cls.__qualname__}": cls for cls in Plugins.instance().discover(kind)}


def _check_launcher(launcher_cfg):
    """Construct the sweep's launcher once: a setting it rejects stops the sweep before the parent run exists.

    (Hydra constructs the launcher only after this callback has opened the parent run.) As Hydra's
    Plugins do, the class is the discovered launcher plugin that `_target_` names, called with the
    config's keys; hydra.utils.instantiate would refuse the basic launcher's class since hydra-core
    1.3.7 (a hydra._internal name, which declarative configuration may not select).
    """
    target = launcher_cfg.get("_target_")
    launchers = _discovered(Launcher)
    if target not in launchers:
        raise ConfigError(f"hydra.launcher._target_={target} is not an installed Hydra launcher; "
                          f"installed: {', '.join(sorted(launchers))}")
    instantiate_keys = {"_target_", "_convert_", "_recursive_", "_partial_", "_args_"}  # not the class's arguments
    settings = {key: launcher_cfg[key] for key in launcher_cfg if key not in instantiate_keys}
    try:
        launchers[target](**settings)
    except Exception as error:  # noqa: BLE001  the launcher's own refusal, whatever its type
        raise ConfigError(str(error)) from None


def _check_sweeper(config):
    """The sweeper's own check of its settings, if it has one (nn_optuna's check_settings: sampler, pruner,
    storage, search space), so that a bad one stops the sweep before the parent run exists, as _check_launcher."""
    target = config.hydra.sweeper.get("_target_")
    sweepers = _discovered(Sweeper)
    check = getattr(sweepers.get(target), "check_settings", None)
    if check is None:
        return
    try:
        check(config)
    except ValueError as error:  # its one-line refusal (runner.sweep.optuna_settings.SettingsError)
        raise ConfigError(str(error)) from None


class SweepTracking(Callback):
    """Hydra callback: a parent MLflow run around every multirun; see the module docstring."""

    def __init__(self, compare=True):
        self.compare = compare  # at the end, print the ranking and log it to the parent (nn-compare)
        self._parent = None  # (tracking uri, parent run id), only in the process that started the sweep

    def on_multirun_start(self, config, **kwargs):
        try:
            context = self._open_parent(config)
            sweep_file = _sweep_file(config.hydra)
            sweep_file.parent.mkdir(parents=True, exist_ok=True)
            sweep_file.write_text(json.dumps(asdict(context)))
        except Exception as error:
            # Hydra would only warn about a callback's error and start the jobs: stop before any starts
            remove_made(_sweep_file(config.hydra).parent)
            print(f"nn-run: the sweep cannot start: {error}", file=sys.stderr)
            sys.exit(exit_codes.BAD_INPUT)

    def _open_parent(self, config):
        # in seconds, before MLflow's import and its minutes of retries; a login the server refuses too
        check_access(config.tracking.uri, config.tracking.experiment)
        _check_launcher(config.hydra.launcher)
        _check_sweeper(config)
        open_run = mlflow_client().open_run

        swept = swept_values(config)
        for key, values in swept.items():
            if key.startswith("tracking."):
                raise ConfigError(f"{key}={values} is not allowed: one sweep logs to one store and one experiment")
        metric = sweep_objective(config, swept)
        sweep_id = uuid.uuid4().hex
        tags = {
            **provenance_tags(),
            **run_owner.owner_tags(),
            record.SWEEP_ID_TAG: sweep_id,
            record.SWEPT_KEYS_TAG: json.dumps(list(swept)),
            record.OVERRIDES_TAG: json.dumps(redact_overrides(config.hydra.overrides.task)),
            record.SWEEP_DIR_TAG: str(_sweep_file(config.hydra).parent.resolve()),
            record.LAUNCHER_TAG: OmegaConf.select(config, "hydra.runtime.choices.hydra/launcher"),
            record.SWEEPER_TAG: OmegaConf.select(config, "hydra.runtime.choices.hydra/sweeper"),
            record.OBJECTIVE_TAG: metric,
        }
        uri = config.tracking.uri
        self._planned = planned_jobs(config)
        self._unnamed = set(OmegaConf.select(config, "hydra.job.config.override_dirname.exclude_keys") or [])
        earlier = self._earlier_parent(config, tags[record.OVERRIDES_TAG])
        if earlier is not None:  # the same sweep into its own folder: continue it, as this process's
            sweep_id, experiment_id, run_id = earlier.sweep_id, earlier.experiment_id, earlier.parent_run_id
            mlflow_client().reopen_run(uri, run_id, run_owner.owner_tags())
        else:
            experiment_id, run_id = open_run(uri, config.tracking.experiment, sweep_name(config, list(swept)), tags)
        # from here on every way out ends the parent (a Ctrl-C too): when a job failed, Hydra's sweepers raise
        # after the batch and on_multirun_end never comes
        self._parent = (uri, run_id)
        _open_sweeps.append(self)
        atexit.register(self._end_parent, completed=False)
        objective.warn_if_leaking(metric)  # once for the sweep: its jobs do not warn
        if earlier is not None:
            log.info("sweep parent run %s continues: finished jobs are kept, stopped ones resume from their "
                     "checkpoints, the others run", run_id)
        log.info("sweep parent run %s in experiment %r at %s", run_id, config.tracking.experiment, redact(uri))
        return SweepContext(sweep_id, experiment_id, run_id)

    def _earlier_parent(self, config, overrides_tag):
        """The SweepContext of this sweep folder's earlier start with the same overrides, or None.

        A sweep whose process still runs is never continued: this process holds the folder
        (runner/output_folders.py), so that sweep ended; on a file system without locks, its parent
        run's owner tags say whether it did.
        """
        try:
            context = _read_context(config.hydra)
        except SweepError:
            return None
        client = mlflow_client()
        try:
            parent = client.get_run(config.tracking.uri, context.parent_run_id)
        except client.MlflowException:  # another store: the folder's sweep is not there
            return None
        if parent.info.status == "RUNNING" and run_owner.owner_gone(parent.data.tags) is False:
            raise ConfigError(f"hydra.sweep.dir={config.hydra.sweep.dir} is the folder of sweep {parent.info.run_id}, "
                              f"still running ({run_owner.describe_owner(parent.data.tags)}): a folder holds one "
                              "sweep at a time")
        same = parent.data.tags.get(record.OVERRIDES_TAG) == overrides_tag
        return context if same and parent.info.experiment_id == context.experiment_id else None

    def on_job_end(self, config, job_return, **kwargs):
        """In the job's process: a job whose config was rejected has no run; note it on the parent."""
        error = job_error(job_return)
        if config.hydra.mode != RunMode.MULTIRUN or job_return.status != JobStatus.FAILED \
                or not isinstance(error, ConfigError):
            return
        set_run_tags = mlflow_client().set_run_tags
        tag = f"{record.REJECTED_TAG_PREFIX}{config.hydra.job.num}"
        set_run_tags(config.tracking.uri, _read_context(config.hydra).parent_run_id,
                     {tag: f"{config.hydra.job.override_dirname}: {error}"})

    def on_multirun_end(self, config, **kwargs):
        self._end_parent(completed=True)

    def _end_parent(self, completed, error=None):
        """End the parent run once: FINISHED if the sweep completed and every job's run finished.

        First every job is accounted for (settle_children, jobs_not_run). `error` is what stopped
        the sweep, if anything did (a launcher whose worker died says how). Returns one line per
        job lost or never run.
        """
        if self._parent is None:
            return []
        uri, run_id = self._parent
        self._parent = None
        _open_sweeps.remove(self)
        close_run, get_run, set_run_tags = (mlflow_client().close_run, mlflow_client().get_run,
                                            mlflow_client().set_run_tags)

        parent = get_run(uri, run_id)
        launcher_said = launcher_report(error)
        children, lost = settle_children(uri, ended_children(uri, parent), completed, launcher_said)
        rejected = [k for k in parent.data.tags if k.startswith(record.REJECTED_TAG_PREFIX)]
        not_run = jobs_not_run(self._planned, children, rejected, self._unnamed)
        if not_run:
            set_run_tags(uri, run_id, {f"{record.NOT_RUN_TAG_PREFIX}{num}": name for num, name in not_run})
        finished = [c for c in children if c.info.status == "FINISHED"]
        metrics = {
            record.CHILDREN_FINISHED_METRIC: len(finished),
            record.CHILDREN_FAILED_METRIC: len(children) - len(finished),
            record.JOBS_REJECTED_METRIC: len(rejected),
            record.JOBS_NOT_RUN_METRIC: len(not_run),
        }
        pruned = {c.info.run_id for c in finished if record.PRUNED_AT_TAG in c.data.tags}  # not for the best
        if pruned or parent.data.tags.get(record.SWEEPER_TAG) == PRUNING_SWEEPER:
            metrics[record.TRIALS_PRUNED_METRIC] = len(pruned)
        errors = [c.data.metrics.get(record.final_metric(record.ERROR_METRIC), math.nan) for c in finished
                  if c.info.run_id not in pruned]
        errors = [e for e in errors if math.isfinite(e)]
        if errors:
            metrics[record.BEST_ERROR_METRIC] = min(errors)
        agreed = {c.data.tags.get(record.OBJECTIVE_TAG) for c in children} - {None}
        if len(agreed) == 1 and agreed != {parent.data.tags.get(record.OBJECTIVE_TAG)}:
            # every job optimised one metric the sweep's config did not name (a swept dataset.val_fraction)
            set_run_tags(uri, run_id, {record.OBJECTIVE_TAG: agreed.pop()})
        if not completed and (_interrupted or (not lost and any(c.info.status == "KILLED" for c in children))):
            status = "KILLED"  # Ctrl-C or SIGTERM: the jobs that were running are KILLED
        elif completed and finished and len(finished) == len(children) and not rejected and not not_run:
            status = "FINISHED"
        else:
            status = "FAILED"
        close_run(uri, run_id, status, metrics)
        log.info("sweep parent run %s %s: %d children finished, %d failed, %d jobs rejected, %d not run", run_id,
                 status, len(finished), len(children) - len(finished), len(rejected), len(not_run))
        lines = [f"job {run.info.run_name}: lost: {reason}" for run, reason in lost]
        if not _interrupted:  # stopped by its cluster (scancel, a time limit), not by the user
            lost_ids, error_tag = {run.info.run_id for run, _ in lost}, mlflow_client().ERROR_TAG
            lines += [f"job {run.info.run_name}: FAILED: {run.data.tags[error_tag].strip().splitlines()[0]}"
                      for run in children if run.info.status == "FAILED" and run.info.run_id not in lost_ids
                      and run.data.tags.get(error_tag, "").strip()]
            lines += [stopped_child(run, launcher_said) for run in children if run.info.status == "KILLED"]
        lines += [f"job #{num} ({name}): never ran" for num, name in not_run]
        if self.compare:
            try:
                compare_sweep(uri, get_run(uri, run_id), children=children)
            except Exception as failure:  # the sweep is recorded; `nn-compare` can try again
                log.warning("could not compare the sweep: %s: %s", type(failure).__name__, failure)
        return lines


def ended_children(uri, parent):
    """The children of the parent run `parent`, oldest first, with what the sweep's end reads of them: its
    accounting's tags, the swept params, every latest metric value (on a SQLite store only those: 10,000 children's
    every tag and param are 650,000 rows; sweep_store.open_sweep_store)."""
    tags = [*CHILD_TAGS, record.OBJECTIVE_TAG, record.HYDRA_OUTPUT_DIR_TAG, mlflow_client().ERROR_TAG]
    store = open_sweep_store(uri)
    try:
        return store.child_runs(parent, tags=tags, params=json.loads(parent.data.tags.get(record.SWEPT_KEYS_TAG,
                                                                                           "[]")))
    finally:
        store.close()


def stopped_child(run, launcher_said=None):
    """One line on a child its process ended KILLED (it took SIGTERM or SIGINT), and where it can resume from."""
    said = f" (the launcher reported {launcher_said})" if launcher_said else ""
    folder = run.data.tags.get(record.HYDRA_OUTPUT_DIR_TAG)
    try:
        meta = checkpoint.read_meta(folder) if folder else None
    except (OSError, ValueError):  # a folder this machine cannot read: the line says less
        meta = None
    if meta is None or meta.get("run_id") != run.info.run_id or meta.get("status") != checkpoint.RUNNING:
        return f"job {run.info.run_name}: KILLED{said}"
    return (f"job {run.info.run_name}: KILLED{said}; its checkpoint at step {meta['step']} is kept in {folder}: "
            "the same sweep into the same folder resumes it")


def end_after_error(error):
    """The sweep of this process stopped on `error` (a job's, or a launcher's whose worker died): end its
    parent run accounting for every job. Returns one line per job lost or never run; None outside a sweep."""
    if not _open_sweeps:
        return None
    return [line for sweep in list(_open_sweeps) for line in sweep._end_parent(completed=False, error=error)]


def settle_children(uri, children, completed, launcher_said=None):
    """The children with every RUNNING one settled, and [(run, reason)] for those whose process died.

    A RUNNING child whose process still lives on this host gets SETTLE_SECONDS to end its run
    (after Ctrl-C it marks it KILLED itself). One whose process is gone, or, once every job has
    returned (`completed`), one that no process here can still end, is ended FAILED with an
    `error` tag saying its process ended without closing the run.
    """
    fail_run, get_run = mlflow_client().fail_run, mlflow_client().get_run

    deadline = time.monotonic() + SETTLE_SECONDS
    settled, lost = [], []
    for child in children:
        while child.info.status == "RUNNING" and run_owner.owner_gone(child.data.tags) is False \
                and time.monotonic() < deadline:
            time.sleep(0.2)
            child = get_run(uri, child.info.run_id)
        gone = run_owner.owner_gone(child.data.tags)
        if child.info.status == "RUNNING" and (gone or (completed and gone is None)):
            reason = run_owner.lost_reason(child.data.tags)
            if launcher_said:
                reason += f"; the launcher reported {launcher_said}"
            fail_run(uri, child.info.run_id, reason)
            lost.append((child, reason))
            child = get_run(uri, child.info.run_id)
        settled.append(child)
    return settled, lost


def jobs_not_run(planned, children, rejected_tags, unnamed=()):
    """[(job number, its name)] of the `planned` jobs (planned_jobs) that neither have a child run nor were
    rejected; [] when the plan is not known. The name is the job's overrides, as Hydra's override_dirname
    joins them, without the `unnamed` keys."""
    if planned is None:
        return []
    ran = Counter(tuple(sorted(json.loads(c.data.tags.get(record.OVERRIDES_TAG, "[]")))) for c in children)
    rejected = {int(tag[len(record.REJECTED_TAG_PREFIX):]) for tag in rejected_tags}
    missing, redacted = [], {}  # the jobs of a big sweep share most of their overrides: each redacted once
    for num, overrides in enumerate(planned):
        key = tuple(sorted(redacted.get(o) or redacted.setdefault(o, redact_overrides([o])[0]) for o in overrides))
        if num in rejected:
            continue
        if ran[key]:
            ran[key] -= 1
        else:
            missing.append((num, ",".join(sorted(o for o in key if o.split("=", 1)[0] not in unnamed))))
    return missing

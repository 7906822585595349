"""One MLflow parent run per Hydra sweep (`nn-run -m`), with one child run per job.

`SweepTracking` is a Hydra callback (registered under `hydra.callbacks` in conf/config.yaml).
In the process that starts the sweep it prepares the store (tables, experiment) before any job
starts, opens the parent run and writes `SWEEP_FILE` into the sweep folder; each job, in whatever
process or machine the launcher gives it, reads that file to log as a child of the parent in the
same experiment. When the sweep is over (or its process exits after a failure), the parent is
ended FINISHED if every job's run finished, KILLED after Ctrl-C, else FAILED, with the counts as
metrics.
"""

import atexit
import json
import logging
import math
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import OmegaConf

from runner import record
from runner.config import ConfigError

log = logging.getLogger(__name__)

SWEEP_FILE = "mlflow_sweep.json"  # in hydra.sweep.dir: how a sweep's jobs find their parent run


_interrupted = []  # non-empty once nn-run was interrupted (Ctrl-C, SIGTERM): the parent then ends KILLED


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


def swept_values(config):
    """{key: values} for every config key a sweep varies, from `hydra.sweeper.params` and the command line.

    The values are the sweep's text (`0.1,1,10`, `interval(0.1, 1)`); a command-line override of a
    key that `hydra.sweeper.params` also sweeps wins, as in Hydra's sweepers.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    candidates = [f"{key}={value}" for key, value in params.items()]
    candidates += list(config.hydra.overrides.task)
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
        raise SweepError(f"{path} is missing: the sweep callback runner.sweep.SweepTracking must be "
                         "registered under hydra.callbacks (conf/config.yaml)") from None


def _check_launcher(launcher_cfg):
    """Construct the sweep's launcher once: a setting it rejects stops the sweep before the parent run exists.

    (Hydra constructs the launcher only after this callback has opened the parent run.)
    """
    from hydra.utils import instantiate

    try:
        instantiate(launcher_cfg)
    except Exception as error:  # noqa: BLE001  Hydra wraps the launcher's own error
        raise ConfigError(str(error.__cause__ or error)) from None


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
            print(f"nn-run: the sweep cannot start: {error}", file=sys.stderr)
            sys.exit(2)

    def _open_parent(self, config):
        from runner.job import redact_overrides
        from runner.provenance import provenance_tags
        from runner.tracking_uri import check_server, redact

        check_server(config.tracking.uri)  # in seconds, before MLflow's import and its minutes of retries
        _check_launcher(config.hydra.launcher)
        from runner.tracking import open_run

        swept = swept_values(config)
        for key, values in swept.items():
            if key.startswith("tracking."):
                raise ConfigError(f"{key}={values} is not allowed: one sweep logs to one store and one experiment")
        sweep_id = uuid.uuid4().hex
        tags = {
            **provenance_tags(),
            record.SWEEP_ID_TAG: sweep_id,
            record.SWEPT_KEYS_TAG: json.dumps(list(swept)),
            record.OVERRIDES_TAG: json.dumps(redact_overrides(config.hydra.overrides.task)),
            record.SWEEP_DIR_TAG: str(_sweep_file(config.hydra).parent.resolve()),
            record.LAUNCHER_TAG: OmegaConf.select(config, "hydra.runtime.choices.hydra/launcher"),
            record.SWEEPER_TAG: OmegaConf.select(config, "hydra.runtime.choices.hydra/sweeper"),
        }
        uri = config.tracking.uri
        experiment_id, run_id = open_run(uri, config.tracking.experiment, sweep_name(config, list(swept)), tags)
        self._parent = (uri, run_id)
        # when a job failed, Hydra's sweepers raise after the batch and on_multirun_end never comes
        atexit.register(self._end_parent, completed=False)
        log.info("sweep parent run %s in experiment %r at %s", run_id, config.tracking.experiment, redact(uri))
        return SweepContext(sweep_id, experiment_id, run_id)

    def on_job_end(self, config, job_return, **kwargs):
        """In the job's process: a job whose config was rejected has no run; note it on the parent."""
        error = getattr(job_return, "_return_value", None)  # job_return.return_value would raise it
        if config.hydra.mode != RunMode.MULTIRUN or job_return.status != JobStatus.FAILED \
                or not isinstance(error, ConfigError):
            return
        from runner.tracking import set_run_tags

        tag = f"{record.REJECTED_TAG_PREFIX}{config.hydra.job.num}"
        set_run_tags(config.tracking.uri, _read_context(config.hydra).parent_run_id,
                     {tag: f"{config.hydra.job.override_dirname}: {error}"})

    def on_multirun_end(self, config, **kwargs):
        self._end_parent(completed=True)

    def _end_parent(self, completed):
        """End the parent run once: FINISHED if the sweep completed and every job's run finished."""
        if self._parent is None:
            return
        uri, run_id = self._parent
        self._parent = None
        from runner.tracking import child_runs, close_run, get_run

        parent = get_run(uri, run_id)
        children = child_runs(uri, parent)
        finished = [c for c in children if c.info.status == "FINISHED"]
        rejected = [k for k in parent.data.tags if k.startswith(record.REJECTED_TAG_PREFIX)]
        metrics = {
            record.CHILDREN_FINISHED_METRIC: len(finished),
            record.CHILDREN_FAILED_METRIC: len(children) - len(finished),
            record.JOBS_REJECTED_METRIC: len(rejected),
        }
        errors = [c.data.metrics.get(record.final_metric(record.ERROR_METRIC), math.nan) for c in finished]
        errors = [e for e in errors if math.isfinite(e)]
        if errors:
            metrics[record.BEST_ERROR_METRIC] = min(errors)
        if not completed and (_interrupted or any(c.info.status == "KILLED" for c in children)):
            status = "KILLED"  # Ctrl-C or SIGTERM: the jobs that were running are KILLED
        elif completed and finished and len(finished) == len(children) and not rejected:
            status = "FINISHED"
        else:
            status = "FAILED"
        close_run(uri, run_id, status, metrics)
        log.info("sweep parent run %s %s: %d children finished, %d failed, %d jobs rejected", run_id, status,
                 len(finished), len(children) - len(finished), len(rejected))
        if self.compare:
            from runner.compare import compare_sweep

            try:
                compare_sweep(uri, get_run(uri, run_id), children=children)
            except Exception as error:  # the sweep is recorded; `nn-compare` can try again
                log.warning("could not compare the sweep: %s: %s", type(error).__name__, error)

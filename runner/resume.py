"""`nn-run resume RUN_ID`: continue a stopped run from its checkpoint, as the same MLflow run.

The run's Hydra output folder (its `hydra_output_dir` tag) holds the checkpoint; the run's own
overrides compose its config again, which must be the config the checkpoint was made with, and a
data file it read must still have the recorded sha256. Then nn-run runs in that folder
(`hydra.run.dir`), where runner/job.py finds the checkpoint and continues the run, logging to the
store it was found in (the `--tracking-uri` given, from any folder: a recorded relative
`tracking.uri` meant the folder the run was started in). Each refusal is one line, and nothing
is created.
"""

import json
import os
import re

from hydra import compose, initialize_config_dir

from runner import checkpoint
from runner.config import CONFIG_DIR, PRIMARY_CONFIG, tracking_defaults
from runner.rerun import RerunError, check_dataset_file
from runner.tracking import record

TRACKING_URI_KEY = "tracking.uri"


class ResumeError(ValueError):
    """A run that cannot be resumed; the message is the one line the user sees."""


def resume_arguments(run_id, uri=None):
    """The nn-run command-line overrides that continue run `run_id` in its own folder."""
    # stored_run imports MLflow (~1.5 s): only once there is a run to look up
    from runner.tracking import stored_run

    uri = uri or tracking_defaults()[0]
    run = stored_run.get_run(uri, run_id)
    if run.info.status == "FINISHED":
        raise ResumeError(f"run {run_id} finished: there is nothing to resume")
    folder = run.data.tags.get(record.HYDRA_OUTPUT_DIR_TAG)
    meta = checkpoint.read_meta(folder) if folder and os.path.isdir(folder) else None
    if meta is None or meta.get("run_id") != run_id or meta.get("status") != checkpoint.RUNNING:
        raise ResumeError(f"run {run_id} has no checkpoint to resume from (looked in {folder})")
    recorded = json.loads(run.data.tags.get(record.OVERRIDES_TAG, "[]"))
    overrides = [o for o in recorded if o.partition("=")[0].lstrip("+~") != TRACKING_URI_KEY]
    overrides.append(f"{TRACKING_URI_KEY}={override_value(uri)}")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name=PRIMARY_CONFIG, overrides=overrides)
    if checkpoint.config_sha256(cfg) != meta["config_sha256"]:
        raise ResumeError(f"the config of run {run_id} has changed since its checkpoint (the configs in "
                          f"{CONFIG_DIR} compose to another config for its overrides): it cannot be resumed")
    expected = run.data.tags.get(record.DATASET_SHA256_TAG)
    if expected and cfg.dataset.get("path"):
        try:
            check_dataset_file(cfg.dataset.path, expected, run_id)
        except RerunError as error:
            raise ResumeError(f"{error}: the run cannot be resumed") from None
    return [*overrides, f"hydra.run.dir={override_value(folder)}"]


def override_value(text):
    """`text` as the value of a Hydra command-line override: quoted when Hydra's grammar would read it otherwise."""
    if re.fullmatch(r"[\w./:@%+-]+", text) and not text.startswith(("+", "-")):
        return text
    # inside quotes, Hydra reads a backslash as an escape only before a quote or at the end
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m[1] * 2 + ("\\" + m[2] if m[2] else ""), text) + "'"

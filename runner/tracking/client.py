"""MLflow bookkeeping for one run: create it, log in batches, end it with the right status.

Knows nothing of the network: it logs params, metric points, tags and a folder of files.
"""

import datetime
import functools
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # opt in by setting it to false
# Quiet by MLflow's own settings, set before it is imported (a user's own values win): warnings and errors
# still show; no INFO lines ("Creating initial MLflow database tables", "Validating input example") and no
# tqdm bars over artifact transfers between a run's progress lines
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
# nor, on a tracking server, its "🏃 View run ... at: URL" and "🧪 View experiment at: URL" lines at each run's end:
# nn-run's own last lines say where the run is, as on a local store
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

import mlflow  # noqa: E402  (after the telemetry default)
import mlflow.pyfunc  # noqa: E402
from mlflow.data.code_dataset_source import CodeDatasetSource  # noqa: E402
from mlflow.data.sources import LocalArtifactDatasetSource  # noqa: E402
from mlflow.entities import Dataset as DatasetEntity  # noqa: E402
from mlflow.entities import (  # noqa: E402
    DatasetInput,
    InputTag,
    LoggedModelOutput,
    LoggedModelStatus,
    Metric,
    Param,
    RunStatus,
    RunTag,
)
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.models import Model, infer_signature  # noqa: E402
from mlflow.utils.mlflow_tags import (  # noqa: E402
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_BRANCH,
    MLFLOW_GIT_COMMIT,
    MLFLOW_GIT_REPO_URL,
    MLFLOW_PARENT_RUN_ID,
)
from mlflow.environment_variables import MLFLOW_RUN_CONTEXT  # noqa: E402

from runner.tracking import mlflow_private, run_owner  # noqa: E402
from runner.tracking.store_lock import StoreError, sqlite_path, store_lock  # noqa: E402
from runner.tracking.uri import ServerRefused, is_server, redact, refused_message  # noqa: E402
from runner.tracking.ui import UI_HOST, UI_PORT, mlflow_executable, runs_page, ui_command  # noqa: E402,F401

# MLflow's documented limits for one log_batch call and for a param
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
MAX_TAGS_PER_BATCH = 100
MAX_ENTRIES_PER_BATCH = 1000  # metrics + params + tags in one call
MAX_PARAM_KEY = 250
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 5000
MAX_DATASET_DIGEST = 36
FLUSH_SECONDS = 10.0  # a long run shows its curve in the UI while it trains
PARENT_RUN_TAG = MLFLOW_PARENT_RUN_ID  # MLflow's own tag: the UI nests a run under its parent
GIT_COMMIT_TAG = "git_commit"  # provenance's record of the code's commit, shown by the UI as MLflow's own tag too
ERROR_TAG = "error"  # why a run ended FAILED
# MLflow's experiment tag the UI picks an experiment's layout by (MLflow has no Python name for it; the
# value is its UI's ExperimentKind.CUSTOM_MODEL_DEVELOPMENT, "model training", read in MLflow 3.17's UI bundle)
EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT = "mlflow.experimentKind", "custom_model_development"
# MLflow's context tags that name the code's git commit: nn-runner's own record of it (GIT_COMMIT_TAG) is
# what the UI gets, as MLflow's would describe the script that started the process (a launcher's worker)
MLFLOW_GIT_TAGS = (MLFLOW_GIT_COMMIT, MLFLOW_GIT_BRANCH, MLFLOW_GIT_REPO_URL)


def fit_param(value):
    """`value`, or its start and how long it was when MLflow would refuse it (longer than MAX_PARAM_VALUE)."""
    if len(value) <= MAX_PARAM_VALUE:
        return value
    end = f"... [cut: {len(value)} characters]"
    return value[:MAX_PARAM_VALUE - len(end)] + end


def client_for(uri):
    """An MlflowClient on `uri`. Constructing the first one in a process opens the store, which creates or
    migrates a new SQLite store's tables: that happens under the store's lock (runner/tracking/store_lock.py).

    Raises StoreError with one line when MLflow cannot open a SQLite store (one left half-migrated
    by processes that created it at the same moment, before this lock existed).
    """
    with store_lock(uri):
        try:
            return mlflow.MlflowClient(tracking_uri=uri)
        except Exception as error:  # noqa: BLE001  SQLAlchemy's, Alembic's or MLflow's, by what broke
            if sqlite_path(uri) is None:
                raise
            raise StoreError(broken_store_message(uri, error)) from None


def broken_store_message(uri, error):
    """One line on a SQLite store MLflow cannot open, and what to do."""
    path = sqlite_path(uri)
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if any(word in str(error) for word in ("alembic", "migration", "already exists")):
        return (f"tracking.uri={redact(uri)}: the store's tables are half-created or half-migrated, and MLflow "
                f"cannot open it ({reason}); move it aside (`mv {path} {path}.broken`) and run again, which "
                "makes a new store")
    return f"tracking.uri={redact(uri)}: MLflow cannot open the store ({reason})"


def ensure_experiment(client, name):
    """The id of experiment `name`, created if missing (marked a model-training experiment, which the UI opens in
    its training layout); a concurrent creator is not an error."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT})
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


@contextmanager
def refusals(uri, experiment, action):
    """A request that a tracking server refuses (HTTP 401 or 403: MLflow's basic-auth app) raises ServerRefused,
    one line naming the user, the experiment and what to do, instead of MLflow's exception."""
    try:
        yield
    except MlflowException as error:
        status = error.get_http_status_code()
        if not is_server(uri) or status not in (401, 403):
            raise
        raise ServerRefused(refused_message(uri, status, experiment, action)) from None


class TrackedRun:
    """An open MLflow run; metric points are buffered and written with log_batch."""

    def __init__(self, client, run, uri):
        self.client, self.uri = client, uri
        self.run_id = run.info.run_id
        self.experiment_id = run.info.experiment_id
        self._metrics = []
        self._params, self._tags = [], []  # deferred: written with the next flush
        self._top_step, self._top_points = None, []  # the highest step written so far and its points
        self._written_params = {}  # every param written so far
        self._last_flush = time.monotonic()

    def logged_points(self):
        """{(metric key, step)} of every point this run has in the store (a resumed run logs none twice)."""
        keys = self.client.get_run(self.run_id).data.metrics
        return {(key, point.step) for key in keys for point in self.client.get_metric_history(self.run_id, key)}

    def log_params(self, params, defer=False):
        """Log a {key: str} dict, MAX_PARAMS_PER_BATCH at a time; `defer` holds them for the next flush.

        A value longer than MLflow allows is cut, and says so at its end (see fit_param).
        """
        items = [Param(k, fit_param(v)) for k, v in params.items()]
        self._written_params.update((item.key, item.value) for item in items)
        if defer:
            self._params += items
            return
        for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[start:start + MAX_PARAMS_PER_BATCH], synchronous=True)

    @property
    def params(self):
        """{key: value} of every param logged to this run so far (deferred ones included)."""
        return dict(self._written_params)

    def link_to_model(self, model_id, step):
        """Link the metric points at `step` to the logged model `model_id` when `step` is the run's last step (as
        Model.log links them): buffered points are written with the link at the next flush, points already written
        are written again with it (the store keeps one row of each)."""
        steps = [point.step for point in self._metrics] + [s for s in (self._top_step,) if s is not None]
        if not steps or max(steps) != step:
            return

        def linked(m):
            return Metric(m.key, m.value, m.timestamp, m.step, run_id=self.run_id, model_id=model_id)

        again = [linked(m) for m in self._top_points] if self._top_step == step else []
        self._metrics = [linked(m) if m.step == step else m for m in self._metrics] + again

    def log_metric(self, key, step, value):
        """Buffer one metric point; written at the latest FLUSH_SECONDS later or by flush()."""
        self._metrics.append(Metric(key, value, int(time.time() * 1000), step))
        if len(self._metrics) >= MAX_METRICS_PER_BATCH or time.monotonic() - self._last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self):
        """Write the buffered metric points and the deferred params and tags, as few log_batch calls as MLflow allows."""
        while self._metrics or self._params or self._tags:
            params, self._params = self._params[:MAX_PARAMS_PER_BATCH], self._params[MAX_PARAMS_PER_BATCH:]
            tags, self._tags = self._tags[:MAX_TAGS_PER_BATCH], self._tags[MAX_TAGS_PER_BATCH:]
            room = MAX_ENTRIES_PER_BATCH - len(params) - len(tags)
            metrics, self._metrics = self._metrics[:room], self._metrics[room:]
            self.client.log_batch(self.run_id, metrics=metrics, params=params, tags=tags, synchronous=True)
            for point in metrics:  # only the top step's points are kept: a long run logs millions
                if self._top_step is None or point.step > self._top_step:
                    self._top_step, self._top_points = point.step, []
                if point.step == self._top_step:
                    self._top_points.append(point)
        self._last_flush = time.monotonic()

    def set_tags(self, tags, defer=False):
        """Set {key: value} tags now, or with the next flush when `defer`."""
        items = [RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items()]
        if defer:
            self._tags += items
            return
        self.client.log_batch(self.run_id, tags=items, synchronous=True)

    def log_datasets(self, name, source, splits):
        """Record data splits as dataset inputs of this run, in one call.

        `splits` maps a context (training, testing) to (features, targets, digest); `source` is a
        file's absolute path or the name of the code that made the data.
        """
        where = LocalArtifactDatasetSource(source) if os.path.isabs(source) else CodeDatasetSource({"loader": source})
        inputs = []
        for context, (features, targets, digest) in splits.items():
            dataset = mlflow.data.from_numpy(features, source=where, targets=targets, name=name,
                                             digest=digest[:MAX_DATASET_DIGEST])
            inputs.append(DatasetInput(DatasetEntity(**dataset.to_dict()), [InputTag(MLFLOW_DATASET_CONTEXT, context)]))
        try:
            self.client.log_inputs(self.run_id, inputs)
        except Exception as error:  # noqa: BLE001  (SQLAlchemy's or MLflow's wrapper, by store)
            # Parallel jobs logging the same new dataset race to insert its one row (seen with joblib
            # on a fresh store); the loser's transaction was rolled back, and its retry finds the row.
            if not any(clash in str(error) for clash in ("UNIQUE constraint failed", "duplicate key")):
                raise
            self.client.log_inputs(self.run_id, inputs)

    def log_artifacts(self, local_dir):
        """Upload every file under local_dir, keeping relative paths."""
        self.client.log_artifacts(self.run_id, local_dir)

    def log_code_model(self, name, code_file, *, artifacts, code_paths, model_config, input_example,
                       output_example, pip_requirements, step, copies=None):
        """Log a pyfunc model in MLflow's "models from code" form as runs:/RUN_ID/NAME; returns that URI.

        `code_file` calls mlflow.models.set_model; `artifacts` maps names to local files the model
        loads; the signature is inferred from the example input and output. The metric points at
        `step` are linked to the model. With `copies` (a ModelCopies shared by runs whose models
        differ only in their artifact files), the model is saved and checked once and this run logs
        a copy of it with its own files, its buffered params, points and tags written with the links.
        """
        if copies is not None:
            copies.log(self, name, code_file, artifacts=artifacts, code_paths=code_paths, model_config=model_config,
                       input_example=input_example, output_example=output_example,
                       pip_requirements=pip_requirements, step=step)
            return f"runs:/{self.run_id}/{name}"
        self.flush()
        # Model.log finds the store and the experiment of the model through MLflow's global state
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_experiment(experiment_id=self.experiment_id)
        Model.log(artifact_path=None, name=name, flavor=mlflow.pyfunc, run_id=self.run_id, step=step,
                  python_model=str(code_file), artifacts=artifacts, code_paths=code_paths, model_config=model_config,
                  signature=infer_signature(input_example, output_example), input_example=input_example,
                  pip_requirements=pip_requirements)
        return f"runs:/{self.run_id}/{name}"


class ModelCopies:
    """One pyfunc model logged to many runs: saved and checked once, then logged with each run's own files.

    For the runs of a batched sweep, whose models differ only in their artifact files (the
    weights). MLflow's Model.log saves the model, copies its code, resolves its context tags and
    loads it to check the serving input on every call (~60-80 ms a run); here that is done once
    (MLflow's own save_model and serving-input check), and each run gets what Model.log records
    for it: a LoggedModel with the run's params and the context tags, the run's output at `step`
    with that step's metric points linked, the saved files plus its own weights and MLmodel (ids,
    time, artifact sources), READY at the end (FAILED if logging fails). tests/test_model_copies.py
    checks the record against Model.log's.
    """

    def __init__(self):
        self._folder = None  # a temporary folder: the saved model's files that every copy shares
        self._mlmodel = self._context_tags = None

    def _save(self, code_file, artifacts, code_paths, model_config, input_example, output_example,
              pip_requirements):
        self._folder = tempfile.TemporaryDirectory(prefix="nn-runner-model-")
        path = self._folder.name
        mlflow.pyfunc.save_model(path, python_model=str(code_file), artifacts=artifacts, code_paths=code_paths,
                                 model_config=model_config, mlflow_model=Model(),
                                 signature=infer_signature(input_example, output_example),
                                 input_example=input_example, pip_requirements=pip_requirements)
        for pycache in Path(path).rglob("__pycache__"):  # as Model.log: loading the model may leave some
            shutil.rmtree(pycache, ignore_errors=True)
        self._mlmodel = Model.load(path)
        serving_input = self._mlmodel.get_serving_input(path)
        if serving_input:
            try:
                mlflow_private.validate_serving_input(path, serving_input)
            except Exception as error:  # noqa: BLE001  Model.log only warns too
                logging.getLogger(__name__).warning("the model's serving input example fails: %s", error)
        for source in self._mlmodel.flavors["python_function"]["artifacts"].values():
            os.remove(os.path.join(path, source["path"]))  # each run brings its own weights
        os.remove(os.path.join(path, "MLmodel"))  # and its own MLmodel
        self._context_tags = mlflow_private.context_tags()

    @property
    def saved(self):
        """Whether the model is saved already (the arguments of log that make it are then not used)."""
        return self._folder is not None

    def close(self):
        """Remove the saved model's folder."""
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def log(self, run, name, code_file, *, artifacts, code_paths, model_config, input_example, output_example,
            pip_requirements, step):
        """Log the model, with `artifacts` (name -> local file) as its files, to the open TrackedRun `run`."""

        if self._folder is None:
            self._save(code_file, artifacts, code_paths, model_config, input_example, output_example,
                       pip_requirements)
        client = run.client
        model = client.create_logged_model(run.experiment_id, name=name, source_run_id=run.run_id,
                                           tags=self._context_tags, params=run.params)
        try:
            client.log_outputs(run.run_id, [LoggedModelOutput(model.model_id, step=step)])
            run.link_to_model(model.model_id, step)
            # as Model.log logs the model config as params; a key the run has already is not logged again (the
            # run's own `model.*` params are the config: model_export), so each key is one param
            run.log_params({key: str(value) for key, value in model_config.items() if key not in run.params},
                           defer=True)
            self._log_files(client, run, model, artifacts)
            run.flush()  # params, metric points (the model's links among them) and tags: one log_batch
        except BaseException:
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
            raise
        client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)

    def _log_files(self, client, run, model, artifacts):
        """The saved model's files with this run's weights (`artifacts`) and MLmodel, in one log_model_artifacts call:
        the run's own files are put into the saved model's folder for it, and taken out again."""
        folder, own = self._folder.name, []
        mlmodel = Model.from_dict(self._mlmodel.to_dict())
        sources = mlmodel.flavors["python_function"]["artifacts"]
        try:
            for key, local in artifacts.items():
                own.append(os.path.join(folder, sources[key]["path"]))
                os.makedirs(os.path.dirname(own[-1]), exist_ok=True)
                shutil.copyfile(local, own[-1])
                sources[key]["uri"] = local
            mlmodel.artifact_path, mlmodel.run_id = model.artifact_location, run.run_id
            mlmodel.model_uuid = mlmodel.model_id = model.model_id
            mlmodel.utc_time_created = str(datetime.datetime.utcnow())
            own.append(os.path.join(folder, "MLmodel"))
            mlmodel.save(own[-1])
            client.log_model_artifacts(model.model_id, folder)
        finally:
            for path in own:
                if os.path.exists(path):
                    os.remove(path)


def forget_inherited_connections():
    """In a process forked from one that used MLflow: open new database connections instead of sharing the parent's.

    MLflow keeps one SQLAlchemy engine per database URI for the life of the process; SQLAlchemy's
    rule after a fork is Engine.dispose(close=False), which leaves the parent's connections to it.
    (MLflow's HTTP sessions are already per process.)
    """
    for engine in mlflow_private.sqlalchemy_engines():
        engine.dispose(close=False)


@functools.cache
def context_tags():
    """MLflow's context tags for the runs this process creates, resolved once: the user, the source's name and
    type (as mlflow.start_run gives them), less MLflow's git tags (see MLFLOW_GIT_TAGS).

    A sweep's jobs get those of the command that started the sweep (share_context_tags)."""
    return {key: value for key, value in mlflow_private.context_tags().items() if key not in MLFLOW_GIT_TAGS}


def share_context_tags():
    """Let the processes this one starts give their runs this process's context tags: a sweep's jobs in a joblib
    worker or on a Slurm node name the `nn-run -m` command as their source, not the worker's script.

    Through MLflow's own MLFLOW_RUN_CONTEXT variable (JSON tags that MLflow's context resolution applies last)."""
    os.environ[MLFLOW_RUN_CONTEXT.name] = json.dumps(context_tags())


def with_ui_tags(tags):
    """`tags` plus MLflow's own tags the UI shows for them: the context tags (Created by, Source) and the source's
    git commit."""
    tags = {**context_tags(), **(tags or {})}
    if tags.get(GIT_COMMIT_TAG, "unknown") != "unknown":
        tags[MLFLOW_GIT_COMMIT] = tags[GIT_COMMIT_TAG]
    return tags


@contextmanager
def tracked_run(uri, experiment, run_name, tags=None, parent_run_id=None, experiment_id=None, resume_run_id=None):
    """Open a run; on exit mark it FINISHED, FAILED (error kept as a tag) or KILLED (Ctrl-C, SIGTERM, a
    preemption that ends the process to requeue it).

    `resume_run_id` opens that existing run again (RUNNING) instead of creating one.
    `experiment_id`, when given, is used as is (a sweep's jobs get it from the sweep's parent
    process, which created the experiment); otherwise experiment `experiment` is found or created.
    Metric points buffered so far are written in every case.
    """
    tags = with_ui_tags(tags)
    if parent_run_id:
        tags[PARENT_RUN_TAG] = parent_run_id
    with refusals(uri, experiment, "resume a run" if resume_run_id else "create a run"):
        client = client_for(uri)
        if resume_run_id:
            owner = [RunTag(k, v) for k, v in tags.items() if k in run_owner.OWNER_TAGS]  # now this process's run
            client.log_batch(resume_run_id, tags=owner, synchronous=True)
            client.update_run(resume_run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            if ERROR_TAG in client.get_run(resume_run_id).data.tags:  # ended FAILED by a sweep whose job it was
                client.delete_tag(resume_run_id, ERROR_TAG)
            stored = client.get_run(resume_run_id)
            run = TrackedRun(client, stored, uri)
            missing = {key: value for key, value in context_tags().items() if key not in stored.data.tags}
            if missing:  # a run made by an nn-runner that did not set them
                run.set_tags(missing)
        else:
            if not experiment_id:
                with store_lock(uri):  # two first runs would each create the experiment
                    experiment_id = ensure_experiment(client, experiment)
            run = TrackedRun(client, client.create_run(experiment_id, run_name=run_name, tags=tags), uri)
    try:
        yield run
    except (KeyboardInterrupt, SystemExit):
        run.flush()
        client.set_terminated(run.run_id, RunStatus.to_string(RunStatus.KILLED))
        raise
    except BaseException as error:
        run.flush()
        run.set_tags({ERROR_TAG: f"{type(error).__name__}: {error}"})
        client.set_terminated(run.run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    run.flush()
    client.set_terminated(run.run_id, RunStatus.to_string(RunStatus.FINISHED))


def open_run(uri, experiment, run_name, tags):
    """Create the tables if the store is new, find or create `experiment`, start a run in it.

    For a run that outlives a `with` block (a sweep's parent): returns (experiment_id, run_id);
    end it with close_run.
    """
    with refusals(uri, experiment, "create a run"):
        client = client_for(uri)
        with store_lock(uri):
            experiment_id = ensure_experiment(client, experiment)
        run_id = client.create_run(experiment_id, run_name=run_name, tags=with_ui_tags(tags)).info.run_id
    share_context_tags()  # the sweep's jobs, wherever they run, carry the parent's
    return experiment_id, run_id


def reopen_run(uri, run_id, owner_tags):
    """Mark an ended run RUNNING again (a sweep continued into its own folder), owned by the process `owner_tags`
    name (run_owner.owner_tags)."""
    with refusals(uri, None, f"continue run {run_id}"):
        client = client_for(uri)
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in owner_tags.items()], synchronous=True)
        client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))


def close_run(uri, run_id, status, metrics):
    """Log {name: value} metrics (at step 0) to a run opened by open_run and end it with `status` ("FAILED")."""
    client = client_for(uri)
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()], synchronous=True)
    client.set_terminated(run_id, status)


def fail_run(uri, run_id, error):
    """End a run that its process left RUNNING: FAILED, with `error` as its error tag."""
    client = client_for(uri)
    client.set_tag(run_id, ERROR_TAG, error[:MAX_TAG_VALUE])
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))


def set_run_tags(uri, run_id, tags):
    """Set tags on any run, open or ended."""
    client_for(uri).log_batch(
        run_id, tags=[RunTag(k, str(v)[:MAX_TAG_VALUE]) for k, v in tags.items()], synchronous=True)


def get_run(uri, run_id):
    return client_for(uri).get_run(run_id)


def child_runs(uri, parent):
    """Every run whose parent is the run `parent` (an mlflow Run), oldest first.

    On a SQL store read with a few plain queries (mlflow_private.child_runs_bulk: search_runs took 28-38 s for
    10,000 children); on a tracking server, search_runs' pages.
    """
    client = client_for(uri)
    found = mlflow_private.child_runs_bulk(client, parent.info.experiment_id, parent.info.run_id, RUNS_PER_QUERY)
    if found is not None:
        return found
    runs, token = [], None
    while True:
        page = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent.info.run_id}'",
                                  order_by=["attributes.start_time ASC"], page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


def latest_run_with_tag(uri, experiment, tag, value=None):
    """The most recently started run of experiment `experiment` (a name) that carries `tag` (with this
    `value`, if given), or None."""
    client = client_for(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None or (value is not None and "'" in value):  # a quote cannot be written in the filter
        return None
    condition = "LIKE '%'" if value is None else f"= '{value}'"
    runs = client.search_runs([found.experiment_id], filter_string=f"tags.`{tag}` {condition}",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def metric_history(uri, run_id, key):
    """[(step, value)] of metric `key`, by step."""
    history = client_for(uri).get_metric_history(run_id, key)
    return sorted((m.step, m.value) for m in history)


RUNS_PER_QUERY = 500  # runs whose metric history one query fetches (SQLite takes up to 32,766 values in a query)


def metric_histories(uri, run_ids, key):
    """{run id: [(step, value)] of metric `key`, by step} for each of `run_ids` ([] for a run without a point).

    On a SQL store, in one query per RUNS_PER_QUERY runs (mlflow_private.metric_history_bulk); on a tracking
    server, one request per run, as metric_history.
    """
    client = client_for(uri)
    found = mlflow_private.metric_history_bulk(client, run_ids, key, RUNS_PER_QUERY)
    if found is None:
        return {run_id: metric_history(uri, run_id, key) for run_id in run_ids}
    return {run_id: sorted((m.step, m.value) for m in found.get(run_id, ())) for run_id in run_ids}


def log_artifact(uri, run_id, path):
    """Upload one local file to the run's artifact root."""
    client_for(uri).log_artifact(run_id, path)

"""The floor of a batched sweep's cost per job: what no launcher that keeps every child's full record and
Hydra's per-job semantics can go below. Used by batched_sweep.py; run alone it prints the parts.

Three parts, each the CPU time of this process (time.process_time) per job, its heap frozen (gc.freeze)
as the batched launcher's is before its jobs run:
- record: one child's record, read back from a store with public MlflowClient calls (the run's tags,
  params, metric points, dataset inputs and files; its LoggedModel with its tags, params, metric
  links, output step and files), written again into a new SQLite store with the fewest public
  MlflowClient calls (write_record), its files first written from memory into a temporary folder;
- training: runner.nn.stacked.train_stacked on a batch of seed networks, divided by their number;
- run_job: Hydra's run_job around a task function that does nothing, as a launcher calls it.
The floor per job is their sum over the cores a sweep may use.
Usage: python benchmarks/floor.py [--uri URI --parent RUN_ID] [--json] (without a store: runs a 4-job batched
sweep to have a child to copy)
"""

import argparse
import dataclasses
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric, Param  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME  # noqa: E402

from machine import print_machine  # noqa: E402  (this folder is on the path when the script runs)
from runner.data.datasets import load_dataset  # noqa: E402
from runner.nn.network import init_weights, layer_sizes  # noqa: E402
from runner.nn.stacked import train_stacked  # noqa: E402


@dataclass
class ChildRecord:
    """Everything a batched sweep's child run holds, read back from its store."""

    run_name: str
    tags: dict
    params: dict
    points: list  # [(key, value, timestamp, step)]
    inputs: list  # mlflow DatasetInput entities
    files: dict  # {relative path: bytes} of the run's artifacts
    model: dict  # name, tags, params, step, links {(key, step)}, files; None for a run without a model


def files_under(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def read_child(uri, parent_run_id):
    """The record of the first child run under `parent_run_id` in store `uri` (public MlflowClient calls only)."""
    client = mlflow.MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    run = client.search_runs([parent.info.experiment_id], f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
                             max_results=1)[0]
    run_id = run.info.run_id
    points = [(m.key, m.value, m.timestamp, m.step) for key in run.data.metrics
              for m in client.get_metric_history(run_id, key)]
    with tempfile.TemporaryDirectory() as folder:
        files = files_under(client.download_artifacts(run_id, "", folder))
    model = None
    if run.outputs and run.outputs.model_outputs:
        (output,) = run.outputs.model_outputs
        logged = client.get_logged_model(output.model_id)
        with tempfile.TemporaryDirectory() as folder:
            model_files = files_under(mlflow.artifacts.download_artifacts(logged.artifact_location, dst_path=folder))
        model = {"name": logged.name, "tags": logged.tags, "params": logged.params, "step": output.step,
                 "links": {(m.key, m.step) for m in logged.metrics or []}, "files": model_files}
    return ChildRecord(run.info.run_name, run.data.tags, run.data.params, points, run.inputs.dataset_inputs, files,
                       model)


def write_files(folder, files):
    for path, content in files.items():
        target = Path(folder, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def write_record(client, experiment_id, child, with_model=True):
    """Write `child` (a ChildRecord) as a new run with the fewest public MlflowClient calls; returns the run id.

    create_run with every tag, log_inputs, create_logged_model with its tags and params, one
    log_batch of every param and metric point (the model's links among them), log_outputs,
    log_artifacts, log_model_artifacts, finalize_logged_model, set_terminated.
    """
    model = child.model if with_model else None
    with tempfile.TemporaryDirectory() as folder:
        write_files(f"{folder}/run", child.files)
        if model is not None:
            write_files(f"{folder}/model", model["files"])
        tags = {k: v for k, v in child.tags.items() if k != MLFLOW_RUN_NAME}
        run_id = client.create_run(experiment_id, run_name=child.run_name, tags=tags).info.run_id
        client.log_inputs(run_id, child.inputs)
        params = child.params if model is not None else {k: v for k, v in child.params.items() if "/" not in k}
        model_id = None
        if model is not None:
            model_id = client.create_logged_model(experiment_id, name=model["name"], source_run_id=run_id,
                                                  tags=model["tags"], params=model["params"]).model_id
        links = model["links"] if model is not None else set()
        metrics = [Metric(key, value, timestamp, step, run_id=run_id,
                          model_id=model_id if (key, step) in links else None)
                   for key, value, timestamp, step in child.points]
        client.log_batch(run_id, metrics=metrics, params=[Param(k, v) for k, v in params.items()], synchronous=True)
        if model is not None:
            client.log_outputs(run_id, [LoggedModelOutput(model_id, step=model["step"])])
        client.log_artifacts(run_id, f"{folder}/run")
        if model is not None:
            client.log_model_artifacts(model_id, f"{folder}/model")
            client.finalize_logged_model(model_id, LoggedModelStatus.READY)
        client.set_terminated(run_id)
    return run_id


def record_cpu(child, copies=32, with_model=True):
    """(median CPU seconds to write `child` once, write transactions per record) into a new SQLite store."""
    # SQLAlchemy is MLflow's own dependency; its events count the transactions that wrote
    import sqlalchemy.engine
    import sqlalchemy.event

    with tempfile.TemporaryDirectory() as folder:
        uri = f"sqlite:///{folder}/floor.db"
        client = mlflow.MlflowClient(uri)
        experiment_id = client.create_experiment("floor", artifact_location=f"file://{folder}/artifacts")
        write_record(client, experiment_id, child, with_model)  # warms up: the tables' first rows, the imports
        gc.freeze()  # as the batched launcher does before its jobs: the imports stay out of full collections
        writes = {"pending": False, "count": 0}

        def on_execute(conn, cursor, statement, *args):
            writes["pending"] |= statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE")

        def on_commit(conn):
            writes["count"] += writes["pending"]
            writes["pending"] = False

        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", on_execute)
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "commit", on_commit)
        try:
            seconds = []
            for _ in range(copies):
                start = time.process_time()
                write_record(client, experiment_id, child, with_model)
                seconds.append(time.process_time() - start)
        finally:
            sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", on_execute)
            sqlalchemy.event.remove(sqlalchemy.engine.Engine, "commit", on_commit)
        return statistics.median(seconds), writes["count"] / copies


def training_cpu(n, iterations):
    """CPU seconds per network of train_stacked on n seed networks (seeds 1..n), the seed experiment's settings."""
    data = load_dataset("seed")
    sizes = layer_sizes(data.X.shape[1], [4], data.y.shape[1])
    initials = [init_weights(sizes, np.random.RandomState(seed), "uniform") for seed in range(1, n + 1)]
    start = time.process_time()
    train_stacked(initials, data.X, data.y, lrs=[1.0] * n, iterations=iterations, log_every=10000)
    return (time.process_time() - start) / n


def run_job_cpu(jobs=64):
    """Median CPU seconds of Hydra's run_job (and the launcher's configure_log after it) around a no-op task."""
    # Hydra's internals as benchmarks/sweep_configs.py uses them: only this part of the floor needs them
    from hydra import initialize_config_dir
    from hydra._internal.callbacks import Callbacks
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobRuntime, configure_log, run_job
    from hydra.types import HydraContext, RunMode
    from omegaconf import open_dict

    from hydra_plugins.nn_runner_batched_launcher.derived_configs import DerivedConfigs
    from runner.config import CONFIG_DIR

    with tempfile.TemporaryDirectory() as folder, initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", ["hydra/launcher=batched", f"hydra.sweep.dir={folder}",
                                                      f"seed=range(0,{jobs})"], run_mode=RunMode.MULTIRUN)
        derived = DerivedConfigs(loader, loader.load_sweep_config)
        configs = [derived.load_sweep_config(master, [f"seed={seed}"]) for seed in range(jobs)]
        JobRuntime.instance().set("name", "app")
        HydraConfig.instance().set_config(master)
        context = HydraContext(config_loader=loader, callbacks=Callbacks())
        gc.freeze()  # as the batched launcher does before its jobs
        seconds = []
        for num, cfg in enumerate(configs):
            with open_dict(cfg):
                cfg.hydra.job.id = cfg.hydra.job.num = num
            start = time.process_time()
            run_job(hydra_context=context, config=cfg, task_function=lambda task_cfg: 0.0,
                    job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            configure_log(master.hydra.hydra_logging, master.hydra.verbose)
            seconds.append(time.process_time() - start)
        HydraConfig.instance().set_config(master)
        GlobalHydra.instance().clear()
        return statistics.median(seconds[1:])


@dataclass
class Floor:
    record: float  # CPU seconds of one child's record with its model
    record_no_model: float  # the same without the model
    writes: float  # write transactions of one record with its model
    writes_no_model: float
    training: float  # CPU seconds per network in a batch of `batch`
    run_job: float
    cores: int
    batch: int

    def per_job(self, with_model=True):
        """Seconds per job on `cores` cores: the parts' CPU time spread over them."""
        return ((self.record if with_model else self.record_no_model) + self.training + self.run_job) / self.cores

    def to_json(self):
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text):
        return cls(**json.loads(text))

    @classmethod
    def median(cls, floors):
        """Each part's median over `floors`."""
        return cls(**{f.name: f.type(statistics.median(getattr(one, f.name) for one in floors))
                      for f in dataclasses.fields(cls)})

    def lines(self):
        return [f"floor per job ({self.cores} cores): {1000 * self.per_job():.1f} ms "
                f"({1000 * self.per_job(False):.1f} ms without the model); CPU time per job:",
                f"  record with model  {1000 * self.record:6.1f} ms  ({self.writes:.0f} write transactions)",
                f"  record, no model   {1000 * self.record_no_model:6.1f} ms  ({self.writes_no_model:.0f} write "
                "transactions)",
                f"  training           {1000 * self.training:6.1f} ms  (train_stacked, {self.batch} networks)",
                f"  Hydra's run_job    {1000 * self.run_job:6.1f} ms  (no-op task)"]


def measure(uri, parent_run_id, iterations, batch=256, cores=None):
    """The Floor, its record copied from the first child of the sweep `parent_run_id` in `uri`."""
    child = read_child(uri, parent_run_id)
    record, writes = record_cpu(child)
    record_no_model, writes_no_model = record_cpu(child, with_model=False)
    cores = cores or min(2, len(os.sched_getaffinity(0)))
    return Floor(record, record_no_model, writes, writes_no_model, training_cpu(batch, iterations), run_job_cpu(),
                 cores, batch)


def latest_parent(uri):
    """The run id of the latest sweep's parent run in store `uri` (experiment nn-runner)."""
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("nn-runner")
    return client.search_runs([experiment.experiment_id], "tags.sweep_id LIKE '%'",
                              order_by=["attributes.start_time DESC"], max_results=1)[0].info.run_id


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", help="a store with a batched sweep (default: a 4-job sweep run now)")
    parser.add_argument("--parent", help="that sweep's parent run id (default: the latest sweep's)")
    parser.add_argument("--iterations", type=int, default=60000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--json", action="store_true", help="print the Floor as one line of JSON")
    args = parser.parse_args()
    if not args.json:  # batched_sweep.py reads the JSON line and prints the machine itself
        print_machine()
    with tempfile.TemporaryDirectory() as folder:
        uri = args.uri
        if uri is None:
            subprocess.run([sys.executable, "-m", "runner", "-m", "hydra/launcher=batched", "seed=range(1,5)",
                            f"train.iterations={args.iterations}"], cwd=folder, check=True, capture_output=True)
            uri = f"sqlite:///{folder}/mlflow.db"
        found = measure(uri, args.parent or latest_parent(uri), args.iterations, args.batch)
    print(found.to_json() if args.json else "\n".join(found.lines()))


if __name__ == "__main__":
    main()

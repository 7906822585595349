"""The names and files that make up a run's record, and the fingerprint of its weights."""

import csv
import hashlib
import json
import os

import numpy as np

ERROR_METRIC = "error"  # mean |y - prediction| on the training data
TEST_ERROR_METRIC = "test_error"  # the same on the held-out test split
TRAIN_ACCURACY_METRIC = "train_accuracy"  # fraction of training rows classified right (classification only)
TEST_ACCURACY_METRIC = "test_accuracy"  # the same on the test split
VAL_ERROR_METRIC = "val_error"  # mean |y - prediction| on the validation split (dataset.val_fraction)
VAL_ACCURACY_METRIC = "val_accuracy"  # fraction of validation rows classified right (classification only)
FINAL_PREFIX = "final_"  # final_error, final_test_error, ...: the scores of the final weights, logged once
WEIGHTS_HASH_TAG = "weights_sha256"
WEIGHTS_DIR = "weights"
PREDICTIONS_FILE = "predictions.csv"  # the final weights' outputs on the training data: what the model returns
LAST_OUTPUT_COLUMN = "last_iteration_output"  # predictions.csv: the last iteration's output, what the seed prints
TEST_PREDICTIONS_FILE = "test_predictions.csv"  # the final weights' outputs on the test split, when there is one
VAL_PREDICTIONS_FILE = "val_predictions.csv"  # the same on the validation split, when there is one
CONFIG_FILE = "config.yaml"
OVERRIDES_FILE = "overrides.yaml"
OVERRIDES_TAG = "overrides"  # the job's command-line overrides as a JSON list
DATASET_SHA256_TAG = "dataset_sha256"  # hex sha256 of the bytes of a dataset read from a file
GIT_DIFF_FILE = "git.diff"  # `git diff HEAD` of the code when the checkout was dirty
HYDRA_OUTPUT_DIR_TAG = "hydra_output_dir"  # the Hydra job's output folder, absolute
RESUMED_AT_TAG = "resumed_at"  # JSON list of the steps a run was resumed from (its checkpoints)
RERUN_OF_TAG = "rerun_of"  # on a reproduction: the run it reproduces
DERIVED_FROM_TAG = "derived_from"  # on a run made from another run's config with overrides
TRAINING_CONTEXT, TESTING_CONTEXT = "training", "testing"  # MLflow dataset-input contexts of the splits
VALIDATION_CONTEXT = "validation"
MODEL_NAME = "model"  # the logged MLflow model: runs:/RUN_ID/model


def model_weight_artifact(index):
    """Name of weight matrix `index` among the MLflow model's artifacts."""
    return f"layer_{index}"

# Pictures of a run (runner/plots.py), under plots/ so the UI's artifact tree groups them
PLOTS_DIR = "plots"
ERROR_CURVE_PLOT = f"{PLOTS_DIR}/error_curve.png"
DECISION_BOUNDARY_PLOT = f"{PLOTS_DIR}/decision_boundary.png"  # two-feature data sets only
CONFUSION_MATRIX_PLOT = f"{PLOTS_DIR}/confusion_matrix.png"  # classification only
CONFUSION_MATRIX_FILE = f"{PLOTS_DIR}/confusion_matrix.json"  # the counts the picture shows

# A sweep's parent run (runner/sweep/callback.py) and its comparison (runner/sweep/compare.py)
SWEEP_ID_TAG = "sweep_id"  # marks a sweep's parent run; the id is also in the sweep folder's mlflow_sweep.json
SWEPT_KEYS_TAG = "swept_keys"  # JSON list of the config keys the sweep varies
SWEEP_DIR_TAG = "sweep_dir"  # Hydra's output folder of the sweep
LAUNCHER_TAG = "launcher"  # Hydra's hydra/launcher choice: basic, joblib, submitit_local, submitit_slurm
SWEEPER_TAG = "sweeper"  # Hydra's hydra/sweeper choice: basic or nn_optuna (hydra_plugins/nn_runner_optuna_sweeper)
OBJECTIVE_TAG = "objective"  # on a run and a sweep's parent: the metric it optimises, a sweep ranks by (runner/objective.py)
TRIAL_NUMBER_TAG = "trial_number"  # on a search's child run: its Optuna trial's number
PRUNED_AT_TAG = "pruned_at_step"  # on a pruned trial's child run: the logged step its pruner stopped it at
TRIALS_PRUNED_METRIC = "trials_pruned"  # on a search's parent run: how many trials were pruned
REJECTED_TAG_PREFIX = "rejected_job."  # + Hydra job number: a job whose config was rejected, so it has no run
CHILDREN_FINISHED_METRIC = "children_finished"
CHILDREN_FAILED_METRIC = "children_failed"  # FAILED (a process that died included) or KILLED
JOBS_REJECTED_METRIC = "jobs_rejected"
NOT_RUN_TAG_PREFIX = "not_run_job."  # + Hydra job number: a job the sweep never started (its launcher failed first)
JOBS_NOT_RUN_METRIC = "jobs_not_run"
BEST_ERROR_METRIC = "best_error"  # lowest final error among the finished children
COMPARISON_FILE = "comparison.csv"  # a sweep ranked by final error; by another metric: comparison_METRIC.csv
COMPARISON_PLOT = "comparison.png"
# what a sweep can optimise and nn-compare rank by (errors lowest first, accuracies highest first)
RANKING_METRICS = (ERROR_METRIC, VAL_ERROR_METRIC, VAL_ACCURACY_METRIC, TEST_ERROR_METRIC, TEST_ACCURACY_METRIC)


def score_metrics(scores):
    """{metric name: value} for a runner.nn.metrics.Scores, leaving out what was not measured."""
    named = {ERROR_METRIC: scores.error, VAL_ERROR_METRIC: scores.val_error, TEST_ERROR_METRIC: scores.test_error,
             TRAIN_ACCURACY_METRIC: scores.train_accuracy, VAL_ACCURACY_METRIC: scores.val_accuracy,
             TEST_ACCURACY_METRIC: scores.test_accuracy}
    return {name: value for name, value in named.items() if value is not None}


def final_metric(name):
    """The name under which a metric's value for the final weights is logged on its own."""
    return FINAL_PREFIX + name


def comparison_files(metric):
    """(table, plot) artifact names of a sweep's ranking by `metric`."""
    if metric == ERROR_METRIC:
        return COMPARISON_FILE, COMPARISON_PLOT
    return f"comparison_{metric}.csv", f"comparison_{metric}.png"


def weight_file(index):
    """Artifact path of weight matrix `index` (input side first)."""
    return f"{WEIGHTS_DIR}/layer_{index}.npy"


def weights_sha256(weights):
    """sha256 over every matrix in order: its shape, dtype and C-order bytes."""
    digest = hashlib.sha256()
    for w in weights:
        w = np.ascontiguousarray(w)
        digest.update(f"{w.shape}|{w.dtype.str}|".encode())
        digest.update(w.tobytes())
    return digest.hexdigest()


def file_sha256(path):
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_weights(folder, weights):
    """Save each matrix as weights/layer_K.npy (plain .npy, no pickle)."""
    os.makedirs(os.path.join(folder, WEIGHTS_DIR), exist_ok=True)
    for index, w in enumerate(weights):
        np.save(os.path.join(folder, weight_file(index)), np.ascontiguousarray(w), allow_pickle=False)


def read_weights(folder):
    """Load weights/layer_0.npy, layer_1.npy, ... from folder, in order."""
    weights, index = [], 0
    while os.path.exists(os.path.join(folder, weight_file(index))):
        weights.append(np.load(os.path.join(folder, weight_file(index)), allow_pickle=False))
        index += 1
    return weights


def write_predictions(folder, X, y, predictions, name=PREDICTIONS_FILE, last_output=None):
    """predictions.csv (or `name`): one row per sample with inputs x0.., targets and predictions, full precision.

    `predictions` are the final weights' outputs (what the logged model returns). `last_output`,
    when given, adds the LAST_OUTPUT_COLUMN columns: the last training iteration's output, taken
    before its update, which is what the seed program prints.
    """
    n_in, n_out = X.shape[1], y.shape[1]
    suffix = (lambda j: "") if n_out == 1 else (lambda j: f"_{j}")
    header = [f"x{i}" for i in range(n_in)] + [f"target{suffix(j)}" for j in range(n_out)]
    header += [f"prediction{suffix(j)}" for j in range(n_out)]
    columns = [X, y, predictions]
    if last_output is not None:
        header += [f"{LAST_OUTPUT_COLUMN}{suffix(j)}" for j in range(n_out)]
        columns.append(last_output)
    with open(os.path.join(folder, name), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in zip(*columns):
            writer.writerow([repr(float(v)) for part in row for v in part])


def dataset_digest(X, y):
    """Fingerprint of a data split, the same way as the weights': shapes, dtypes and bytes of X, y."""
    return weights_sha256([X, y])


def dataset_params(data):
    """The data's size as run params: data.rows (training), data.val_rows, data.test_rows, data.features, ..."""
    params = {"data.rows": len(data.X), "data.val_rows": 0 if data.X_val is None else len(data.X_val),
              "data.test_rows": 0 if data.X_test is None else len(data.X_test),
              "data.features": data.X.shape[1], "data.outputs": data.y.shape[1]}
    if data.classes is not None:
        params["data.classes"] = len(data.classes)
        params["data.class_names"] = json.dumps(data.classes)
    return {key: str(value) for key, value in params.items()}


def config_params(config):
    """A plain config (nested dicts) as run params, {dotted.key: text}: lists as their JSON text, the rest as str().

    The run's params and its MLflow model's config (which Model.log logs as params too) are both
    made here, so each key is one param with one text.
    """
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, f"{name}.")
            else:
                flat[name] = json.dumps(value) if isinstance(value, list) else str(value)

    walk(config, "")
    return flat


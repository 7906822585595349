"""The trained network as an MLflow model, runs:/RUN_ID/model: loadable with mlflow.pyfunc, servable.

The model is runner/pyfunc_model.py (models from code) plus the weight files; the part of the runner
package that file imports travels with it as code, so a machine that serves it needs only numpy and mlflow.
"""

import ast
import functools
import os
import shutil
import tempfile
from pathlib import Path

from runner.tracking import record
from runner.tracking.provenance import package_version

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # the runner package: the model's code comes from it
EXAMPLE_ROWS = 5  # input example: the first rows of the training inputs


@functools.lru_cache(maxsize=1)
def pip_requirements():
    """What the model needs to load, pinned to what trained it (given, so MLflow need not infer them)."""
    return [f"mlflow=={package_version('mlflow')}", f"numpy=={package_version('numpy')}"]


def _imported_names(tree):
    """Dotted names a module's absolute imports may load: `import a.b` -> a.b; `from a import b` -> a, a.b."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def code_modules(code_file, package_dir=PACKAGE_DIR):
    """The files of `package_dir` that `code_file` imports, directly or through them, with the `__init__.py` of
    every package on the way; sorted paths relative to the package's parent folder."""
    found, todo = set(), [Path(code_file)]
    while todo:
        for name in _imported_names(ast.parse(todo.pop().read_text())):
            parts = name.split(".")
            if parts[0] != package_dir.name:
                continue
            for depth in range(1, len(parts) + 1):
                path = package_dir.parent.joinpath(*parts[:depth])
                file = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
                if file.is_file() and file not in found:
                    found.add(file)
                    todo.append(file)
    return sorted(str(file.relative_to(package_dir.parent)) for file in found)


def stage_code(folder, code_file, package_dir=PACKAGE_DIR):
    """Copy the modules `code_file` needs (code_modules) into folder/<package>/; returns that package folder."""
    for relative in code_modules(code_file, package_dir):
        target = Path(folder, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package_dir.parent / relative, target)
    return str(Path(folder, package_dir.name))


def log_network_model(run, code_file, weights_folder, n_weights, X, predictions, model_section, step, copies=None):
    """Log the weight files written by record.write_weights in weights_folder as the run's MLflow model.

    `code_file` is the model's Python file (runner/pyfunc_model.py, which MLflow runs to load it);
    the runner modules it imports go with it (stage_code). `model_section` is the `model` part of
    the run's config (the model reads its activations), given to MLflow as the model's config in the
    form of the run's params (`model.activation`: MLflow logs a model config as params too, so each
    key stays one param); `predictions` give the signature its output
    shape; the model is linked to the metrics at `step`. `copies` (a tracking.ModelCopies) logs a
    copy of a model saved once for a batch of such runs.
    """
    artifacts = {record.model_weight_artifact(k): os.path.join(weights_folder, record.weight_file(k))
                 for k in range(n_weights)}
    with tempfile.TemporaryDirectory(prefix="nn-runner-code-") as folder:
        # a copy reuses the code of the model saved for its batch
        code_paths = [] if copies is not None and copies.saved else [stage_code(folder, code_file)]
        return run.log_code_model(record.MODEL_NAME, code_file, artifacts=artifacts, code_paths=code_paths,
                                  model_config=record.config_params({"model": model_section}), input_example=X[:EXAMPLE_ROWS],
                                  output_example=predictions[:EXAMPLE_ROWS], pip_requirements=pip_requirements(),
                                  step=step, copies=copies)

"""A trained network as an MLflow pyfunc model, in MLflow's "models from code" form.

MLflow runs this file to load the model (it is never imported by the runner): the weights come
from the model's `layer_K` artifacts (plain .npy, no pickle) and the activations from the model
config, which holds the run's `model.*` params. Predictions are runner.nn.network.predict's;
the runner package travels with the model (MLflow's code_paths), so serving it needs only the
model's pip requirements, not this project.
"""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

from runner.nn.network import predict
from runner.tracking.record import model_weight_artifact

MODEL_PREFIX = "model."  # the model config holds the run's `model.*` params (record.config_params)

# config key under `model` -> predict() argument; a key the config lacks keeps predict's default
ACTIVATION_ARGUMENTS = {"activation": "hidden_activation", "output": "output_activation"}


def predict_arguments(model_section):
    """The activation arguments of predict() for a run's `model` config section."""
    return {arg: model_section[key] for key, arg in ACTIVATION_ARGUMENTS.items() if key in model_section}


class NetworkModel(PythonModel):
    """Rows of inputs (an array or a data frame of numbers) -> rows of network outputs."""

    def load_context(self, context):
        self.weights, index = [], 0
        while model_weight_artifact(index) in context.artifacts:
            self.weights.append(np.load(context.artifacts[model_weight_artifact(index)], allow_pickle=False))
            index += 1
        self.arguments = predict_arguments({key.removeprefix(MODEL_PREFIX): value
                                            for key, value in context.model_config.items()})

    # np.ndarray: MLflow converts a data frame to an array and checks it against the signature
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        return predict(self.weights, np.asarray(model_input, dtype=np.float64), **self.arguments)


mlflow.models.set_model(NetworkModel())

"""What a run reports at a logged step: error and, for classification, accuracy (plain math, no MLflow)."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scores:
    """The figures of one logged step; None where there is no such split or no classification.

    The field names are the metric names (runner.tracking.record), so getattr(scores, metric) reads one.
    """

    error: float  # mean |y - prediction| over every target entry of the training data
    test_error: float | None = None  # the same on the held-out test split
    train_accuracy: float | None = None  # fraction of training rows whose predicted class is right
    test_accuracy: float | None = None
    val_error: float | None = None  # mean |y - prediction| on the validation split
    val_accuracy: float | None = None


def mean_abs(error):
    """The seed's progress figure: mean(|y - prediction|)."""
    return float(np.mean(np.abs(error)))


def predicted_classes(outputs):
    """Class index per row: output > 0.5 for a single (sigmoid) output, else the argmax."""
    outputs = np.asarray(outputs)
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0.5).astype(np.intp)
    return np.argmax(outputs, axis=1)


def correct_count(y, outputs):
    """How many rows of `outputs` predict the class that the targets `y` (0/1 or one-hot) mark."""
    return int(np.count_nonzero(predicted_classes(outputs) == predicted_classes(y)))


def accuracy(y, outputs):
    """Fraction of rows whose predicted class is the target's."""
    return correct_count(y, outputs) / len(y)

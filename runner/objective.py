"""The objective: the metric a sweep optimises (what nn-run's task returns) and ranks its runs by.

`sweep.objective: auto` is the validation error when the data set has a validation split
(dataset.val_fraction > 0), else the training error; never the test error unless it is named:
choosing a model by the test split leaks it, so naming test_error or test_accuracy logs one
warning line. Knows no Hydra and no MLflow: the names are runner.tracking.record's, which are
also the runner.nn.metrics.Scores fields.
"""

import logging
from dataclasses import dataclass

from runner.tracking import record

log = logging.getLogger(__name__)

AUTO = "auto"
CHOICES = (AUTO, *record.RANKING_METRICS)  # auto, error, val_error, val_accuracy, test_error, test_accuracy
MAXIMIZED = (record.VAL_ACCURACY_METRIC, record.TEST_ACCURACY_METRIC)


@dataclass
class SweepConfig:
    """Keys of the `sweep` node (conf/config.yaml), registered with Hydra by runner/config.py."""

    objective: str = "???"  # OmegaConf's mark of a value conf/config.yaml gives


class ObjectiveError(ValueError):
    """A sweep.objective this config cannot have; one line for the user (runner/job.py makes it a ConfigError)."""


def resolve(name, val_fraction, test_fraction, classify=None):
    """The metric `name` (sweep.objective) means for a data set with these split fractions.

    `classify`: whether the data has classes (accuracies exist); None when not known yet.
    Raises ObjectiveError for a name not in CHOICES or a metric this data set does not measure.
    """
    if name not in CHOICES:
        raise ObjectiveError(f"sweep.objective={name!r} is not allowed: one of {', '.join(CHOICES)}")
    if name == AUTO:
        return record.VAL_ERROR_METRIC if val_fraction > 0 else record.ERROR_METRIC
    if name.startswith("val_") and not val_fraction > 0:
        raise ObjectiveError(f"sweep.objective={name!r} is not allowed: there is no validation split "
                             f"(dataset.val_fraction is {val_fraction!r}); set dataset.val_fraction > 0, or use auto")
    if name.startswith("test_") and not test_fraction > 0:
        raise ObjectiveError(f"sweep.objective={name!r} is not allowed: there is no test split "
                             f"(dataset.test_fraction is {test_fraction!r}); set dataset.test_fraction > 0, or use auto")
    if name.endswith("_accuracy") and classify is False:
        raise ObjectiveError(f"sweep.objective={name!r} is not allowed: the data set has no classes, so no accuracy; "
                             "use an error: auto, error, val_error or test_error")
    return name


def configured(cfg, classify=None):
    """The metric a run of the composed config `cfg` optimises: resolve(cfg.sweep.objective, ...)."""
    return resolve(cfg.sweep.objective, cfg.dataset.val_fraction, cfg.dataset.test_fraction, classify)


def direction(metric):
    """"maximize" for an accuracy, "minimize" for an error."""
    return "maximize" if metric in MAXIMIZED else "minimize"


def value(scores, metric):
    """The figure of `metric` in a runner.nn.metrics.Scores (None when that split or accuracy is not measured)."""
    return getattr(scores, metric)


def warn_if_leaking(metric):
    """Log one warning line when `metric` is measured on the test split (call it once per run or sweep)."""
    if metric.startswith("test_"):
        log.warning("sweep.objective=%s chooses by the test split, so its score no longer measures unseen data; "
                    "for a clean test score set dataset.val_fraction > 0 and sweep.objective=auto", metric)

"""Differences between two runs' records: weight matrices, metric histories, recorded environment facts.

Plain data in, differences out: weights as lists of arrays, metrics as {key: [(step, value), ...]},
tags as dicts. Equality is exact (np.array_equal, float ==); NaN equals NaN in the same place.
"""

import math
from dataclasses import dataclass

import numpy as np

from runner.tracking import record
from runner.tracking.provenance import is_provenance_tag, same_interpreter

MISSING = "(not recorded)"


@dataclass
class Difference:
    """One part of the record that differs: what it is and how."""

    what: str  # e.g. "weights/layer_1.npy", "metric error"
    detail: str
    largest: float | None = None  # largest absolute difference, where values are comparable

    def __str__(self):
        largest = "" if self.largest is None else f"; largest absolute difference {self.largest!r}"
        return f"{self.what}: {self.detail}{largest}"


def compare_weights(source, rerun):
    """A Difference for each matrix that is not equal (shape, or any entry), and for a count mismatch."""
    differences = []
    if len(source) != len(rerun):
        differences.append(Difference("weights", f"{len(source)} matrices in the source, {len(rerun)} in the rerun"))
    for index, (a, b) in enumerate(zip(source, rerun)):
        name = record.weight_file(index)
        if a.shape != b.shape:
            differences.append(Difference(name, f"shape {a.shape} in the source, {b.shape} in the rerun"))
        elif not np.array_equal(a, b, equal_nan=True):
            unequal = ~((a == b) | (np.isnan(a) & np.isnan(b)))
            largest = float(np.max(np.abs(a - b)[unequal]))  # nan when only one side is NaN
            differences.append(Difference(name, f"{int(unequal.sum())} of {a.size} entries differ", largest))
    return differences


def _same(a, b):
    return a == b or (math.isnan(a) and math.isnan(b))


def compare_metrics(source, rerun):
    """A Difference for each metric of the source whose (step, value) points the rerun does not repeat."""
    differences = []
    for key, points in sorted(source.items()):
        what = f"metric {key}"
        theirs = rerun.get(key)
        if not theirs:
            differences.append(Difference(what, f"{len(points)} points in the source, none in the rerun"))
            continue
        steps, their_steps = [s for s, _ in points], [s for s, _ in theirs]
        if steps != their_steps:
            differences.append(Difference(what, f"steps differ: source {_brief(steps)}, rerun {_brief(their_steps)}"))
            continue
        unequal = [(s, a, b) for (s, a), (_, b) in zip(points, theirs) if not _same(a, b)]
        if unequal:
            largest = max(abs(a - b) for _, a, b in unequal)
            step, a, b = unequal[0]
            differences.append(Difference(
                what, f"{len(unequal)} of {len(points)} points differ, first at step {step} ({a!r} vs {b!r})",
                largest))
    return differences


def _brief(steps, shown=6):
    text = ", ".join(map(str, steps[:shown]))
    return f"[{text}{', ...' if len(steps) > shown else ''}] ({len(steps)} points)"


SAME_FACT = {"python_executable": same_interpreter}  # facts that can be equal without being equal text


def differing_facts(source_tags, rerun_tags):
    """[(key, source value, rerun value)] for every recorded environment fact that differs (python_executable:
    a symlink to the same interpreter in the same environment is the same)."""
    differing = []
    for key in sorted(k for k in {*source_tags, *rerun_tags} if is_provenance_tag(k)):
        before, after = source_tags.get(key), rerun_tags.get(key)
        if before == after or (before is not None and after is not None and key in SAME_FACT
                               and SAME_FACT[key](before, after)):
            continue
        differing.append((key, MISSING if before is None else before, MISSING if after is None else after))
    return differing

"""Background probe scores (after Xiao et al. 2020): does the model answer from the object or the scene?

Pure functions of ``Records``: the engine stores the prediction of every probe
variant (``only_fg``, ``only_bg``, ``mixed_same``, ``mixed_rand``) per sample
with a mask (variants need the object's mask; samples without one are left out
of every background score); accuracies are always against the ORIGINAL label.
"""

from __future__ import annotations

import numpy as np

from gate.errors import GateError
from gate.metrics.registry import ScoreSpec
from gate.records import Records


def _variant(records: Records, variant: str) -> np.ndarray:
    """Predictions on ``variant`` for the samples that have a mask (no variant is built for the others)."""
    preds = records.probe_preds.get(variant)
    if preds is None:
        # The engine runs every variant when the probe is enabled; a missing one is a bug, not bad input.
        raise GateError(f"records have no predictions for background variant {variant!r}")
    masked: np.ndarray = np.asarray(preds, dtype=np.int64)[records.masked]
    return masked


def _share(hits: np.ndarray) -> float:
    return float(hits.mean()) if hits.size else float("nan")


def variant_accuracy(records: Records, variant: str) -> float:
    """Share of masked samples whose prediction on ``variant`` is the original label."""
    return _share(_variant(records, variant) == records.labels[records.masked])


def only_fg_accuracy(records: Records) -> float:
    """Accuracy with the scene replaced by a flat fill (the showroom test)."""
    return variant_accuracy(records, "only_fg")


def only_bg_accuracy(records: Records) -> float:
    """Accuracy with the object removed: high means the scene alone gives the answer."""
    return variant_accuracy(records, "only_bg")


def only_bg_chance_adjusted(records: Records) -> float:
    """Only-BG accuracy rescaled so that chance (1/C) is 0 and perfect is 1: (acc − 1/C) / (1 − 1/C)."""
    chance = 1.0 / len(records.classes)
    return (only_bg_accuracy(records) - chance) / (1.0 - chance)


def mixed_same_accuracy(records: Records) -> float:
    """Accuracy with the object on the scene of another sample of its class."""
    return variant_accuracy(records, "mixed_same")


def mixed_rand_accuracy(records: Records) -> float:
    """Accuracy with the object on the scene of a sample of another class."""
    return variant_accuracy(records, "mixed_rand")


def bg_gap(records: Records) -> float:
    """Mixed-Same minus Mixed-Rand accuracy: what a matching scene adds."""
    return mixed_same_accuracy(records) - mixed_rand_accuracy(records)


def flip_rate(records: Records) -> float:
    """Share of masked samples whose prediction under Mixed-Rand differs from the original prediction."""
    return _share(_variant(records, "mixed_rand") != records.preds[records.masked])


SCORES: tuple[ScoreSpec, ...] = (
    ScoreSpec("background.only_fg_accuracy", True,
              "Accuracy with the scene replaced by flat grey (showroom test; out of distribution, report only).",
              "background", only_fg_accuracy, proportion=True, probe="background"),
    ScoreSpec("background.only_bg_accuracy", False,
              "Accuracy with the object removed (Only-BG-T): high = the scene alone gives the answer.",
              "background", only_bg_accuracy, proportion=True, probe="background"),
    ScoreSpec("background.only_bg_chance_adjusted", False,
              "Only-BG accuracy rescaled so chance is 0 and perfect is 1: (acc − 1/C) / (1 − 1/C).",
              "background", only_bg_chance_adjusted, probe="background"),
    ScoreSpec("background.mixed_same_accuracy", True,
              "Accuracy with the object on another scene of its own class.",
              "background", mixed_same_accuracy, proportion=True, probe="background"),
    ScoreSpec("background.mixed_rand_accuracy", True,
              "Accuracy with the object on the scene of a random other class.",
              "background", mixed_rand_accuracy, proportion=True, probe="background"),
    ScoreSpec("background.bg_gap", False,
              "Mixed-Same minus Mixed-Rand accuracy: how much a matching scene helps.",
              "background", bg_gap, probe="background"),
    ScoreSpec("background.flip_rate", False,
              "Share of samples whose prediction changes when the object moves to another class's scene.",
              "background", flip_rate, proportion=True, probe="background"),
)

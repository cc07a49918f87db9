"""Alignment scores: does the Grad-CAM map of each decision land on the object?

Means skip excluded samples (empty mask or all-zero map); ``alignment.coverage``
says how many samples the means stand on, so a policy can require it, and
``alignment.zero_maps`` how many were left out because their map was zero.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from gate.metrics.registry import ScoreSpec
from gate.records import Records


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def energy(records: Records) -> float:
    """Mean share of map mass inside the mask."""
    return _nanmean(records.energy)


def lift(records: Records) -> float:
    """Mean of energy / mask area (1.0 = no better than a uniform map)."""
    return _nanmean(records.lift)


def pointing_game(records: Records) -> float:
    """Share of samples whose map maximum lies in the mask."""
    return _nanmean(records.pointing_hit)


def rank_accuracy(records: Records) -> float:
    """Mean share of the top-|mask| map pixels that lie in the mask."""
    return _nanmean(records.rank_accuracy)


def off_object_rate(records: Records) -> float:
    """Share of (included) samples whose lift is below 1: the map favours the background."""
    lifts = records.lift[~np.isnan(records.lift)]
    return float((lifts < 1.0).mean()) if lifts.size else float("nan")


def coverage(records: Records) -> float:
    """Share of samples with an alignment value (non-empty mask and non-zero map)."""
    return float((~np.isnan(records.energy)).mean()) if records.size else float("nan")


def excluded(records: Records) -> float:
    """Number of samples left out of the alignment means."""
    return float(np.isnan(records.energy).sum())


def zero_maps(records: Records) -> float:
    """Number of samples with a non-empty mask whose map is all zero (NaN energy).

    A dead head (torchvision zero-initialises ViT heads), saturated logits or a target layer the gradient
    does not reach give zero maps; they are left out of the means like samples without a mask, and this
    count says how many there were.
    """
    area = records.mask_area
    masked = np.isfinite(area) & (np.nan_to_num(area, nan=0.0) > 0)
    return float((masked & np.isnan(records.energy)).sum())


def _subset_mean(per_sample: Callable[[Records], np.ndarray], want_correct: bool) -> Callable[[Records], float]:
    def value(records: Records) -> float:
        return _nanmean(per_sample(records)[records.correct == want_correct])

    return value


def lift_by_class(records: Records) -> dict[str, float]:
    """Mean lift of the samples of each class."""
    lifts = records.lift
    return {name: _nanmean(lifts[records.labels == i]) for i, name in enumerate(records.classes)}


def _lift(records: Records) -> np.ndarray:
    return records.lift


def _energy(records: Records) -> np.ndarray:
    return records.energy


SCORES: tuple[ScoreSpec, ...] = (
    ScoreSpec("alignment.energy", True, "Mean share of Grad-CAM mass inside the object mask.", "alignment", energy),
    ScoreSpec("alignment.lift", True, "Mean energy / mask area; 1.0 = no better than a uniform map.", "alignment",
              lift),
    ScoreSpec("alignment.pointing_game", True, "Share of samples whose map maximum lies on the object.",
              "alignment", pointing_game, proportion=True),
    ScoreSpec("alignment.rank_accuracy", True, "Share of the top-|mask| map pixels on the object.", "alignment",
              rank_accuracy),
    ScoreSpec("alignment.off_object_rate", False, "Share of samples with lift < 1 (map favours the background).",
              "alignment", off_object_rate, proportion=True),
    ScoreSpec("alignment.coverage", True, "Share of samples scored for alignment (mask and map non-empty).",
              "alignment", coverage, proportion=True),
    ScoreSpec("alignment.excluded", False, "Number of samples left out of alignment (empty mask or zero map).",
              "alignment", excluded),
    ScoreSpec("alignment.zero_maps", False, "Number of masked samples whose Grad-CAM map is all zero (dead head, "
              "saturated logits, or a layer the gradient does not reach).", "alignment", zero_maps),
    ScoreSpec("alignment.lift.correct", True, "Mean lift over correct predictions.", "alignment",
              _subset_mean(_lift, True)),
    ScoreSpec("alignment.lift.wrong", True, "Mean lift over wrong predictions.", "alignment",
              _subset_mean(_lift, False)),
    ScoreSpec("alignment.energy.correct", True, "Mean energy over correct predictions.", "alignment",
              _subset_mean(_energy, True)),
    ScoreSpec("alignment.energy.wrong", True, "Mean energy over wrong predictions.", "alignment",
              _subset_mean(_energy, False)),
    ScoreSpec("alignment.lift.class.<class>", True, "Mean lift over the samples of one class.", "alignment",
              lift_by_class),
)

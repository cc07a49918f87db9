"""Alignment scores: does the Grad-CAM map of each decision land on the object?

Means skip excluded samples (empty mask or all-zero map); ``alignment.coverage``
says how many samples the means stand on, so a policy can require it, and
``alignment.zero_maps`` how many were left out because their map was zero.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from gate.metrics.spec import (
    GALLERIES,
    NON_NEGATIVE,
    UNIT,
    WRONG_REASON_GALLERY,
    ScoreSpec,
    SumForm,
    count_form,
    mean_form,
    nan_mean_form,
)
from gate.records import Records


def off_object(records: Records) -> np.ndarray:
    """Per sample: 1.0 when the map favours the background (lift < 1), 0.0 when not, NaN when excluded."""
    lift = records.lift
    return np.where(np.isnan(lift), np.nan, (lift < 1.0).astype(np.float64))


def zero_map(records: Records) -> np.ndarray:
    """Per sample: a non-empty mask whose map is all zero (NaN energy).

    A dead head (torchvision zero-initialises ViT heads), saturated logits or a target layer the gradient
    does not reach give zero maps; they are left out of the means like samples without a mask, and the
    ``alignment.zero_maps`` count says how many there were.
    """
    area = records.mask_area
    masked = np.isfinite(area) & (np.nan_to_num(area, nan=0.0) > 0)
    return np.asarray(masked & np.isnan(records.energy))


def _on_answers(field: str, want_correct: bool, records: Records) -> SumForm:
    """The mean of a per-sample value over the right (or the wrong) answers only."""
    return nan_mean_form(getattr(records, field), keep=records.correct == want_correct)


def _lift_of_class(records: Records, class_name: str) -> SumForm:
    return nan_mean_form(records.lift, keep=records.labels == records.classes.index(class_name))


SCORES: tuple[ScoreSpec, ...] = (
    ScoreSpec("alignment.energy", True, "Mean share of Grad-CAM mass inside the object mask.", "alignment",
              lambda r: nan_mean_form(r.energy), bounds=UNIT, evidence=GALLERIES,
              words="{pct} of the map's mass lies on the object"),
    ScoreSpec("alignment.lift", True, "Mean energy / mask area; 1.0 = no better than a uniform map.", "alignment",
              lambda r: nan_mean_form(r.lift), bounds=NON_NEGATIVE, evidence=WRONG_REASON_GALLERY, history=True,
              words="the map puts {times} the mass on the object that a uniform map would"),
    ScoreSpec("alignment.pointing_game", True, "Share of samples whose map maximum lies on the object.",
              "alignment", lambda r: nan_mean_form(r.pointing_hit), proportion=True, evidence=GALLERIES,
              history=True, words="the map's peak lands on the object on {pct} of samples"),
    ScoreSpec("alignment.rank_accuracy", True, "Share of the top-|mask| map pixels on the object.", "alignment",
              lambda r: nan_mean_form(r.rank_accuracy), bounds=UNIT, evidence=GALLERIES,
              words="{pct} of the map's hottest pixels are on the object"),
    ScoreSpec("alignment.off_object_rate", False, "Share of samples with lift < 1 (map favours the background).",
              "alignment", lambda r: nan_mean_form(off_object(r)), proportion=True,
              evidence=WRONG_REASON_GALLERY,
              words="the map lands off the object on {pct} of samples"),
    ScoreSpec("alignment.coverage", True, "Share of samples scored for alignment (mask and map non-empty).",
              "alignment", lambda r: mean_form(~np.isnan(r.energy)), proportion=True, evidence=GALLERIES,
              words="{pct} of samples could be scored for alignment"),
    ScoreSpec("alignment.excluded", False, "Number of samples left out of alignment (empty mask or zero map).",
              "alignment", lambda r: count_form(np.isnan(r.energy)), bounds=NON_NEGATIVE, evidence=GALLERIES,
              words="{value} samples were left out of alignment"),
    ScoreSpec("alignment.zero_maps", False, "Number of masked samples whose Grad-CAM map is all zero (dead head, "
              "saturated logits, or a layer the gradient does not reach).", "alignment",
              lambda r: count_form(zero_map(r)), bounds=NON_NEGATIVE, evidence=GALLERIES,
              words="{value} samples with a mask got an all-zero map"),
    ScoreSpec("alignment.lift.correct", True, "Mean lift over correct predictions.", "alignment",
              partial(_on_answers, "lift", True), bounds=NON_NEGATIVE, evidence=GALLERIES,
              words="on right answers the map puts {times} the uniform mass on the object"),
    ScoreSpec("alignment.lift.wrong", True, "Mean lift over wrong predictions.", "alignment",
              partial(_on_answers, "lift", False), bounds=NON_NEGATIVE, evidence=GALLERIES,
              words="on wrong answers the map puts {times} the uniform mass on the object"),
    ScoreSpec("alignment.energy.correct", True, "Mean energy over correct predictions.", "alignment",
              partial(_on_answers, "energy", True), bounds=UNIT, evidence=GALLERIES,
              words="on right answers {pct} of the map's mass lies on the object"),
    ScoreSpec("alignment.energy.wrong", True, "Mean energy over wrong predictions.", "alignment",
              partial(_on_answers, "energy", False), bounds=UNIT, evidence=GALLERIES,
              words="on wrong answers {pct} of the map's mass lies on the object"),
    ScoreSpec("alignment.lift.class.<class>", True, "Mean lift over the samples of one class.", "alignment",
              _lift_of_class, bounds=NON_NEGATIVE, evidence=GALLERIES,
              words="for this class the map puts {times} the uniform mass on the object"),
)

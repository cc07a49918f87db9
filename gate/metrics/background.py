"""Background probe scores (after Xiao et al. 2020): does the model answer from the object or the scene?

The engine stores the prediction of every probe variant (``only_fg``, ``only_bg``, ``mixed_same``,
``mixed_rand``) per sample with a mask (variants need the object's mask; samples without one are left out
of every background score); accuracies are always against the ORIGINAL label.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from gate.errors import GateError
from gate.metrics.spec import SHOWROOM, SIGNED_UNIT, Form, ScoreSpec, SumForm, ratio_form
from gate.records import Records


def variant_preds(records: Records, variant: str) -> np.ndarray:
    """Predictions on ``variant`` for every sample (meaningful where ``records.masked``)."""
    preds = records.probe_preds.get(variant)
    if preds is None:
        # The engine runs every variant when the probe is enabled; a missing one is a bug, not bad input.
        raise GateError(f"records have no predictions for background variant {variant!r}")
    return np.asarray(preds, dtype=np.int64)


def _masked_share(hits: np.ndarray, records: Records) -> SumForm:
    masked = records.masked
    return ratio_form(hits & masked, masked)


def variant_accuracy_form(variant: str, records: Records) -> SumForm:
    """Share of masked samples whose prediction on ``variant`` is the original label."""
    return _masked_share(variant_preds(records, variant) == records.labels, records)


def flip_rate_form(records: Records) -> SumForm:
    """Share of masked samples whose prediction under Mixed-Rand differs from the original prediction."""
    return _masked_share(variant_preds(records, "mixed_rand") != records.preds, records)


def _chance_adjusted(chance: float, sums: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((sums[:, 0] / sums[:, 1] - chance) / (1.0 - chance))


def only_bg_chance_adjusted_form(records: Records) -> SumForm:
    """Only-BG accuracy rescaled so that chance (1/C) is 0 and perfect is 1: (acc − 1/C) / (1 − 1/C)."""
    share = variant_accuracy_form("only_bg", records)
    return SumForm(share.total, partial(_chance_adjusted, 1.0 / len(records.classes)), share.build_features)


def _gap(sums: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(sums[:, 0] / sums[:, 2] - sums[:, 1] / sums[:, 2])


def bg_gap_form(records: Records) -> SumForm:
    """Mixed-Same minus Mixed-Rand accuracy over the masked samples: what a matching scene adds."""
    same = variant_accuracy_form("mixed_same", records)
    rand = variant_accuracy_form("mixed_rand", records)
    total = np.array([same.total[0], rand.total[0], same.total[1]])
    return SumForm(total, _gap, partial(_gap_features, same, rand))


def _gap_features(same: SumForm, rand: SumForm) -> np.ndarray:
    return np.column_stack([same.features[:, 0], rand.features[:, 0], same.features[:, 1]])


def _spec(name: str, higher_is_better: bool, help_text: str, form: Callable[..., Form], words: str,
          proportion: bool = True, history: bool = False) -> ScoreSpec:
    return ScoreSpec(name, higher_is_better, help_text, "background", form,
                     proportion=proportion, probe="background", evidence=SHOWROOM, words=words,
                     bounds=None if proportion else SIGNED_UNIT, history=history)


SCORES: tuple[ScoreSpec, ...] = (
    _spec("background.only_fg_accuracy", True,
          "Accuracy with the scene replaced by flat grey (showroom test; out of distribution, report only).",
          partial(variant_accuracy_form, "only_fg"),
          "with the scene removed the model answers right on {pct} of samples"),
    _spec("background.only_bg_accuracy", False,
          "Accuracy with the object removed (Only-BG-T): high = the scene alone gives the answer.",
          partial(variant_accuracy_form, "only_bg"), "the scene alone gives the right answer {pct} of the time",
          history=True),
    _spec("background.only_bg_chance_adjusted", False,
          "Only-BG accuracy rescaled so chance is 0 and perfect is 1: (acc − 1/C) / (1 − 1/C).",
          only_bg_chance_adjusted_form, "the scene alone beats chance by {pct} of the possible margin",
          proportion=False),
    _spec("background.mixed_same_accuracy", True, "Accuracy with the object on another scene of its own class.",
          partial(variant_accuracy_form, "mixed_same"),
          "on another scene of its own class the object is recognised {pct} of the time"),
    _spec("background.mixed_rand_accuracy", True, "Accuracy with the object on the scene of a random other class.",
          partial(variant_accuracy_form, "mixed_rand"),
          "on another class's scene the object is recognised {pct} of the time"),
    _spec("background.bg_gap", False, "Mixed-Same minus Mixed-Rand accuracy: how much a matching scene helps.",
          bg_gap_form, "a matching scene adds {pct} to accuracy: the scene, not the object, carries the answer",
          proportion=False, history=True),
    _spec("background.flip_rate", False,
          "Share of samples whose prediction changes when the object moves to another class's scene.",
          flip_rate_form, "the answer changes on {pct} of samples when the object moves to another scene"),
)

"""Warnings: changes against the baseline that no rule gates but that are beyond their interval.

A green gate can hide a regression nobody wrote a rule for (ECE up 10 points, the pointing game down 30).
Each watched score's paired-bootstrap interval of the change is computed (and so recorded in the
comparison's intervals); when the whole interval lies on the worse side of zero and no ``vs_baseline`` rule
tests that score, the change is a warning: a third state beside pass and fail, shown in the report, the
summaries and result.json, never changing the verdict or the exit code.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from gate.decide.compare import Pairing
from gate.metrics.registry import get_spec
from gate.result import ChangeWarning

# Scores whose change is worth a warning, each with a vectorised interval (a sum or rank form): a bootstrap
# that calls the score function on every resample would cost seconds per score.
WATCHED: tuple[str, ...] = (
    "accuracy", "balanced_accuracy", "worst_class_accuracy", "ece", "overconfidence_error",
    "confident_wrong_rate@0.9", "confident_wrong_rate@0.99", "alignment.lift", "alignment.pointing_game",
    "alignment.off_object_rate", "background.only_bg_accuracy", "background.bg_gap", "background.flip_rate",
)
WATCH_CONFIDENCE = 0.95


def warnings(
    pairing: Pairing, gated: Collection[str], *, confidence: float = WATCH_CONFIDENCE, seed: int = 0,
) -> tuple[ChangeWarning, ...]:
    """Changes of watched, ungated scores whose interval excludes zero on the worse side, largest first (each
    interval is recorded in ``pairing``, so the report's table shows it)."""
    found = []
    deltas = pairing.deltas
    for score in WATCHED:
        spec = get_spec(score)
        if spec is None or score in gated:
            continue
        if score not in pairing.candidate_scores or score not in pairing.baseline_scores:
            continue
        delta = deltas.get(f"delta.{score}", math.nan)
        if not math.isfinite(delta):
            continue
        interval = pairing.interval_for(score, confidence=confidence, seed=seed)
        worse = interval.high < 0 if spec.higher_is_better else interval.low > 0
        if worse:
            found.append(ChangeWarning(score, delta, interval.low, interval.high, confidence,
                                       float(pairing.candidate_scores[score]), float(pairing.baseline_scores[score])))
    return tuple(sorted(found, key=lambda w: -abs(w.delta) / _scale(w.score)))


def _scale(score: str) -> float:
    spec = get_spec(score)
    low, high = (0.0, 1.0) if spec is None else spec.range
    return high - low if math.isfinite(high - low) and high > low else 1.0

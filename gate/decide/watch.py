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
from typing import Any

from gate.decide.compare import Comparison
from gate.metrics.registry import get_spec
from gate.result import json_number

# Scores whose change is worth a warning, each with a vectorised interval (a sum or rank form): a bootstrap
# that calls the score function on every resample would cost seconds per score.
WATCHED: tuple[str, ...] = (
    "accuracy", "balanced_accuracy", "worst_class_accuracy", "ece", "overconfidence_error",
    "confident_wrong_rate@0.9", "confident_wrong_rate@0.99", "alignment.lift", "alignment.pointing_game",
    "alignment.off_object_rate", "background.only_bg_accuracy", "background.bg_gap", "background.flip_rate",
)
WATCH_CONFIDENCE = 0.95


def warnings(
    comparison: Comparison, gated: Collection[str], *, confidence: float = WATCH_CONFIDENCE, seed: int = 0,
) -> list[dict[str, Any]]:
    """Changes of watched, ungated scores whose interval excludes zero on the worse side, largest first.

    Each: ``score``, ``delta``, ``low``, ``high``, ``confidence``, ``candidate``, ``baseline`` (JSON-safe).
    """
    found = []
    for score in WATCHED:
        spec = get_spec(score)
        if spec is None or score in gated:
            continue
        if score not in comparison.candidate_scores or score not in comparison.baseline_scores:
            continue
        delta = comparison.deltas.get(f"delta.{score}", math.nan)
        if not math.isfinite(delta):
            continue
        interval = comparison.interval_for(score, confidence=confidence, seed=seed)
        worse = interval.high < 0 if spec.higher_is_better else interval.low > 0
        if not worse:
            continue
        found.append({
            "score": score, "delta": json_number(delta), "low": json_number(interval.low),
            "high": json_number(interval.high), "confidence": confidence,
            "candidate": json_number(comparison.candidate_scores[score]),
            "baseline": json_number(comparison.baseline_scores[score]),
        })
    return sorted(found, key=lambda w: -abs(float(w["delta"] or 0.0)) / _scale(str(w["score"])))


def _scale(score: str) -> float:
    spec = get_spec(score)
    low, high = (0.0, 1.0) if spec is None else spec.range
    return high - low if math.isfinite(high - low) and high > low else 1.0

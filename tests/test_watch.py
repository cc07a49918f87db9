"""Warnings for ungated changes beyond their interval (gate/decide/watch.py): hand-built paired records."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest

from gate.decide.compare import compare
from gate.decide.watch import warnings
from gate.metrics.registry import compute_scores
from gate.records import Records


def _records(correct: np.ndarray, confidence: float) -> Records:
    """Two classes; every answer has the given top confidence; ``correct`` says which answers are right."""
    n = correct.size
    labels = np.zeros(n, dtype=np.int64)
    top = np.where(correct, 0, 1)
    probs = np.full((n, 2), 1 - confidence, dtype=np.float32)
    probs[np.arange(n), top] = confidence
    nan = np.full(n, np.nan)
    return Records(classes=("a", "b"), ids=tuple(f"s{i}" for i in range(n)), labels=labels, probs=probs,
                   energy=nan, mask_area=nan, pointing_hit=nan, rank_accuracy=nan)


def test_a_worse_ungated_score_is_a_warning_and_a_gated_one_is_not() -> None:
    right = np.arange(400) % 10 != 0  # 90% right for both models: accuracy unchanged
    baseline = _records(right, 0.9)  # confidence 0.9 at 90% accuracy: ECE 0
    candidate = _records(right, 0.99)  # the same answers at 0.99: ECE 0.09, over-confidence 0.09
    comparison = compare(candidate, baseline, partial(compute_scores, probes=()))
    found = warnings(comparison, gated={"overconfidence_error"})
    # Accuracy did not change; over-confidence is gated; the 10% wrong answers now come at 99% confidence. Largest
    # change first: +0.10 of samples wrong at >= 99%, then ECE +0.09.
    assert [w.score for w in found] == ["confident_wrong_rate@0.99", "ece"]
    ece = found[1]
    assert ece.delta == pytest.approx(0.09, abs=1e-6)  # every sample's gap grew by the same 0.09
    assert ece.baseline == pytest.approx(0, abs=1e-6) and 0 < ece.low <= ece.delta <= ece.high
    # Recorded, so result.json and the report's table show its interval.
    assert "delta.ece@0.95" in {iv.key for iv in comparison.result().intervals}
    assert [w.score for w in warnings(comparison, gated=())] == ["confident_wrong_rate@0.99", "ece",
                                                                 "overconfidence_error"]


def test_a_better_or_noisy_change_is_no_warning() -> None:
    right = np.arange(400) % 10 != 0
    comparison = compare(_records(right, 0.9), _records(right, 0.99), partial(compute_scores, probes=()))
    assert warnings(comparison, gated=()) == ()  # the candidate is the better calibrated one
    flipped = right.copy()
    flipped[:2] = ~flipped[:2]  # one sample corrected, one regressed: no change beyond noise
    same = compare(_records(flipped, 0.9), _records(right, 0.9), partial(compute_scores, probes=()))
    assert warnings(same, gated=()) == ()

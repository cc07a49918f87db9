from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import pytest

from gate.decide.compare import (
    check_paired,
    compare,
    delta_interval,
    non_inferior,
    superior,
)
from gate.decide.stats import Interval, paired_bootstrap
from gate.errors import InputError, PolicyError
from gate.metrics.registry import compute_scores
from gate.records import Records
from gate.result import Comparison, Migration

CLASSES = ("circle", "square", "star", "tri")


def make_records(
    labels: np.ndarray,
    preds: np.ndarray,
    conf: np.ndarray,
    *,
    energy: np.ndarray | None = None,
    classes: tuple[str, ...] = CLASSES,
) -> Records:
    """Records whose top class is ``preds`` at probability ``conf``; the rest shared evenly."""
    n, c = len(labels), len(classes)
    probs = np.tile(((1.0 - conf) / (c - 1))[:, None], (1, c))
    probs[np.arange(n), preds] = conf
    nan = np.full(n, np.nan)
    return Records(
        classes=classes,
        ids=tuple(f"s{i:04d}" for i in range(n)),
        labels=np.asarray(labels, dtype=np.int64),
        probs=probs.astype(np.float32),
        energy=nan if energy is None else energy,
        mask_area=np.full(n, 0.25),
        pointing_hit=nan,
        rank_accuracy=nan,
    )


def ece(records: Records, bins: int = 15) -> float:
    conf, correct = records.confidence, records.correct
    which = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum(abs(correct[which == b].mean() - conf[which == b].mean()) * (which == b).mean()
                     for b in range(bins) if (which == b).any()))


def scores(records: Records) -> dict[str, float]:
    """A tiny stand-in for the metrics registry."""
    with np.errstate(invalid="ignore"):
        worst = np.nanmin([records.correct[records.labels == k].mean() if (records.labels == k).any() else np.nan
                           for k in range(len(records.classes))])
    p_true = records.probs[np.arange(records.size), records.labels].astype(np.float64)
    energy = records.energy[~np.isnan(records.energy)]
    return {
        "accuracy": float(records.correct.mean()),
        "nll": float(-np.log(p_true).mean()),
        "ece": ece(records),
        "worst_class_accuracy": float(worst),
        "alignment.energy": float(energy.mean()) if energy.size else math.nan,
    }


def generic_interval(cand: Records, base: Records, score: str, *, reps: int, seed: int, confidence: float) -> Interval:
    """Reference: score_fn on every resample, via the same bootstrap."""
    def statistic(idx: np.ndarray) -> float:
        return scores(cand.take(idx))[score] - scores(base.take(idx))[score]

    return paired_bootstrap(statistic, cand.size, reps=reps, seed=seed, confidence=confidence)


def baseline_600(seed: int = 0) -> Records:
    """600 samples at 90% accuracy, confidences spread over (0.3, 1)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=600)
    preds = labels.copy()
    wrong = rng.choice(600, size=60, replace=False)
    preds[wrong] = (labels[wrong] + rng.integers(1, 4, size=60)) % 4
    energy = np.where(rng.random(600) < 0.1, np.nan, rng.random(600))
    return make_records(labels, preds, rng.uniform(0.3, 0.999, size=600), energy=energy)


def flip_correct(records: Records, count: int) -> Records:
    """The same model with ``count`` correct predictions made wrong (same confidence)."""
    preds, conf = records.preds.copy(), records.confidence
    flipped = np.flatnonzero(records.correct)[:count]
    preds[flipped] = (records.labels[flipped] + 1) % 4
    return make_records(records.labels, preds, conf, energy=records.energy)


def saturated(records: Records, every: int) -> Records:
    """The same predictions with every ``every``-th confidence exactly 1.0 (ties, as a saturated softmax gives)."""
    conf = records.confidence.copy()
    conf[::every] = 1.0
    return make_records(records.labels, records.preds, conf, energy=records.energy)


def test_identical_records_have_zero_deltas() -> None:
    base = baseline_600()
    comparison = compare(base, base, scores)
    result = comparison.result()
    assert set(comparison.deltas) == {f"delta.{k}" for k in scores(base)} == set(result.deltas)
    assert all(v == 0.0 for v in comparison.deltas.values())
    assert all(v == 0.0 for v in result.class_deltas.values())
    assert result.mcnemar_p == 1.0
    assert result.migration == Migration(0, 0, 60, 540, 0.0)
    for score in ("accuracy", "ece", "alignment.energy"):
        interval = comparison.interval_for(score, confidence=0.95, reps=50)
        assert (interval.low, interval.high) == (0.0, 0.0)
        assert non_inferior(interval, max_drop=0.01, higher_is_better=score != "ece")
        assert not superior(interval, min_gain=0.0, higher_is_better=score != "ece")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("flips", "expected"), [(18, False), (3, True)], ids=["3pts-worse", "half-point-worse"])
def test_non_inferiority_on_flipped_predictions(flips: int, expected: bool, seed: int) -> None:
    base = baseline_600()
    cand = flip_correct(base, flips)
    comparison = compare(cand, base, scores).result()
    assert comparison.deltas["delta.accuracy"] == pytest.approx(-flips / 600, abs=1e-15)
    assert comparison.migration.regressed == flips and comparison.migration.corrected == 0
    assert comparison.mcnemar_p == pytest.approx(2 * 0.5**flips if flips < 20 else 1.0, rel=1e-12)
    interval = delta_interval(cand, base, "accuracy", confidence=0.95, seed=seed)
    assert interval.high <= 0.0
    assert non_inferior(interval, max_drop=0.01, higher_is_better=True) is expected


def test_migration_hand_counts() -> None:
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    base_preds = np.array([0, 1, 0, 0, 1, 1, 3, 3])  # right: 0,1,5,7
    cand_preds = np.array([0, 0, 2, 1, 2, 1, 0, 3])  # right: 0,2,5,7
    base_conf = np.array([0.9, 0.8, 0.7, 0.6, 0.9, 0.5, 0.6, 0.7])
    cand_conf = np.array([0.9, 0.6, 0.8, 0.5, 0.95, 0.5, 0.4, 0.7])
    base = make_records(labels, base_preds, base_conf)
    cand = make_records(labels, cand_preds, cand_conf)
    comparison = compare(cand, base, scores).result()
    # corrected: 2; regressed: 1; still wrong: 3 (0.6->0.5 drop), 4 (0.9->0.95 rise), 6 (0.6->0.4 drop)
    assert comparison.migration == Migration(
        corrected=1, regressed=1, still_wrong=3, still_right=3, still_wrong_confidence_dropped=2 / 3
    )
    # per class: circle {0,4} 1/2 vs 1/2; square {1,5} 1/2 vs 1; star {2,6} 1/2 vs 0; tri {3,7} 1/2 vs 1/2
    assert comparison.class_deltas == {"circle": 0.0, "square": -0.5, "star": 0.5, "tri": 0.0}
    assert comparison.mcnemar_p == 1.0


def test_still_wrong_share_is_nan_without_still_wrong() -> None:
    labels = np.array([0, 1])
    rec = make_records(labels, labels, np.array([0.9, 0.9]))
    assert math.isnan(compare(rec, rec, scores).result().migration.still_wrong_confidence_dropped)


def test_vectorised_accuracy_equals_generic_path() -> None:
    base = baseline_600()
    cand = flip_correct(base, 10)
    fast = delta_interval(cand, base, "accuracy", confidence=0.9, reps=300, seed=4)
    slow = generic_interval(cand, base, "accuracy", reps=300, seed=4, confidence=0.9)
    assert fast.low == pytest.approx(slow.low, abs=1e-12)
    assert fast.high == pytest.approx(slow.high, abs=1e-12)
    assert fast.low < fast.high  # a real interval, not a degenerate tie


def test_vectorised_nan_aware_alignment_equals_generic_path() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=80)
    conf = rng.uniform(0.4, 0.99, size=80)
    base_energy = np.where(rng.random(80) < 0.2, np.nan, rng.random(80))
    cand_energy = np.where(rng.random(80) < 0.2, np.nan, rng.random(80))  # NaNs in other places
    base = make_records(labels, labels, conf, energy=base_energy)
    cand = make_records(labels, labels, conf, energy=cand_energy)
    fast = delta_interval(cand, base, "alignment.energy", confidence=0.95, reps=200, seed=1)
    slow = generic_interval(cand, base, "alignment.energy", reps=200, seed=1, confidence=0.95)
    assert (fast.low, fast.high) == (pytest.approx(slow.low, abs=1e-12), pytest.approx(slow.high, abs=1e-12))


@pytest.mark.parametrize("score", ["ece", "overconfidence_error", "mce", "balanced_accuracy", "worst_class_accuracy"])
def test_binned_and_per_class_scores_are_vectorised_and_equal_the_generic_path(score: str) -> None:
    base = baseline_600()
    cand = flip_correct(base, 10)
    fast = delta_interval(cand, base, score, confidence=0.95, reps=200, seed=2)
    slow = registry_interval(cand, base, score, reps=200, seed=2, confidence=0.95)
    assert (fast.low, fast.high) == (pytest.approx(slow.low, abs=1e-12), pytest.approx(slow.high, abs=1e-12))
    assert fast.low < fast.high or score == "mce"  # mce: the worst bin is the same in both models


def registry(records: Records) -> Mapping[str, float]:
    return compute_scores(records)


def registry_interval(cand: Records, base: Records, score: str, *, reps: int, seed: int,
                      confidence: float) -> Interval:
    """Reference: the metrics registry on every resample, via the same bootstrap."""
    def statistic(idx: np.ndarray) -> float:
        one, idx = (score,), np.sort(idx)  # sample order within a resample: confidence ties as gate.decide.intervals
        return compute_scores(cand.take(idx), only=one)[score] - compute_scores(base.take(idx), only=one)[score]

    return paired_bootstrap(statistic, cand.size, reps=reps, seed=seed, confidence=confidence)


def test_scores_once_left_to_the_per_resample_fallback_now_resample_their_form() -> None:
    base = baseline_600()
    cand = flip_correct(base, 10)
    score = "alignment.lift.correct"  # a mean over the correct samples only (until #22: the registry per resample)
    interval = delta_interval(cand, base, score, confidence=0.95, reps=40, seed=0)
    slow = registry_interval(cand, base, score, reps=40, seed=0, confidence=0.95)
    assert (interval.low, interval.high) == (pytest.approx(slow.low, abs=1e-12), pytest.approx(slow.high, abs=1e-12))


@pytest.mark.parametrize("score", ["aurc", "selective_accuracy@0.8"])
@pytest.mark.parametrize("ties", [False, True])
def test_rank_scores_are_paired_rank_forms_equal_to_the_registry_per_resample(score: str, ties: bool) -> None:
    base = baseline_600()
    flipped = flip_correct(base, 10)
    # The candidate ranks the samples differently from the baseline: its confidences are shuffled.
    shuffled = np.random.default_rng(7).permutation(flipped.confidence)
    cand = make_records(flipped.labels, flipped.preds, shuffled, energy=flipped.energy)
    if ties:  # saturated softmax: many confidences exactly 1.0, in both models
        cand, base = (saturated(r, every=3) for r in (cand, base))
        assert (cand.confidence == 1.0).sum() == (base.confidence == 1.0).sum() == 200
    fast = delta_interval(cand, base, score, confidence=0.95, reps=300, seed=4)
    slow = registry_interval(cand, base, score, reps=300, seed=4, confidence=0.95)
    assert (fast.low, fast.high) == (pytest.approx(slow.low, abs=1e-12), pytest.approx(slow.high, abs=1e-12))
    assert fast.low < fast.high


def test_bootstrap_seeded() -> None:
    base = baseline_600()
    cand = flip_correct(base, 10)
    first = delta_interval(cand, base, "nll", confidence=0.95, seed=11)
    assert first == delta_interval(cand, base, "nll", confidence=0.95, seed=11)
    other = delta_interval(cand, base, "nll", confidence=0.95, seed=12)
    assert (first.low, first.high) != (other.low, other.high)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda r: replace(r, ids=(*r.ids[:-2], r.ids[-1], r.ids[-2])), "baseline.ids"),
        (lambda r: r.take(np.arange(r.size - 1)), "baseline.ids"),
        (lambda r: replace(r, classes=("circle", "square", "star", "hex")), "baseline.classes"),
        (lambda r: replace(r, labels=np.roll(r.labels, 1)), "baseline.labels"),
    ],
    ids=["order", "size", "classes", "labels"],
)
def test_mismatched_baseline_is_input_error(change: Callable[[Records], Records], field: str) -> None:
    cand = baseline_600()
    with pytest.raises(InputError, match="baseline") as err:
        compare(cand, change(cand), scores)
    assert err.value.field == field
    assert err.value.exit_code == 2
    with pytest.raises(InputError):
        delta_interval(cand, change(cand), "accuracy", confidence=0.95)
    check_paired(cand, cand)


def test_unknown_or_uncomputed_score_is_policy_error() -> None:
    base = baseline_600()
    with pytest.raises(PolicyError, match="no_such_score"):
        delta_interval(base, base, "no_such_score", confidence=0.95)
    with pytest.raises(PolicyError, match="balanced_accuracy"):  # not among the scores compare() was given
        compare(base, base, scores).interval_for("balanced_accuracy", confidence=0.95)


@pytest.mark.parametrize(
    ("low", "high", "higher", "max_drop", "ok"),
    [
        (-0.01, 0.02, True, 0.01, True),
        (-0.0101, 0.02, True, 0.01, False),
        (-0.02, 0.01, False, 0.01, True),
        (-0.02, 0.0101, False, 0.01, False),
        (math.nan, math.nan, True, 0.01, False),
    ],
    ids=["higher-edge", "higher-below", "lower-edge", "lower-above", "nan"],
)
def test_non_inferior_table(low: float, high: float, higher: bool, max_drop: float, ok: bool) -> None:
    assert non_inferior(Interval(low, high, 0.95), max_drop=max_drop, higher_is_better=higher) is ok


@pytest.mark.parametrize(
    ("low", "high", "higher", "ok"),
    [(0.001, 0.02, True, True), (0.0, 0.02, True, False), (-0.02, -0.001, False, True), (-0.02, 0.0, False, False)],
)
def test_superior_table(low: float, high: float, higher: bool, ok: bool) -> None:
    assert superior(Interval(low, high, 0.95), min_gain=0.0, higher_is_better=higher) is ok


def test_to_json_is_json_safe_and_records_intervals() -> None:
    labels = np.array([0, 0, 1, 1])  # classes "star" and "tri" have no samples: NaN deltas
    base = make_records(labels, np.array([0, 1, 1, 1]), np.full(4, 0.8))
    cand = make_records(labels, np.array([0, 0, 1, 0]), np.full(4, 0.7))
    comparison = compare(cand, base, scores)
    comparison.interval_for("accuracy", confidence=0.95, reps=100)
    doc = json.loads(json.dumps(comparison.result().to_json(), allow_nan=False))
    assert doc["class_deltas"] == {"circle": 0.5, "square": -0.5, "star": None, "tri": None}
    assert doc["deltas"]["delta.alignment.energy"] is None
    assert doc["migration"] == {
        "corrected": 1, "regressed": 1, "still_wrong": 0, "still_right": 2, "still_wrong_confidence_dropped": None
    }
    assert doc["mcnemar_p"] == 1.0
    assert set(doc["intervals"]) == {"delta.accuracy@0.95"}
    assert doc["intervals"]["delta.accuracy@0.95"]["confidence"] == 0.95


def test_interval_for_caches_and_the_result_carries_the_intervals_in_order() -> None:
    base = baseline_600()
    comparison = compare(flip_correct(base, 5), base, registry)
    first = comparison.interval_for("alignment.lift.correct", confidence=0.95, reps=10)
    assert comparison.interval_for("alignment.lift.correct", confidence=0.95, reps=10) is first
    accuracy = comparison.interval_for("accuracy", confidence=0.9, reps=10)
    result = comparison.result()
    assert isinstance(result, Comparison)
    assert [iv.key for iv in result.intervals] == ["delta.alignment.lift.correct@0.95", "delta.accuracy@0.9"]
    found = result.interval("accuracy", 0.9)
    assert found is not None and (found.low, found.high) == (accuracy.low, accuracy.high)
    assert result.interval("accuracy", 0.95) is None

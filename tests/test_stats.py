from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats as sps

from gate.decide import stats
from gate.decide.stats import mcnemar_exact_p, paired_bootstrap, percentile_interval, wilson_interval
from gate.errors import GateError

Z95 = 1.6448536269514722  # one-sided 95%: Φ⁻¹(0.95)


# Published two-sided 95% Wilson intervals (z = 1.96, i.e. one-sided 0.975 per end).
@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [(0, 10, 0.0, 0.2775), (10, 10, 0.7225, 1.0), (45, 50, 0.7864, 0.9565), (5, 10, 0.2366, 0.7634)],
    ids=["0of10", "10of10", "45of50", "5of10"],
)
def test_wilson_matches_published_two_sided_95(successes: int, n: int, low: float, high: float) -> None:
    interval = wilson_interval(successes, n, confidence=0.975)
    assert interval.low == pytest.approx(low, abs=1e-4)
    assert interval.high == pytest.approx(high, abs=1e-4)
    assert interval.two_sided_level == pytest.approx(0.95)


def test_wilson_one_sided_closed_forms() -> None:
    # 0 of n: upper = z²/(n+z²); n of n: lower = n/(n+z²); ends clipped exactly to 0 and 1.
    zero = wilson_interval(0, 10, confidence=0.95)
    assert zero.low == 0.0
    assert zero.high == pytest.approx(Z95**2 / (10 + Z95**2), rel=1e-12)
    full = wilson_interval(10, 10, confidence=0.95)
    assert full.high == 1.0
    assert full.low == pytest.approx(10 / (10 + Z95**2), rel=1e-12)
    assert full.confidence == 0.95


def test_wilson_hand_computed_45_of_50_one_sided() -> None:
    z2 = Z95**2
    centre = (0.9 + z2 / 100) / (1 + z2 / 50)
    half = Z95 * math.sqrt(0.9 * 0.1 / 50 + z2 / 10000) / (1 + z2 / 50)
    interval = wilson_interval(45, 50)
    assert interval.low == pytest.approx(centre - half, rel=1e-12)
    assert interval.high == pytest.approx(centre + half, rel=1e-12)
    assert interval.low == pytest.approx(0.8085, abs=1e-4)  # hand: 0.87947 - 0.07100


def test_wilson_empty_is_nan_and_bad_counts_raise() -> None:
    empty = wilson_interval(0, 0)
    assert math.isnan(empty.low) and math.isnan(empty.high)
    with pytest.raises(GateError, match="successes"):
        wilson_interval(11, 10)
    with pytest.raises(GateError, match="confidence"):
        wilson_interval(1, 10, confidence=1.0)


@pytest.mark.parametrize(
    ("b", "c"), [(0, 0), (0, 1), (1, 0), (3, 3), (5, 12), (12, 5), (0, 18), (40, 60), (230, 200), (1, 1000)]
)
def test_mcnemar_equals_binomtest(b: int, c: int) -> None:
    expected = 1.0 if b + c == 0 else sps.binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact_p(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_mcnemar_hand_value() -> None:
    assert mcnemar_exact_p(0, 18) == pytest.approx(2 * 0.5**18, rel=1e-12)
    assert mcnemar_exact_p(4, 4) == 1.0


def _mean_of(values: np.ndarray) -> Callable[[np.ndarray], float]:
    return lambda idx: float(values[idx].mean())


def test_paired_bootstrap_equals_manual_percentiles() -> None:
    values = np.random.default_rng(5).normal(size=40)
    interval = paired_bootstrap(_mean_of(values), 40, reps=300, seed=7, confidence=0.9)
    idx = np.random.default_rng(7).integers(0, 40, size=(300, 40))
    means = values[idx].mean(axis=1)
    low, high = np.quantile(means, [0.1, 0.9])
    assert interval.low == pytest.approx(low, rel=1e-12)
    assert interval.high == pytest.approx(high, rel=1e-12)
    assert interval.confidence == 0.9


def test_paired_bootstrap_reproducible_per_seed() -> None:
    values = np.random.default_rng(1).normal(size=30)
    first = paired_bootstrap(_mean_of(values), 30, reps=200, seed=3)
    again = paired_bootstrap(_mean_of(values), 30, reps=200, seed=3)
    other = paired_bootstrap(_mean_of(values), 30, reps=200, seed=4)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.low < values.mean() < first.high


def test_paired_bootstrap_drops_nan_resamples() -> None:
    values = np.arange(20, dtype=np.float64)

    def mean_unless_zero_drawn(idx: np.ndarray) -> float:
        return math.nan if (idx == 0).any() else float(values[idx].mean())

    interval = paired_bootstrap(mean_unless_zero_drawn, 20, reps=200, seed=2, confidence=0.95)
    idx = np.random.default_rng(2).integers(0, 20, size=(200, 20))
    keep = ~(idx == 0).any(axis=1)
    assert 0 < keep.sum() < 200  # the case really has NaNs to drop
    low, high = np.quantile(values[idx[keep]].mean(axis=1), [0.05, 0.95])
    assert (interval.low, interval.high) == (pytest.approx(low), pytest.approx(high))


def test_index_chunks_do_not_change_the_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = np.concatenate(list(stats.bootstrap_index_chunks(50, 37, seed=9)))
    monkeypatch.setattr(stats, "_CHUNK_ENTRIES", 50 * 4)  # 4 rows per chunk
    chunks = list(stats.bootstrap_index_chunks(50, 37, seed=9))
    assert len(chunks) == 10
    assert np.array_equal(np.concatenate(chunks), whole)
    assert np.array_equal(whole, np.random.default_rng(9).integers(0, 50, size=(37, 50)))


def test_percentile_interval_all_nan() -> None:
    interval = percentile_interval(np.array([math.nan, math.nan]), 0.95)
    assert math.isnan(interval.low) and math.isnan(interval.high)

"""Pure statistics for gating decisions: Wilson intervals, exact McNemar, paired bootstrap.

What ``confidence`` means, everywhere in xgate: a policy says "at 95% confidence" and means a
one-sided statement ("accuracy is at least 0.90", "at most 1 point below the baseline"). So every
interval here is built so that EACH of its ends is a one-sided bound at level ``confidence``:

- ``interval.low`` is the one-sided lower bound: the truth lies below it with probability at most
  ``1 - confidence`` (for the bootstrap: the ``1 - confidence`` quantile of the resampled statistic);
- ``interval.high`` is the one-sided upper bound at the same level (the ``confidence`` quantile);
- taken together, ``[low, high]`` is a two-sided interval at level ``2 * confidence - 1``
  (``confidence=0.95`` gives a 90% two-sided interval; ask for 0.975 to get the usual two-sided 95%).

A caller therefore passes a rule's ``confidence`` straight through and reads ``low`` (higher is
better) or ``high`` (lower is better); no conversion anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from gate.errors import GateError

# Bootstrap index matrices are drawn in row chunks of at most this many entries (32 MiB of int64),
# so memory stays flat as the review set grows. Chunking does not change the draws: numpy's
# Generator yields the same stream whether the matrix is drawn at once or row-block by row-block.
_CHUNK_ENTRIES = 1 << 22


@dataclass(frozen=True)
class Interval:
    """``[low, high]``; each end is a one-sided bound at level ``confidence`` (see the module docstring)."""

    low: float
    high: float
    confidence: float

    @property
    def two_sided_level(self) -> float:
        """Coverage of ``[low, high]`` taken as a two-sided interval: ``2 * confidence - 1``."""
        return 2.0 * self.confidence - 1.0


def _check_confidence(confidence: float) -> None:
    if not 0.5 <= confidence < 1.0:
        raise GateError(f"expected a confidence in [0.5, 1), got {confidence}", field="confidence")


def z_value(confidence: float) -> float:
    """Standard-normal quantile for a one-sided bound at ``confidence`` (1.645 at 0.95)."""
    _check_confidence(confidence)
    return float(sps.norm.ppf(confidence))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a proportion ``successes / n``.

    Each end is a one-sided bound at ``confidence`` (z = Φ⁻¹(confidence)); ``n == 0`` gives a NaN
    interval (nothing measured, so nothing can be claimed).
    """
    _check_confidence(confidence)
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise GateError(f"expected 0 <= successes <= n, got successes={successes}, n={n}", field="successes")
    if n == 0:
        return Interval(math.nan, math.nan, confidence)
    z = z_value(confidence)
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # Clip the rounding noise at the ends (0 of n must give exactly 0, n of n exactly 1).
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Interval(low, high, confidence)


def mcnemar_exact_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value on the discordant counts ``b`` and ``c``.

    Under H0 each discordant pair goes either way with probability 1/2, so the p-value is the
    two-sided binomial test of ``b`` out of ``b + c``: ``min(1, 2 * P(X <= min(b, c)))``.
    Equals ``scipy.stats.binomtest(b, b + c, 0.5).pvalue``; no discordant pairs gives 1.0.
    """
    if b < 0 or c < 0:
        raise GateError(f"expected non-negative discordant counts, got b={b}, c={c}", field="discordant")
    if b + c == 0:
        return 1.0
    return float(min(1.0, 2.0 * sps.binom.cdf(min(b, c), b + c, 0.5)))


def bootstrap_index_chunks(n: int, reps: int, seed: int) -> Iterator[np.ndarray]:
    """The bootstrap index matrix ``(reps, n)`` of ``Generator(seed).integers(0, n)``, in row blocks.

    Every bootstrap in xgate draws its resamples here, so two statistics computed with the same
    ``n``, ``reps`` and ``seed`` see exactly the same resamples (paired across models and paths).
    """
    if n <= 0 or reps <= 0:
        raise GateError(f"expected n > 0 and reps > 0, got n={n}, reps={reps}", field="reps")
    rng = np.random.default_rng(seed)
    rows_per_chunk = max(1, _CHUNK_ENTRIES // n)
    done = 0
    while done < reps:
        rows = min(rows_per_chunk, reps - done)
        yield rng.integers(0, n, size=(rows, n), dtype=np.int64)
        done += rows


def percentile_interval(values: np.ndarray, confidence: float) -> Interval:
    """``[q(1 - confidence), q(confidence)]`` of ``values`` (NaNs dropped; all NaN gives a NaN interval)."""
    _check_confidence(confidence)
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[~np.isnan(finite)]
    if finite.size == 0:
        return Interval(math.nan, math.nan, confidence)
    low, high = np.quantile(finite, [1.0 - confidence, confidence])
    return Interval(float(low), float(high), confidence)


def paired_bootstrap(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """Percentile bootstrap interval of ``statistic(index)`` over ``reps`` resamples of ``range(n)``.

    ``statistic`` receives the resampled index array, so a caller indexes the paired arrays of two
    models with the same index. NaN results are dropped. Reproducible for a seed; the resamples are
    those of :func:`bootstrap_index_chunks`. Ends are one-sided bounds at ``confidence``.
    """
    _check_confidence(confidence)
    values = [float(statistic(row)) for chunk in bootstrap_index_chunks(n, reps, seed) for row in chunk]
    return percentile_interval(np.asarray(values, dtype=np.float64), confidence)

"""Intervals for scores: Wilson for shares of samples, a seeded vectorised bootstrap for the rest.

``confidence`` means what :mod:`gate.decide.stats` says: each end of an interval is a one-sided bound at that
level, so a ``min`` rule reads ``low`` and a ``max`` rule reads ``high``.

Every score's spec declares its form (:mod:`gate.metrics.spec`). A :class:`SumForm` is per-sample features φ
[n, F] and a ``finish`` that turns sums [r, F] into r values; a bootstrap resample is just a count per sample,
so the sums of all resamples are one matrix product ``counts @ φ`` per chunk of resamples. ``aurc`` and
``selective_accuracy@c`` depend on the order of the samples by confidence, so they are a :class:`RankForm`:
the samples are sorted once (stable, descending), and a resample is its counts in that order (derivation in
:mod:`gate.metrics.classification`). Every path draws its resamples from
:func:`gate.decide.stats.bootstrap_index_chunks`, so a seed gives the same resamples everywhere, and a
candidate and its baseline are resampled together (paired).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from gate.decide import stats
from gate.decide.stats import Interval
from gate.errors import PolicyError
from gate.metrics.registry import spec_of
from gate.metrics.spec import Form, RankForm, SumForm, ratio, ratio_form
from gate.records import Records

DEFAULT_REPS = 2000


def form_of(records: Records, score: str) -> Form:
    """The form of concrete score ``score`` on ``records`` (PolicyError for a name the registry lacks)."""
    try:
        spec = spec_of(score)
    except KeyError:
        raise PolicyError(f"unknown score {score!r}", field="score") from None
    return spec.form_of(records, score)


def difference_form(candidate: SumForm, baseline: SumForm) -> SumForm:
    """``candidate − baseline`` on the same resamples (paired).

    Two ratios over the same weights become one ratio of the differences: integer counts then stay exact
    ((534 − 540) / 600 is exactly −0.01, where 534/600 − 540/600 is not).
    """
    c, b = candidate.features, baseline.features
    if candidate.is_ratio and baseline.is_ratio and np.array_equal(c[:, 1], b[:, 1]):
        return ratio_form(c[:, 0] - b[:, 0], c[:, 1])
    width = c.shape[1]

    def finish(sums: np.ndarray) -> np.ndarray:
        return np.asarray(candidate.finish(sums[:, :width]) - baseline.finish(sums[:, width:]))

    return SumForm(np.concatenate([candidate.total, baseline.total]), finish,
                   lambda: np.concatenate([c, b], axis=1))


def resampled_values(form: SumForm, *, reps: int, seed: int) -> np.ndarray:
    """The form's value on each of ``reps`` bootstrap resamples (those of ``bootstrap_index_chunks``)."""
    features = form.features
    out = [form.finish(counts @ features) for counts in _resampled_counts(features.shape[0], reps, seed)]
    return np.concatenate(out) if out else np.zeros(0)


def _resampled_counts(n: int, reps: int, seed: int) -> Iterator[np.ndarray]:
    """How often each sample is drawn, per resample: [rows, n] per chunk of ``bootstrap_index_chunks``."""
    for idx in stats.bootstrap_index_chunks(n, reps, seed):
        rows = idx.shape[0]
        # One bincount over the flattened (row, sample) ids.
        flat = (idx + (np.arange(rows, dtype=np.int64) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


# The rank forms work on this many counts at a time: their half-dozen temporaries stay at a few MiB each.
_RANK_BLOCK_ENTRIES = 1 << 19


def _count_blocks(n: int, reps: int, seed: int) -> Iterator[np.ndarray]:
    """The resamples' counts [rows, n] in blocks of at most ``_RANK_BLOCK_ENTRIES`` counts."""
    step = max(1, _RANK_BLOCK_ENTRIES // n)
    for counts in _resampled_counts(n, reps, seed):
        for start in range(0, counts.shape[0], step):
            yield counts[start:start + step]


def ranked_values(form: RankForm, *, reps: int, seed: int) -> np.ndarray:
    """The form's value on each of ``reps`` bootstrap resamples (those of ``bootstrap_index_chunks``)."""
    out = [form.finish(block[:, form.order]) for block in _count_blocks(form.order.size, reps, seed)]
    return np.concatenate(out) if out else np.zeros(0)


def paired_ranked_values(candidate: RankForm, baseline: RankForm, *, reps: int, seed: int) -> np.ndarray:
    """``candidate − baseline`` on each of ``reps`` bootstrap resamples, the same resamples for both (paired)."""
    out = [candidate.finish(block[:, candidate.order]) - baseline.finish(block[:, baseline.order])
           for block in _count_blocks(candidate.order.size, reps, seed)]
    return np.concatenate(out) if out else np.zeros(0)


def paired_values(candidate: Form, baseline: Form, *, reps: int, seed: int) -> np.ndarray:
    """``candidate − baseline`` on each of ``reps`` paired bootstrap resamples."""
    if isinstance(candidate, SumForm) and isinstance(baseline, SumForm):
        return resampled_values(difference_form(candidate, baseline), reps=reps, seed=seed)
    if isinstance(candidate, RankForm) and isinstance(baseline, RankForm):  # each model's own order
        return paired_ranked_values(candidate, baseline, reps=reps, seed=seed)
    raise TypeError("a candidate and its baseline have forms of one kind")


@dataclass(frozen=True)
class Bounds:
    """A score's interval and how it was made: ``trials`` is the sample count behind a Wilson interval."""

    interval: Interval
    method: str  # "wilson" | "bootstrap"
    trials: int | None = None


def score_interval(records: Records, score: str, *, confidence: float, reps: int = DEFAULT_REPS,
                   seed: int = 0) -> Bounds:
    """The interval of ``score`` on ``records``: Wilson for a plain share of samples, else the bootstrap."""
    if records.size == 0:
        return Bounds(Interval(math.nan, math.nan, confidence), "bootstrap")
    form = form_of(records, score)
    counts = proportion_counts(form) if spec_of(score).proportion else None
    if counts is not None:
        return Bounds(stats.wilson_interval(counts[0], counts[1], confidence=confidence), "wilson", counts[1])
    if isinstance(form, SumForm):
        values = resampled_values(form, reps=reps, seed=seed)
    else:
        values = ranked_values(form, reps=reps, seed=seed)
    return Bounds(stats.percentile_interval(values, confidence), "bootstrap")


def paired_interval(candidate: Records, baseline: Records, score: str, *, confidence: float,
                    reps: int = DEFAULT_REPS, seed: int = 0) -> Interval:
    """Seeded paired-bootstrap interval of ``score(candidate) − score(baseline)`` on the same resamples."""
    if candidate.size == 0:
        return Interval(math.nan, math.nan, confidence)
    values = paired_values(form_of(candidate, score), form_of(baseline, score), reps=reps, seed=seed)
    return stats.percentile_interval(values, confidence)


def needed_trials(op: str, threshold: float, confidence: float) -> int | None:
    """Fewest samples with which a share can pass ``op threshold`` at ``confidence`` (Wilson), None if none can.

    The best outcome of n samples is n/n for a floor (lower bound n / (n + z²)) and 0/n for a ceiling
    (upper bound z² / (n + z²)).
    """
    z2 = stats.z_value(confidence) ** 2
    if op == ">=":
        return None if threshold >= 1.0 else max(1, math.ceil(threshold * z2 / (1.0 - threshold) - 1e-9))
    return None if threshold <= 0.0 else max(1, math.ceil(z2 * (1.0 - threshold) / threshold - 1e-9))


def decidability(op: str, threshold: float, bounds: Bounds) -> tuple[bool, str]:
    """Whether the review set can settle ``op threshold`` at the interval's confidence, and a note if not.

    Not decidable: a share whose best possible outcome on this many samples still cannot pass, or an
    interval that holds the threshold (neither shown to pass nor shown to fail).
    """
    interval = bounds.interval
    level = f"{interval.confidence:.0%}"
    if bounds.trials is not None:
        need = needed_trials(op, threshold, interval.confidence)
        if need is None or bounds.trials < need:
            wanted = "no number of samples can" if need is None else f"needs at least {need}"
            return False, f"review set too small: cannot pass at {level} with {bounds.trials} samples ({wanted})"
    low, high = interval.low, interval.high
    if math.isnan(low) or math.isnan(high):
        return False, f"undecided at {level}: no interval (too few samples)"
    shown_pass = low >= threshold if op == ">=" else high <= threshold
    shown_fail = high < threshold if op == ">=" else low > threshold
    if shown_pass or shown_fail:
        return True, ""
    return False, f"undecided at {level}: [{low:.4g}, {high:.4g}] holds {threshold:g}; more samples could decide it"


def proportion_counts(form: Form) -> tuple[int, int] | None:
    """(successes, trials) behind a form that is a plain share of samples (0/1 over 0/1); else None."""
    if not isinstance(form, SumForm) or form.finish is not ratio:
        return None
    num, weight = form.features[:, 0], form.features[:, 1]
    # A mean of lifts is not a share of samples.
    if not (np.isin(num, (0.0, 1.0)).all() and np.isin(weight, (0.0, 1.0)).all()):
        return None
    return int(num.sum()), int(weight.sum())

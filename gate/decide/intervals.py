"""Intervals for scores: Wilson for shares of samples, a seeded vectorised bootstrap for the rest.

``confidence`` means what :mod:`gate.decide.stats` says: each end of an interval is a one-sided bound at that
level, so a ``min`` rule reads ``low`` and a ``max`` rule reads ``high``.

Most scores are a function of a few sums over samples: a mean is Σ num / Σ weight, ECE and its kin are
functions of per-bin sums (count, correct, confidence), balanced and worst-class accuracy of per-class
sums. Such a score is a :class:`SumForm` (per-sample features φ [n, F] and a ``finish`` that turns the
sums [r, F] into r values), and a bootstrap resample is just a count per sample: the sums of all
resamples are one matrix product ``counts @ φ`` per chunk of resamples.

``aurc`` and ``selective_accuracy@c`` depend on the order of the samples by confidence, so they are a
:class:`RankForm` instead: the samples are sorted once (stable, descending), and a resample is its counts in
that order. With ``c_i`` copies of sample i, ``S`` the cumulative counts and ``E`` the cumulative errors,
sample i fills positions ``S_{i-1}+1 .. S_i`` of the sorted resample, where the running error count is
``E_{i-1} + e_i (k − S_{i-1})``; summing risk ``/ k`` over that block gives
``(E_{i-1} − e_i S_{i-1}) (H(S_i) − H(S_{i-1})) + e_i c_i`` (H: harmonic numbers), and AURC is the sum over
i divided by N. Selective accuracy keeps whole samples while ``S_i ≤ keep`` and part of the boundary one.

A form is used only when it reproduces the registry's value on the full set; otherwise the bootstrap calls
the score function on every resample, with the resample's indices sorted: a resample is a multiset, so
that changes nothing but the order of equal confidences, which then falls in original-index order as on
the rank forms' path (the two agree exactly, ties included). Every path draws its resamples from
:func:`gate.decide.stats.bootstrap_index_chunks`, so a seed gives the same resamples everywhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np

from gate.decide import stats
from gate.decide.stats import Interval
from gate.records import SWAP_VARIANTS, Records

ScoreFn = Callable[[Records], Mapping[str, float]]

# A form is used only when its full-set value reproduces the registry's (float32 probabilities leave
# ~1e-7 of noise in nll/brier).
AGREE_RTOL = 1e-6
AGREE_ATOL = 1e-9
DEFAULT_REPS = 2000


@dataclass(frozen=True)
class SumForm:
    """A score as ``finish(Σ_i w_i φ_i)``: per-sample features [n, F] and the map from sums [r, F] to [r]."""

    features: np.ndarray
    finish: Callable[[np.ndarray], np.ndarray]

    def value(self) -> float:
        """The score on the full set (every weight 1)."""
        return float(self.finish(self.features.sum(axis=0, keepdims=True))[0])


def _ratio(sums: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(sums[:, 0] / sums[:, 1])


def ratio_form(num: np.ndarray, weight: np.ndarray) -> SumForm:
    """Σ num / Σ weight (a mean, or a share of the samples with weight 1)."""
    return SumForm(np.stack([np.asarray(num, np.float64), np.asarray(weight, np.float64)], axis=1), _ratio)


def difference_form(candidate: SumForm, baseline: SumForm) -> SumForm:
    """``candidate − baseline`` on the same resamples (paired).

    Two ratios over the same weights become one ratio of the differences: integer counts then stay exact
    ((534 − 540) / 600 is exactly −0.01, where 534/600 − 540/600 is not).
    """
    c, b = candidate.features, baseline.features
    if candidate.finish is _ratio and baseline.finish is _ratio and np.array_equal(c[:, 1], b[:, 1]):
        return ratio_form(c[:, 0] - b[:, 0], c[:, 1])
    width = c.shape[1]

    def finish(sums: np.ndarray) -> np.ndarray:
        return np.asarray(candidate.finish(sums[:, :width]) - baseline.finish(sums[:, width:]))

    return SumForm(np.concatenate([c, b], axis=1), finish)


def resampled_values(form: SumForm, *, reps: int, seed: int) -> np.ndarray:
    """The form's value on each of ``reps`` bootstrap resamples (those of ``bootstrap_index_chunks``)."""
    n = form.features.shape[0]
    out = [form.finish(sums) for sums in _resampled_sums(form.features, n, reps, seed)]
    return np.concatenate(out) if out else np.zeros(0)


def _resampled_sums(features: np.ndarray, n: int, reps: int, seed: int) -> Iterator[np.ndarray]:
    for counts in _resampled_counts(n, reps, seed):
        yield counts @ features


def _resampled_counts(n: int, reps: int, seed: int) -> Iterator[np.ndarray]:
    """How often each sample is drawn, per resample: [rows, n] per chunk of ``bootstrap_index_chunks``."""
    for idx in stats.bootstrap_index_chunks(n, reps, seed):
        rows = idx.shape[0]
        # One bincount over the flattened (row, sample) ids.
        flat = (idx + (np.arange(rows, dtype=np.int64) * n)[:, None]).ravel()
        yield np.bincount(flat, minlength=rows * n).reshape(rows, n).astype(np.float64)


# The rank forms work on this many counts at a time: their half-dozen temporaries stay at a few MiB each.
_RANK_BLOCK_ENTRIES = 1 << 19


@dataclass(frozen=True)
class RankForm:
    """A score of the samples in confidence order: ``finish`` maps counts [r, n], in ``order``, to [r]."""

    order: np.ndarray
    finish: Callable[[np.ndarray], np.ndarray]

    def value(self) -> float:
        """The score on the full set (every count 1)."""
        return float(self.finish(np.ones((1, self.order.size)))[0])


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


def rank_form(records: Records, score: str) -> RankForm | None:
    """``aurc`` or ``selective_accuracy@c`` as a :class:`RankForm` (see the module docstring), else None."""
    # The score functions' own order: equal confidences stay in index order.
    order = np.argsort(-records.confidence, kind="stable")
    correct = records.correct[order].astype(np.float64)
    if score == "aurc":
        return RankForm(order, partial(_aurc, 1.0 - correct, _harmonic(records.size)))
    if score.startswith("selective_accuracy@"):
        return RankForm(order, partial(_selective_accuracy, correct, float(score.split("@", 1)[1])))
    return None


def _harmonic(n: int) -> np.ndarray:
    """H(0..n): H(k) = 1 + 1/2 + ... + 1/k."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])


def _aurc(errors: np.ndarray, harmonic: np.ndarray, counts: np.ndarray) -> np.ndarray:
    # Per sample: (E_{i-1} − e_i S_{i-1}) (H(S_i) − H(S_{i-1})) + e_i c_i, derived in the module docstring.
    drawn = counts.cumsum(axis=1)
    before = drawn - counts
    weighted = counts * errors
    errors_before = weighted.cumsum(axis=1) - weighted
    span = harmonic[drawn.astype(np.int64)] - harmonic[before.astype(np.int64)]
    return np.asarray(((errors_before - errors * before) * span + weighted).sum(axis=1) / drawn[:, -1])


def _selective_accuracy(correct: np.ndarray, coverage: float, counts: np.ndarray) -> np.ndarray:
    # np.round rounds half to even, as the score function's round() does.
    keep = np.maximum(1.0, np.round(coverage * counts.sum(axis=1)))[:, None]
    before = counts.cumsum(axis=1) - counts
    kept = np.clip(keep - before, 0.0, counts)
    return np.asarray((kept * correct).sum(axis=1) / keep[:, 0])


@dataclass(frozen=True)
class Bounds:
    """A score's interval and how it was made: ``trials`` is the sample count behind a Wilson interval."""

    interval: Interval
    method: str  # "wilson" | "bootstrap"
    trials: int | None = None


def score_interval(
    records: Records,
    score: str,
    score_fn: ScoreFn,
    *,
    confidence: float,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    proportion: bool = False,
) -> Bounds:
    """The interval of ``score`` on ``records``: Wilson for a plain share of samples, else the bootstrap."""
    if records.size == 0:
        return Bounds(Interval(math.nan, math.nan, confidence), "bootstrap")
    one_score = only_score(score_fn, score)
    full = float(one_score(records).get(score, math.nan))
    form = agreeing_form(records, score, full)
    counts = proportion_counts(form) if proportion and form is not None else None
    if counts is not None:
        return Bounds(stats.wilson_interval(counts[0], counts[1], confidence=confidence), "wilson", counts[1])
    if form is not None:
        values = resampled_values(form, reps=reps, seed=seed)
        return Bounds(stats.percentile_interval(values, confidence), "bootstrap")
    ranked = agreeing_rank_form(records, score, full)
    if ranked is not None:
        values = ranked_values(ranked, reps=reps, seed=seed)
        return Bounds(stats.percentile_interval(values, confidence), "bootstrap")

    def statistic(index: np.ndarray) -> float:
        # Sorted: equal confidences then fall in original-index order, as on the rank forms' path.
        return float(one_score(records.take(np.sort(index)))[score])

    interval = stats.paired_bootstrap(statistic, records.size, reps=reps, seed=seed, confidence=confidence)
    return Bounds(interval, "bootstrap")


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


def only_score(score_fn: ScoreFn, score: str) -> ScoreFn:
    """``score_fn`` restricted to one score when it takes ``only=`` (the registry's does): a bootstrap calls it
    thousands of times, and computing every other score each time would be wasted."""
    keywords = getattr(score_fn, "keywords", None)
    if keywords is not None and "probes" in keywords:
        return partial(score_fn, only=(score,))  # type: ignore[call-arg]
    return score_fn


def agreeing_form(records: Records, score: str, full_value: float) -> SumForm | None:
    """The score's sum form, or None when unknown or when it does not reproduce ``full_value``."""
    form = sum_form(records, score)
    if form is None or records.size == 0:
        return None
    return form if _agrees(form.value(), full_value) else None


def agreeing_rank_form(records: Records, score: str, full_value: float) -> RankForm | None:
    """The score's rank form, or None when unknown or when it does not reproduce ``full_value``."""
    form = rank_form(records, score) if records.size else None
    return form if form is not None and _agrees(form.value(), full_value) else None


def _agrees(value: float, full_value: float) -> bool:
    if math.isnan(value) and math.isnan(full_value):
        return True
    return math.isclose(value, full_value, rel_tol=AGREE_RTOL, abs_tol=AGREE_ATOL)


def sum_form(records: Records, score: str) -> SumForm | None:
    """Per-sample features of ``score`` (see the module docstring), or None when it has none here."""
    group = score.split(".", 1)[0]
    if group == "alignment":
        return _alignment_form(records, score)
    if group == "background":
        return _background_form(records, score)
    if group in SWAP_VARIANTS and group in records.probe_preds:
        from gate.metrics import swaps  # numpy-only, like every metric

        return ratio_form(*swaps.features(records, score))
    if score == "sanity.randomization_similarity" and records.sanity_similarity is not None:
        return _nan_mean_form(records.sanity_similarity)
    if score in ("ece", "overconfidence_error", "mce"):
        return _calibration_form(records, score)
    if score in ("balanced_accuracy", "worst_class_accuracy"):
        return _class_form(records, score)
    return _classification_form(records, score)


def _mean_form(values: np.ndarray) -> SumForm:
    values = np.asarray(values, dtype=np.float64)
    return ratio_form(values, np.ones_like(values))


def _nan_mean_form(values: np.ndarray) -> SumForm:
    """Mean over finite values; a 2-D table (samples × copies) pools each sample's row."""
    values = np.asarray(values, dtype=np.float64)
    valid = ~np.isnan(values)
    num, weight = np.where(valid, values, 0.0), valid.astype(np.float64)
    if values.ndim == 2:
        num, weight = num.sum(axis=1), weight.sum(axis=1)
    return ratio_form(num, weight)


def _classification_form(records: Records, score: str) -> SumForm | None:
    correct = records.correct
    if score == "accuracy":
        return _mean_form(correct)
    if score == "nll":
        from gate.metrics.classification import EPS

        p_true = records.probs[np.arange(records.size), records.labels].astype(np.float64)
        return _mean_form(-np.log(np.clip(p_true, EPS, 1.0)))
    if score == "brier":
        return _mean_form(records.squared_error)
    if score.startswith("confident_wrong_rate@"):
        threshold = np.float32(float(score.split("@", 1)[1]))
        return _mean_form(~correct & (records.confidence >= threshold))
    if score == "mean_confidence_wrong":
        return ratio_form(records.confidence * ~correct, (~correct).astype(np.float64))
    if score.startswith("class_accuracy."):
        name = score.split(".", 1)[1]
        if name not in records.classes:
            return None
        in_class = records.labels == records.classes.index(name)
        return ratio_form((correct & in_class).astype(np.float64), in_class.astype(np.float64))
    return None


def _calibration_form(records: Records, score: str) -> SumForm:
    """Per-bin sums (count, correct, confidence) on the registry's bins; a sample's bin never moves."""
    from gate.metrics.classification import calibration_bin_index

    confidence = records.confidence.astype(np.float64)
    index = calibration_bin_index(confidence)
    bins = int(index.max(initial=0)) + 1
    onehot = np.zeros((records.size, bins))
    onehot[np.arange(records.size), index] = 1.0
    features = np.concatenate([onehot, onehot * records.correct[:, None], onehot * confidence[:, None]], axis=1)

    def finish(sums: np.ndarray) -> np.ndarray:
        count, acc_sum, conf_sum = sums[:, :bins], sums[:, bins : 2 * bins], sums[:, 2 * bins :]
        total = count.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            if score == "ece":
                return np.asarray(np.abs(acc_sum - conf_sum).sum(axis=1) / total)
            if score == "overconfidence_error":
                over = np.where(count > 0, conf_sum * np.maximum(conf_sum - acc_sum, 0.0) / count, 0.0)
                return np.asarray(over.sum(axis=1) / total)
            gaps = np.where(count > 0, np.abs(acc_sum - conf_sum) / np.maximum(count, 1.0), -np.inf)
            return np.where(total > 0, gaps.max(axis=1), np.nan)

    return SumForm(features, finish)


def _class_form(records: Records, score: str) -> SumForm:
    """Per-class sums (count, correct): balanced accuracy is their mean, worst-class their minimum."""
    classes = len(records.classes)
    onehot = np.zeros((records.size, classes))
    onehot[np.arange(records.size), records.labels] = 1.0
    features = np.concatenate([onehot, onehot * records.correct[:, None]], axis=1)

    def finish(sums: np.ndarray) -> np.ndarray:
        count, correct = sums[:, :classes], sums[:, classes:]
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(count > 0, correct / np.maximum(count, 1.0), np.nan)
        present = count > 0
        if score == "balanced_accuracy":
            return np.asarray(np.nansum(acc, axis=1) / np.maximum(present.sum(axis=1), 1))
        return np.asarray(np.where(present, acc, np.inf).min(axis=1))

    return SumForm(features, finish)


def _alignment_form(records: Records, score: str) -> SumForm | None:
    lift = records.lift
    per_sample = {
        "alignment.energy": records.energy,
        "alignment.lift": lift,
        "alignment.pointing_game": records.pointing_hit,
        "alignment.rank_accuracy": records.rank_accuracy,
        "alignment.off_object_rate": np.where(np.isnan(lift), np.nan, (lift < 1.0).astype(np.float64)),
    }
    if score == "alignment.coverage":
        return _mean_form(~np.isnan(records.energy))
    return _nan_mean_form(per_sample[score]) if score in per_sample else None


def _background_form(records: Records, score: str) -> SumForm | None:
    preds = records.probe_preds
    masked = records.masked.astype(np.float64)
    if score == "background.bg_gap" and {"mixed_same", "mixed_rand"} <= preds.keys():
        same = preds["mixed_same"] == records.labels
        rand = preds["mixed_rand"] == records.labels
        return ratio_form((same.astype(np.float64) - rand.astype(np.float64)) * masked, masked)
    if score == "background.flip_rate" and "mixed_rand" in preds:
        return ratio_form((preds["mixed_rand"] != records.preds) * masked, masked)
    variant = score.removeprefix("background.").removesuffix("_accuracy")
    if score.endswith("_accuracy") and variant in preds:
        return ratio_form((preds[variant] == records.labels) * masked, masked)
    return None


def proportion_counts(form: SumForm) -> tuple[int, int] | None:
    """(successes, trials) behind a form that is a plain share of samples (0/1 over 0/1); else None."""
    if form.finish is not _ratio:
        return None
    num, weight = form.features[:, 0], form.features[:, 1]
    # bg_gap's −1 terms or a mean of lifts are not shares of samples.
    if not (np.isin(num, (0.0, 1.0)).all() and np.isin(weight, (0.0, 1.0)).all()):
        return None
    return int(num.sum()), int(weight.sum())

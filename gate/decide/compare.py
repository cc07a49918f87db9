"""Candidate versus baseline on the same review set: paired, per sample.

Both models ran on the same samples, so every comparison here is paired: score deltas, sample
migration (corrected / regressed), per-class deltas, an exact McNemar test on the discordant
samples, and seeded paired-bootstrap intervals for ``delta.<score>`` that non-inferiority and
superiority rules read. Scores come from a ``score_fn`` passed in (the metrics registry, partially
applied), so this module does not depend on the registry.

``confidence`` has the meaning documented in :mod:`gate.decide.stats`: each end of an interval is a
one-sided bound at that level.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gate.decide import intervals
from gate.decide.intervals import only_score
from gate.decide.stats import Interval, mcnemar_exact_p, paired_bootstrap, percentile_interval
from gate.errors import GateError, InputError, PolicyError
from gate.records import Records
from gate.result import json_number

ScoreFn = Callable[[Records], Mapping[str, float]]

# Ties at a rule's boundary count as on it: a delta of exactly -0.01 computed in floating point
# (e.g. 534/600 - 540/600) must not fail "max_drop: 0.01" by 1e-17.
_BOUNDARY_TOL = 1e-12


@dataclass(frozen=True)
class Migration:
    """How samples moved between the baseline's and the candidate's predictions."""

    corrected: int  # baseline wrong, candidate right
    regressed: int  # baseline right, candidate wrong
    still_wrong: int
    still_right: int
    still_wrong_confidence_dropped: float  # share of still-wrong whose top confidence dropped; NaN if none


@dataclass(frozen=True)
class Comparison:
    """The candidate against the baseline. ``intervals`` fills as rules ask for them (:meth:`interval_for`)."""

    deltas: Mapping[str, float]  # "delta.<score>" -> candidate - baseline, for every score both have
    candidate_scores: Mapping[str, float]
    baseline_scores: Mapping[str, float]
    migration: Migration
    class_deltas: Mapping[str, float]  # class name -> candidate - baseline accuracy on that class
    mcnemar_p: float
    # "delta.<score>@<confidence>" -> interval; a cache filled by interval_for, recorded for the report.
    intervals: dict[str, Interval] = field(default_factory=dict)
    candidate: Records | None = field(default=None, repr=False, compare=False)
    baseline: Records | None = field(default=None, repr=False, compare=False)
    score_fn: ScoreFn | None = field(default=None, repr=False, compare=False)

    def interval_for(self, score: str, *, confidence: float, reps: int = 2000, seed: int = 0) -> Interval:
        """Paired-bootstrap interval of ``delta.<score>``, computed once and recorded in ``intervals``."""
        key = f"delta.{score}@{confidence:g}"
        if key not in self.intervals:
            if self.candidate is None or self.baseline is None or self.score_fn is None:
                raise GateError("this comparison was built without records; use gate.decide.compare.compare", field=key)
            self.intervals[key] = _delta_interval(
                self.candidate, self.baseline, score, self.score_fn,
                scores=(self.candidate_scores, self.baseline_scores),
                confidence=confidence, reps=reps, seed=seed,
            )
        return self.intervals[key]

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form for result.json and the report (NaN becomes null)."""
        migration = {k: json_number(v) if isinstance(v, float) else v for k, v in vars(self.migration).items()}
        return {
            "deltas": _json_map(self.deltas),
            "candidate_scores": _json_map(self.candidate_scores),
            "baseline_scores": _json_map(self.baseline_scores),
            "migration": migration,
            "class_deltas": _json_map(self.class_deltas),
            "mcnemar_p": json_number(self.mcnemar_p),
            "intervals": {
                key: {"low": json_number(iv.low), "high": json_number(iv.high), "confidence": iv.confidence}
                for key, iv in self.intervals.items()
            },
        }


def compare(candidate: Records, baseline: Records, score_fn: ScoreFn) -> Comparison:
    """Compare ``candidate`` with ``baseline`` on the same review set.

    Raises InputError when the two did not run on the same samples (ids, order, classes, labels).
    """
    check_paired(candidate, baseline)
    cand_scores = dict(score_fn(candidate))
    base_scores = dict(score_fn(baseline))
    migration = sample_migration(candidate, baseline)
    return Comparison(
        deltas={f"delta.{k}": float(v) - float(base_scores[k]) for k, v in cand_scores.items() if k in base_scores},
        candidate_scores=cand_scores,
        baseline_scores=base_scores,
        migration=migration,
        class_deltas=class_accuracy_deltas(candidate, baseline),
        mcnemar_p=mcnemar_exact_p(migration.regressed, migration.corrected),
        candidate=candidate,
        baseline=baseline,
        score_fn=score_fn,
    )


def check_paired(candidate: Records, baseline: Records) -> None:
    """Raise InputError unless both ran on the same samples, in the same order, with the same classes."""
    if tuple(baseline.classes) != tuple(candidate.classes):
        raise InputError(
            f"baseline classes {list(baseline.classes)} differ from the candidate's {list(candidate.classes)}",
            field="baseline.classes",
        )
    if baseline.size != candidate.size:
        raise InputError(
            f"baseline has {baseline.size} samples, the candidate {candidate.size}", field="baseline.ids"
        )
    for i, (b_id, c_id) in enumerate(zip(baseline.ids, candidate.ids, strict=True)):
        if b_id != c_id:
            raise InputError(
                f"baseline sample {i} is {b_id!r}, the candidate's is {c_id!r} (same ids in the same order needed)",
                field="baseline.ids",
            )
    if not np.array_equal(baseline.labels, candidate.labels):
        first = int(np.flatnonzero(baseline.labels != candidate.labels)[0])
        raise InputError(
            f"baseline label of {baseline.ids[first]!r} differs from the candidate's", field="baseline.labels"
        )


def sample_migration(candidate: Records, baseline: Records) -> Migration:
    """Per-sample moves between baseline and candidate (right/wrong and confidence on still-wrong)."""
    cand_ok, base_ok = candidate.correct, baseline.correct
    still_wrong = ~cand_ok & ~base_ok
    n_still_wrong = int(still_wrong.sum())
    dropped = candidate.confidence[still_wrong] < baseline.confidence[still_wrong]
    return Migration(
        corrected=int((cand_ok & ~base_ok).sum()),
        regressed=int((~cand_ok & base_ok).sum()),
        still_wrong=n_still_wrong,
        still_right=int((cand_ok & base_ok).sum()),
        still_wrong_confidence_dropped=float(dropped.mean()) if n_still_wrong else math.nan,
    )


def class_accuracy_deltas(candidate: Records, baseline: Records) -> dict[str, float]:
    """Candidate minus baseline accuracy per class name (NaN for a class with no samples)."""
    deltas: dict[str, float] = {}
    for k, name in enumerate(candidate.classes):
        in_class = candidate.labels == k
        if not in_class.any():
            deltas[name] = math.nan
            continue
        deltas[name] = float(candidate.correct[in_class].mean() - baseline.correct[in_class].mean())
    return deltas


def delta_interval(
    candidate: Records,
    baseline: Records,
    score: str,
    score_fn: ScoreFn,
    *,
    confidence: float,
    reps: int = 2000,
    seed: int = 0,
) -> Interval:
    """Seeded paired-bootstrap interval of ``score(candidate) - score(baseline)``.

    Each resample indexes both models with the same rows. Scores with a sum form (means and shares,
    ECE/OE/MCE, balanced and worst-class accuracy: :mod:`gate.decide.intervals`) are bootstrapped vectorised,
    after checking that the form reproduces ``score_fn`` on the full set; any other score (aurc, ...)
    calls ``score_fn`` on every resample. Both paths see the same resamples for the same seed.
    """
    check_paired(candidate, baseline)
    scores = (score_fn(candidate), score_fn(baseline))
    return _delta_interval(
        candidate, baseline, score, score_fn, scores=scores, confidence=confidence, reps=reps, seed=seed
    )


def non_inferior(interval: Interval, *, max_drop: float, higher_is_better: bool) -> bool:
    """The candidate is at most ``max_drop`` worse than the baseline at the interval's confidence.

    Higher is better: passes when ``interval.low >= -max_drop``; lower is better: when
    ``interval.high <= +max_drop``. A NaN interval never passes.
    """
    if higher_is_better:
        return bool(interval.low >= -max_drop - _BOUNDARY_TOL)
    return bool(interval.high <= max_drop + _BOUNDARY_TOL)


def superior(interval: Interval, *, min_gain: float, higher_is_better: bool) -> bool:
    """The candidate is better than the baseline by more than ``min_gain`` at the interval's confidence.

    Strict, so that identical models (interval ``[0, 0]``) are never superior at ``min_gain=0``.
    Higher is better: ``interval.low > min_gain``; lower is better: ``interval.high < -min_gain``.
    """
    if higher_is_better:
        return bool(interval.low > min_gain + _BOUNDARY_TOL)
    return bool(interval.high < -min_gain - _BOUNDARY_TOL)


def _delta_interval(
    candidate: Records,
    baseline: Records,
    score: str,
    score_fn: ScoreFn,
    *,
    scores: tuple[Mapping[str, float], Mapping[str, float]],
    confidence: float,
    reps: int,
    seed: int,
) -> Interval:
    if score not in scores[0] or score not in scores[1]:
        raise PolicyError(f"score {score!r} is not computed for both the candidate and the baseline", field="score")
    if candidate.size == 0:
        return Interval(math.nan, math.nan, confidence)
    cand_form = intervals.agreeing_form(candidate, score, scores[0][score])
    base_form = intervals.agreeing_form(baseline, score, scores[1][score])
    if cand_form is not None and base_form is not None:
        paired = intervals.difference_form(cand_form, base_form)
        return percentile_interval(intervals.resampled_values(paired, reps=reps, seed=seed), confidence)
    cand_rank = intervals.agreeing_rank_form(candidate, score, scores[0][score])
    base_rank = intervals.agreeing_rank_form(baseline, score, scores[1][score])
    if cand_rank is not None and base_rank is not None:  # aurc, selective_accuracy@c: each model's own order
        values = intervals.paired_ranked_values(cand_rank, base_rank, reps=reps, seed=seed)
        return percentile_interval(values, confidence)

    one_score = only_score(score_fn, score)

    def statistic(index: np.ndarray) -> float:
        # Sorted as in gate.decide.intervals: order-dependent scores (aurc) then break confidence ties by sample order.
        ordered = np.sort(index)
        return float(one_score(candidate.take(ordered))[score]) - float(one_score(baseline.take(ordered))[score])

    return paired_bootstrap(statistic, candidate.size, reps=reps, seed=seed, confidence=confidence)


def _json_map(values: Mapping[str, float]) -> dict[str, float | None]:
    return {k: json_number(float(v)) for k, v in values.items()}

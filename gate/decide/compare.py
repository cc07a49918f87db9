"""Candidate versus baseline on the same review set: paired, per sample.

Both models ran on the same samples, so every comparison here is paired: score deltas, sample
migration (corrected / regressed), per-class deltas, an exact McNemar test on the discordant
samples, and seeded paired-bootstrap intervals for ``delta.<score>`` that non-inferiority and
superiority rules read (each score's spec gives the form that is resampled: :mod:`gate.decide.intervals`).
What the outputs read is the frozen :class:`gate.result.Comparison` that :meth:`Pairing.result` makes.

``confidence`` has the meaning documented in :mod:`gate.decide.stats`: each end of an interval is a
one-sided bound at that level.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from gate.decide import intervals
from gate.decide.stats import Interval, mcnemar_exact_p
from gate.errors import InputError, PolicyError
from gate.metrics.classification import per_class_accuracy
from gate.records import Records
from gate.result import Comparison, DeltaInterval, Migration

ScoreFn = Callable[[Records], Mapping[str, float]]

# Ties at a rule's boundary count as on it: a delta of exactly -0.01 computed in floating point
# (e.g. 534/600 - 540/600) must not fail "max_drop: 0.01" by 1e-17.
_BOUNDARY_TOL = 1e-12


@dataclass(frozen=True)
class Pairing:
    """The candidate and the baseline on the same samples; intervals are computed as rules ask for them."""

    candidate: Records = field(repr=False)
    baseline: Records = field(repr=False)
    candidate_scores: Mapping[str, float]
    baseline_scores: Mapping[str, float]
    # (score, confidence) -> interval; a cache filled by interval_for, in the order the rules asked.
    computed: dict[tuple[str, float], Interval] = field(default_factory=dict)

    @property
    def deltas(self) -> dict[str, float]:
        """``"delta.<score>"`` -> candidate − baseline, for every score both have."""
        base = self.baseline_scores
        return {f"delta.{k}": float(v) - float(base[k]) for k, v in self.candidate_scores.items() if k in base}

    def interval_for(self, score: str, *, confidence: float, reps: int = 2000, seed: int = 0) -> Interval:
        """Paired-bootstrap interval of ``delta.<score>``, computed once and recorded for the outputs."""
        key = (score, confidence)
        if key not in self.computed:
            if score not in self.candidate_scores or score not in self.baseline_scores:
                raise PolicyError(f"score {score!r} is not computed for both the candidate and the baseline",
                                  field="score")
            self.computed[key] = intervals.paired_interval(self.candidate, self.baseline, score,
                                                            confidence=confidence, reps=reps, seed=seed)
        return self.computed[key]

    def result(self) -> Comparison:
        """The comparison as the result carries it (with every interval computed so far)."""
        migration = sample_migration(self.candidate, self.baseline)
        return Comparison(
            deltas=self.deltas,
            candidate_scores=dict(self.candidate_scores),
            baseline_scores=dict(self.baseline_scores),
            migration=migration,
            class_deltas=class_accuracy_deltas(self.candidate, self.baseline),
            mcnemar_p=mcnemar_exact_p(migration.regressed, migration.corrected),
            intervals=tuple(DeltaInterval(score, confidence, iv.low, iv.high)
                            for (score, confidence), iv in self.computed.items()),
        )


def compare(candidate: Records, baseline: Records, score_fn: ScoreFn) -> Pairing:
    """Pair ``candidate`` with ``baseline`` on the same review set, with both models' scores from ``score_fn``.

    Raises InputError when the two did not run on the same samples (ids, order, classes, labels).
    """
    check_paired(candidate, baseline)
    return Pairing(candidate, baseline, dict(score_fn(candidate)), dict(score_fn(baseline)))


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
    deltas = per_class_accuracy(candidate) - per_class_accuracy(baseline)
    return {name: float(delta) for name, delta in zip(candidate.classes, deltas, strict=True)}


def delta_interval(candidate: Records, baseline: Records, score: str, *, confidence: float, reps: int = 2000,
                   seed: int = 0) -> Interval:
    """Seeded paired-bootstrap interval of ``score(candidate) - score(baseline)`` (same resamples for both)."""
    check_paired(candidate, baseline)
    return intervals.paired_interval(candidate, baseline, score, confidence=confidence, reps=reps, seed=seed)


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

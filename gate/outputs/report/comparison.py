"""The report's comparison with the baseline: migration, per-score and per-class deltas, gated rows, intervals.

Frozen views the templates read, built from one candidate's :class:`gate.result.Comparison`; every number is
formatted here, once. The rest of the page's context is in ``gate.outputs.report.context``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from gate.metrics.registry import get_spec, number
from gate.outputs.report.classes import present_deltas, worst_deltas
from gate.outputs.report.formatting import fmt, fmt_signed
from gate.outputs.sentences import BASELINE_OPS, change, decision, unit_of, warning_sentence
from gate.result import Comparison, DeltaInterval, Migration, RuleResult

MIGRATION_LABELS: tuple[tuple[str, str], ...] = (
    ("corrected", "corrected (baseline wrong, candidate right)"),
    ("regressed", "regressed (baseline right, candidate wrong)"),
    ("still_wrong", "still wrong"),
    ("still_right", "still right"),
)


@dataclass(frozen=True)
class DeltaRow:
    """A signed difference versus the baseline; ``good`` says whether it is an improvement."""

    name: str
    value: str
    good: bool | None  # None: no change or direction unknown
    candidate: str = ""  # the candidate's value, in the score's unit
    baseline: str = ""  # the baseline's value
    interval: str = ""  # the change's interval, where one was computed ("[-1.4 pts, +0.4 pts] at 95%")
    verdict: str = ""  # gated rows: passed | failed | undecided; warnings: "warning"


@dataclass(frozen=True)
class GatedRow:
    """A comparison a rule gates: both models' values, the change with its interval, and the rule's outcome."""

    rule_id: str
    score: str
    candidate: str
    baseline: str
    change: str
    interval: str
    state: str  # passed | failed | undecided
    decision: str


@dataclass(frozen=True)
class ComparisonView:
    """A candidate against the baseline: migration, McNemar, per-class and per-score deltas, intervals."""

    migration: tuple[tuple[str, str], ...]
    mcnemar_p: str
    class_deltas: tuple[DeltaRow, ...]
    deltas: tuple[DeltaRow, ...]
    intervals: tuple[tuple[str, str], ...]
    class_deltas_total: int = 0  # classes with a delta; more than shown when the worst are picked
    gated: tuple[GatedRow, ...] = ()  # the vs_baseline rules, for the box on the first screen
    warnings: tuple[str, ...] = ()  # ungated changes beyond their interval (gate.decide.watch), in words
    corrected: int = 0
    regressed: int = 0


def _delta_row(name: str, value: float, higher_is_better: bool | None) -> DeltaRow:
    good = None
    if higher_is_better is not None and math.isfinite(value) and value != 0:
        good = (value > 0) == higher_is_better
    return DeltaRow(name=name, value=fmt_signed(value), good=good)


def _interval_text(low: float, high: float, confidence: float | None, unit: str = "value") -> str:
    level = "" if confidence is None else f" at {confidence:.0%}"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"[n/a]{level}"
    return f"[{change(low, unit)}, {change(high, unit)}]{level}"


def migration_rows(migration: Migration) -> tuple[tuple[str, str], ...]:
    """Sample counts, then among the still-wrong how many lost confidence."""
    rows = [(label, str(int(getattr(migration, key)))) for key, label in MIGRATION_LABELS]
    share, still_wrong = migration.still_wrong_confidence_dropped, migration.still_wrong
    dropped = "n/a (none still wrong)"
    if still_wrong and math.isfinite(share):
        dropped = f"{round(share * still_wrong)} of {still_wrong} ({share:.0%})"
    return (*rows, ("still wrong, confidence dropped", dropped))


def _value(scores: Mapping[str, float], score: str) -> str:
    value = scores.get(score)
    return "n/a" if value is None or not math.isfinite(value) else number(value, unit_of(score))


def _size_of_change(score: str, value: float) -> float:
    spec = get_spec(score)
    low, high = (0.0, 1.0) if spec is None else spec.range
    scale = high - low if math.isfinite(high - low) and high > low else 1.0
    return abs(value) / scale if math.isfinite(value) else -1.0


def full_deltas(comparison: Comparison) -> tuple[DeltaRow, ...]:
    """Every score's change: both values and, where computed, the interval; largest change (by range) first."""
    cand, base = comparison.candidate_scores, comparison.baseline_scores
    bounds: dict[str, DeltaInterval] = {}
    for computed in comparison.intervals:
        bounds.setdefault(computed.score, computed)  # the first level computed
    warned = {w.score for w in comparison.warnings}
    rows = []
    for name, value in comparison.deltas.items():
        if not math.isfinite(value):
            continue
        score = name.removeprefix("delta.")
        spec = get_spec(score)
        if spec is not None and spec.per_class:
            continue  # the per-class table shows the worst classes
        unit = unit_of(score)
        row = _delta_row(score, value, None if spec is None else spec.higher_is_better)
        bound = bounds.get(score)
        interval = "" if bound is None else _interval_text(bound.low, bound.high, bound.confidence, unit)
        rows.append((_size_of_change(score, value), replace(
            row, value=change(value, unit), candidate=_value(cand, score), baseline=_value(base, score),
            interval=interval, verdict="warning" if score in warned else "")))
    return tuple(row for _size, row in sorted(rows, key=lambda pair: -pair[0]))


def gated_rows(rules: Sequence[RuleResult], comparison: Comparison) -> tuple[GatedRow, ...]:
    """The vs_baseline rules with both models' values, the change and its interval."""
    cand, base = comparison.candidate_scores, comparison.baseline_scores
    rows = []
    for rule in rules:
        if rule.op not in BASELINE_OPS:
            continue
        unit = unit_of(rule.score)
        interval = "" if rule.interval is None else _interval_text(*rule.interval, rule.confidence, unit)
        decided = decision(rule)
        rows.append(GatedRow(rule.rule_id, rule.score, _value(cand, rule.score), _value(base, rule.score),
                             "n/a" if rule.value is None else change(rule.value, unit), interval, decided.state,
                             decided.text))
    return tuple(rows)


def comparison_view(comparison: Comparison, rules: Sequence[RuleResult] = ()) -> ComparisonView:
    """One candidate's :class:`gate.result.Comparison`, formatted (``rules``: its rules, for the gated rows)."""
    class_deltas = present_deltas(comparison.class_deltas)
    return ComparisonView(
        migration=migration_rows(comparison.migration),
        mcnemar_p=fmt(comparison.mcnemar_p),
        class_deltas=tuple(replace(_delta_row(c, v, True), value=change(v, "pct"))
                           for c, v in worst_deltas(class_deltas)),
        deltas=full_deltas(comparison),
        intervals=tuple((iv.key, _interval_text(iv.low, iv.high, iv.confidence, unit_of(iv.score)))
                        for iv in comparison.intervals),
        class_deltas_total=len(class_deltas),
        gated=gated_rows(rules, comparison),
        warnings=tuple(warning_sentence(w) for w in comparison.warnings),
        corrected=comparison.migration.corrected, regressed=comparison.migration.regressed,
    )

"""The report's template context: typed, frozen views built from a ``GateResult``.

Templates only read these dataclasses; every number is formatted here, once, and
every string reaches the page through Jinja2's autoescaping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from gate.metrics.registry import get_spec, number
from gate.outputs.report import plots
from gate.outputs.report.classes import ClassTable, class_table, present_deltas, worst_deltas
from gate.outputs.report.formatting import fmt, fmt_signed
from gate.outputs.report.ranking import RankRow, ranking_rows
from gate.outputs.report.reasons import Diagnosis, Reason, anchor_prefix, diagnose, rule_anchor
from gate.outputs.report.samples import (
    GalleryView,
    ShowroomRow,
    galleries,
    only_bg_default,
    showroom,
)
from gate.outputs.report.shortcuts import ShortcutView, shortcut_views
from gate.outputs.sentences import BASELINE_OPS, change, decision, rule_text, unit_of, warning_sentence
from gate.result import (
    CandidateResult,
    Comparison,
    DeltaInterval,
    GateResult,
    Migration,
    PolicyInfo,
    ReviewSetInfo,
    RuleResult,
)

BASELINE_GROUP = "versus baseline"
SCORE_GROUPS: tuple[str, ...] = ("classification", "calibration", "alignment", "background", "shortcuts", "sanity",
                                  BASELINE_GROUP)
MIGRATION_LABELS: tuple[tuple[str, str], ...] = (
    ("corrected", "corrected (baseline wrong, candidate right)"),
    ("regressed", "regressed (baseline right, candidate wrong)"),
    ("still_wrong", "still wrong"),
    ("still_right", "still right"),
)


# --- views ---------------------------------------------------------------------


@dataclass(frozen=True)
class RuleRow:
    """One rule as a table row."""

    rule_id: str
    score: str
    op: str
    threshold: str
    value: str
    passed: bool
    arrow: str
    direction: str
    interval: str | None
    message: str
    meaning: str = ""  # the value in words, from the score registry
    anchor: str = ""  # the row's element id
    decision: str = ""  # the number that decided it (gate.outputs.sentences.decision)
    state: str = ""  # passed | failed | undecided


@dataclass(frozen=True)
class ScoreRow:
    """One score across the report's columns (candidates, then the baseline)."""

    name: str
    help: str
    arrow: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class ScoreGroup:
    """Scores of one group (classification, calibration, ...)."""

    title: str
    rows: tuple[ScoreRow, ...]


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


@dataclass(frozen=True)
class CandidateView:
    """Everything the report shows for one candidate."""

    name: str
    path: str
    sha256: str
    arch: str
    target_layer: str
    passed: bool
    selected: bool
    rules: tuple[RuleRow, ...]
    failed: tuple[RuleRow, ...]
    plots: tuple[plots.PlotImage, ...]
    galleries: tuple[GalleryView, ...]
    showroom: tuple[ShowroomRow, ...]
    comparison: ComparisonView | None
    target_layout: str = ""  # spatial, tokens or channels_last
    zero_maps: int = 0  # masked samples whose map was all zero (alignment.zero_maps)
    anchor: str = "c0"  # id prefix of this candidate's parts (galleries, showroom, plots, rules)
    reasons: tuple[Reason, ...] = ()  # one per failed rule, in words, with the evidence's anchor
    only_bg_default: str = ""  # the model's most common answer on empty scenes, with its share
    diagnosis: Diagnosis = Diagnosis("", ())
    full: bool = True  # select: only the winner gets galleries, showroom and plots; the others link to rules

    @property
    def verdict(self) -> str:
        """``"passed"`` or ``"failed"``."""
        return "passed" if self.passed else "failed"


@dataclass(frozen=True)
class ReportContext:
    """The whole report page."""

    title: str
    command: str
    verdict: str
    passed: bool
    selected: str | None
    created: str
    policy: PolicyInfo
    review_set: ReviewSetInfo
    candidates: tuple[CandidateView, ...]
    baseline_name: str | None
    rank_by: tuple[str, ...]
    score_columns: tuple[str, ...]
    score_groups: tuple[ScoreGroup, ...]
    environment: tuple[tuple[str, str], ...]
    timings: tuple[tuple[str, str], ...]
    classes: ClassTable | None = None
    ranking: tuple[RankRow, ...] = ()  # select: every candidate in rank order
    shortcuts: tuple[ShortcutView, ...] = ()  # gate/outputs/report/shortcuts.py
    source: str = ""  # the commit gated, "1a2b3c4 on main"; "" when none (gate.result.SourceInfo.label)

    @property
    def has_showroom(self) -> bool:
        """True when any candidate has background-probe variants to show."""
        return any(c.showroom for c in self.candidates)

    @property
    def has_comparison(self) -> bool:
        """True when a baseline was given (or any candidate carries a comparison)."""
        return self.baseline_name is not None or any(c.comparison is not None for c in self.candidates)


# --- formatting ---------------------------------------------------------------


def _direction(higher_is_better: bool | None) -> tuple[str, str]:
    if higher_is_better is None:
        return "", ""
    return ("↑", "higher is better") if higher_is_better else ("↓", "lower is better")


def score_group(name: str) -> str:
    """The report group of a score: the registry's, ``versus baseline`` for ``delta.*``, else by prefix."""
    if name.startswith("delta."):
        return BASELINE_GROUP
    spec = get_spec(name)
    if spec is not None:
        return spec.group
    prefix = name.partition(".")[0]
    return prefix if prefix in SCORE_GROUPS else "classification"


def _higher_is_better(name: str) -> bool | None:
    spec = get_spec(name)
    return None if spec is None else spec.higher_is_better


# --- builders -----------------------------------------------------------------


def rule_row(rule: RuleResult, anchor: str = "") -> RuleRow:
    """A ``RuleResult`` as a table row; ``meaning`` is its value in words."""
    arrow, direction = _direction(rule.higher_is_better)
    interval = None
    if rule.interval is not None:
        interval = f"[{fmt(rule.interval[0])}, {fmt(rule.interval[1])}]"
    decided = decision(rule)
    return RuleRow(
        rule_id=rule.rule_id, score=rule.score, op=rule.op, threshold=fmt(rule.threshold), value=fmt(rule.value),
        passed=rule.passed, arrow=arrow, direction=direction, interval=interval, message=rule.message,
        meaning=rule_text(rule), anchor=anchor, decision=decided.text, state=decided.state,
    )


def score_groups(columns: Sequence[Mapping[str, float]]) -> tuple[ScoreGroup, ...]:
    """Scores grouped for the table: one row per score name, one value per column ("" where absent).

    Per-class families (``class_accuracy.<class>``, ...) are left out: see ``class_table``; so are the
    ``delta.*`` scores: the baseline section shows each delta once.
    """
    names: dict[str, None] = {}
    for scores in columns:
        names.update(dict.fromkeys(scores))
    by_group: dict[str, list[ScoreRow]] = {group: [] for group in SCORE_GROUPS}
    for name in names:
        if name.startswith("delta."):
            continue
        spec = get_spec(name)
        if spec is not None and spec.per_class:
            continue  # one row per class would be 1000s of rows: the per-class table shows the worst
        arrow, _ = _direction(None if spec is None else spec.higher_is_better)
        values = tuple(fmt(scores[name]) if name in scores else "" for scores in columns)
        row = ScoreRow(name=name, help="" if spec is None else spec.help, arrow=arrow, values=values)
        by_group.setdefault(score_group(name), []).append(row)
    return tuple(ScoreGroup(title, tuple(rows)) for title, rows in by_group.items() if rows)


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


def _to_rule_rows(diagnosis: Diagnosis, index: int, positions: Mapping[str, int]) -> Diagnosis:
    def moved(found: Reason) -> Reason:
        if found.anchor.endswith("-comparison"):
            return found
        return replace(found, anchor=rule_anchor(index, positions[found.rule_id]), evidence="the rule")

    families = tuple(replace(f, reasons=tuple(map(moved, f.reasons))) for f in diagnosis.families)
    return replace(diagnosis, families=families, closest=tuple(map(moved, diagnosis.closest)))


def candidate_view(
    result: CandidateResult, baseline: CandidateResult | None, selected: str | None, index: int = 0,
    full: bool = True,
) -> CandidateView:
    """One candidate's view (``index``: its place in rank order, for anchors), with pictures rendered."""
    info = result.candidate
    prefix = anchor_prefix(index)
    rules = tuple(rule_row(r, rule_anchor(index, n)) for n, r in enumerate(result.rules))
    diagnosis = diagnose(result.rules, index)
    if not full:  # no galleries, showroom or plots on the page for it: its reasons point at their rule rows
        positions = {r.rule_id: n for n, r in enumerate(result.rules)}
        diagnosis = _to_rule_rows(diagnosis, index, positions)
    return CandidateView(
        name=info.name, path=info.path, sha256=info.sha256, arch=info.arch, target_layer=info.target_layer,
        passed=result.passed, selected=selected == info.name, rules=rules,
        failed=tuple(r for r in rules if not r.passed),
        plots=plots.candidate_plots(result.records, None if baseline is None else baseline.records, result.rules)
        if full else (),
        galleries=galleries(result, baseline, prefix) if full else (), showroom=showroom(result) if full else (),
        comparison=None if result.comparison is None else comparison_view(result.comparison, result.rules),
        target_layout=info.target_layout, zero_maps=_count(result.scores.get("alignment.zero_maps")),
        anchor=prefix, reasons=diagnosis.reasons, only_bg_default=only_bg_default(result.records),
        diagnosis=diagnosis, full=full,
    )


def _count(value: float | None) -> int:
    return int(value) if value is not None and math.isfinite(value) else 0


def _full(result: GateResult, candidate: CandidateResult, index: int) -> bool:
    """check: the one candidate; select: only the winner (the first ranked when none passed) gets pictures."""
    if result.command != "select":
        return True
    return candidate.candidate.name == result.selected if result.selected else index == 0


def _title(result: GateResult) -> str:
    names = ", ".join(c.candidate.name for c in result.candidates)
    return f"xgate {result.command}: {result.verdict} — {names}"


def build_context(result: GateResult) -> ReportContext:
    """The report's context for a gate result (renders the plots and pictures); candidates in rank order."""
    ranked = result.ranked()
    columns = [c.candidate.name for c in ranked]
    scores = [c.scores for c in ranked]
    records = [c.records for c in ranked]
    if result.baseline is not None:
        columns.append(f"baseline: {result.baseline.candidate.name}")
        scores.append(result.baseline.scores)
        records.append(result.baseline.records)
    views = tuple(candidate_view(c, result.baseline, result.selected, n, full=_full(result, c, n))
                  for n, c in enumerate(ranked))
    return ReportContext(
        title=_title(result), command=result.command, verdict=result.verdict, passed=result.passed,
        selected=result.selected, created=result.created, policy=result.policy, review_set=result.review_set,
        candidates=views,
        baseline_name=None if result.baseline is None else result.baseline.candidate.name,
        rank_by=result.rank_by,
        score_columns=tuple(columns), score_groups=score_groups(scores),
        environment=tuple((str(k), str(v)) for k, v in result.environment.items()),
        timings=tuple((str(k), f"{v:.2f} s") for k, v in result.timings.items()),
        classes=class_table(columns, records, len(ranked)) if ranked and records[0].size else None,
        ranking=ranking_rows(result, {v.name: v.diagnosis.headline for v in views}) if result.command == "select"
        else (),
        shortcuts=shortcut_views([c.candidate.name for c in ranked], [anchor_prefix(n) for n in range(len(ranked))],
                                 [c.records for c in ranked]),
        source="" if result.source is None else result.source.label,
    )

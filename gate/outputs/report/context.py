"""The report's template context: typed, frozen views built from a ``GateResult``.

Templates only read these dataclasses; every number is formatted here, once, and
every string reaches the page through Jinja2's autoescaping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from gate.metrics.registry import get_spec
from gate.outputs.report import plots
from gate.outputs.report.classes import ClassTable, class_table
from gate.outputs.report.comparison import ComparisonView, comparison_view
from gate.outputs.report.formatting import fmt
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
from gate.outputs.sentences import decision, rule_text
from gate.result import (
    CandidateResult,
    GateResult,
    PolicyInfo,
    ReviewSetInfo,
    RuleResult,
)

BASELINE_GROUP = "versus baseline"
SCORE_GROUPS: tuple[str, ...] = ("classification", "calibration", "alignment", "background", "shortcuts", "sanity",
                                  BASELINE_GROUP)


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


def _shortcuts(result: GateResult, ranked: Sequence[CandidateResult]) -> tuple[ShortcutView, ...]:
    """The atlas and flipped samples of the candidates that get pictures (select: the winner only)."""
    shown = [(n, c) for n, c in enumerate(ranked) if _full(result, c, n)]
    return shortcut_views([c.candidate.name for _, c in shown], [anchor_prefix(n) for n, _ in shown],
                          [c.records for _, c in shown])


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
        shortcuts=_shortcuts(result, ranked),
        source="" if result.source is None else result.source.label,
    )

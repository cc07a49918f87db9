"""The plain-text summary the CLI prints: verdict, rules per candidate, the winner, where the outputs are."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gate.errors import flat
from gate.metrics.registry import number
from gate.outputs.report.formatting import fmt
from gate.outputs.report.reasons import diagnose
from gate.outputs.sentences import UNDECIDED, change, decision, unit_of, warning_sentence
from gate.result import COMPARISON_CONFIDENCE, CandidateResult, GateResult, RuleResult

if TYPE_CHECKING:  # gate.outputs.files imports the report package; the summary only reads the three paths
    from gate.outputs.files import OutputPaths

MAX_RULE_LINES = 20  # check: one candidate's rules, failed first
MAX_FAILED_LINES = 12  # select: per rejected candidate, so six of them fit on one screen
MAX_HEADER_NAMES = 60  # characters of candidate names in the first line; more and it says "N candidates"
# ANSI colours for a terminal (the CLI decides: not when piped, under NO_COLOR or TERM=dumb).
GREEN, RED, YELLOW, RESET = "\x1b[32m", "\x1b[31m", "\x1b[33m", "\x1b[0m"


def paint(text: str, colour: str, on: bool) -> str:
    """``text`` in an ANSI colour when ``on``; unchanged otherwise."""
    return f"{colour}{text}{RESET}" if on and text else text


def rules_failed(candidate: CandidateResult) -> str:
    """The one wording for rule counts (console, job summary, report banner): "2 of 12 rules failed"."""
    return f"{len(candidate.failed_rules)} of {len(candidate.rules)} rules failed"


def _rule_line(rule: RuleResult, color: bool = False) -> str:
    """``  FAIL  <rule id>: <the deciding number>``: the same words as the report and the job summary."""
    mark = paint("pass", GREEN, color) if rule.passed else paint("FAIL", RED, color)
    decided = decision(rule)
    text = decided.text
    if decided.state == UNDECIDED:
        head, _, tail = text.rpartition(": undecided")
        text = f"{head}: {paint('undecided', YELLOW, color)}{tail}"
    note = ""
    if rule.note and decided.state != UNDECIDED and rule.note not in text:  # what the decision does not say
        note = paint(f"  ({rule.note})", YELLOW, color)
    return f"  {mark}  {rule.rule_id}: {text}{note}"


def _candidate_lines(candidate: CandidateResult, color: bool = False) -> list[str]:
    # check: the diagnosis, then every rule of the one candidate, failed first (most telling first).
    name = candidate.candidate.name
    rules = candidate.rules
    verdict = paint("passed", GREEN, color) if candidate.passed else paint("failed", RED, color)
    head = f"{name}: {verdict} ({rules_failed(candidate)})"
    diagnosis = diagnose(rules)
    by_id = {r.rule_id: r for r in rules}
    failed = [by_id[r.rule_id] for r in diagnosis.reasons]
    ordered = [*failed, *(r for r in rules if r.passed)]
    lines = [head, f"  {diagnosis.headline}"]
    if diagnosis.closest:
        lines.append("  closest calls: " + "; ".join(f"{r.rule_id} ({r.decision})" for r in diagnosis.closest))
    lines.extend(_rule_line(r, color) for r in ordered[:MAX_RULE_LINES])
    if len(ordered) > MAX_RULE_LINES:
        hidden = ordered[MAX_RULE_LINES:]
        hidden_failed = sum(not r.passed for r in hidden)
        lines.append(f"  ... {len(hidden)} more rules ({hidden_failed} failed)")
    return lines


def _shown(scores: Mapping[str, float], score: str) -> str:
    value = scores.get(score)
    return "n/a" if value is None or not math.isfinite(value) else number(value, unit_of(score))


def _comparison_lines(candidate: CandidateResult, baseline: str) -> list[str]:
    # The paired comparison: the accuracy change with its interval, where samples moved, then each warning.
    comparison = candidate.comparison
    if comparison is None:
        return []
    delta = comparison.deltas.get("delta.accuracy")
    head = f"  vs baseline {baseline}: accuracy {'n/a' if delta is None else change(delta, 'pct')}"
    interval = comparison.interval("accuracy", COMPARISON_CONFIDENCE)
    if interval is not None:
        head += (f" [{change(interval.low, 'pct')}, {change(interval.high, 'pct')}] at "
                 f"{COMPARISON_CONFIDENCE:.0%}")
    head += f", McNemar p {fmt(comparison.mcnemar_p)}"
    moved = comparison.migration
    tail = (f"  samples: {moved.corrected} corrected, {moved.regressed} regressed, "
            f"{moved.still_wrong} still wrong")
    dropped = moved.still_wrong_confidence_dropped
    if moved.still_wrong and math.isfinite(dropped):
        tail += f" (confidence dropped on {dropped:.0%})"
    warned = [f"  warning: {warning_sentence(w)}" for w in comparison.warnings]
    return [head, tail, *warned]


def _select_lines(result: GateResult, color: bool = False) -> list[str]:
    # One line per passing candidate (rank and the scores it was ranked by), then each rejected one with its
    # diagnosis and the rules it failed: a select over many candidates still fits on one screen.
    ranked = result.ranked()
    passing = [c for c in ranked if c.passed]
    rejected = [c for c in ranked if not c.passed]
    lines: list[str] = []
    if passing:
        lines.append(f"passed, ranked by {', '.join(result.rank_by)} (ties: next score, then name):")
        for place, candidate in enumerate(passing, start=1):
            name = candidate.candidate.name
            shown = "  ".join(f"{score} {_shown(candidate.scores, score)}" for score in result.rank_by)
            if candidate.comparison:
                delta = candidate.scores.get("delta.accuracy")
                shown += f"  (vs baseline: accuracy {'n/a' if delta is None else change(delta, 'pct')})"
            marker = paint("  <- selected", GREEN, color) if result.selected == name else ""
            lines.append(f"  {place}. {name}  {shown}{marker}")
    if rejected:
        lines.append("rejected:")
        for candidate in rejected:
            diagnosis = diagnose(candidate.rules)
            by_id = {r.rule_id: r for r in candidate.rules}
            failed = [by_id[r.rule_id] for r in diagnosis.reasons]
            lines.append(f"  {candidate.candidate.name}: {paint(rules_failed(candidate), RED, color)} - "
                         f"{diagnosis.headline}")
            lines.extend("  " + _rule_line(rule, color) for rule in failed[:MAX_FAILED_LINES])
            if len(failed) > MAX_FAILED_LINES:
                lines.append(f"    ... {len(failed) - MAX_FAILED_LINES} more failed rules")
    return lines


def _header(result: GateResult, color: bool) -> str:
    """``xgate check: FAILED - cand.pt on cuda:0 (NVIDIA H200)``: the verdict, what was gated, and where."""
    verdict = paint(result.verdict.upper(), GREEN if result.passed else RED, color)
    names = ", ".join(c.candidate.name for c in result.candidates)
    if len(names) > MAX_HEADER_NAMES:
        names = f"{len(result.candidates)} candidates"
    env = result.environment
    device = env.get("device", "")
    if device and env.get("device_name") and env.get("device_name") != device:
        device += f" ({env['device_name']})"
    where = f" on {device}" if device else ""
    return f"xgate {result.command}: {verdict} - {names}{where}" if names else f"xgate {result.command}: {verdict}"


def format_summary(result: GateResult, paths: OutputPaths | None, *, color: bool = False) -> str:
    """The plain-text summary for the console: verdict, rules per candidate, winner, where the report is.

    ``color``: ANSI colours (green passed, red failed, yellow notes); the CLI turns it on for a terminal.
    """
    review = result.review_set
    lines = [
        _header(result, color),
        f"policy {result.policy.name}, review set {review.name} {review.version} ({review.size} samples)",
    ]
    if not review.pinned:  # --allow-unpinned: say so where people read the verdict
        lines[-1] += paint(f", UNPINNED (digest {review.digest} is not the one the policy pins)", YELLOW, color)
    if result.baseline is not None:
        lines.append(f"baseline: {result.baseline.candidate.name}")
    if result.command == "select":
        lines.extend(_select_lines(result, color))
        lines.append(f"selected: {result.selected}" if result.selected else "selected: none (no candidate passed)")
    else:
        for candidate in result.candidates:
            lines.extend(_candidate_lines(candidate, color))
            if result.baseline is not None:
                lines.extend(_comparison_lines(candidate, result.baseline.candidate.name))
    if paths is not None:
        lines.extend([f"report: {paths.report}", f"json:   {paths.json}", f"junit:  {paths.junit}"])
    # A candidate's name is a file name anyone can choose: a newline in it must not start a line of its own.
    return "\n".join(flat(line) for line in lines)

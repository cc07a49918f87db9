"""The plain-text summary the CLI prints: verdict, rules per candidate, the winner, where the outputs are."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from gate.outputs.report.formatting import fmt, fmt_signed
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
    mark = paint("pass", GREEN, color) if rule.passed else paint("FAIL", RED, color)
    if rule.op in ("non_inferior", "superior") and rule.interval is not None:
        # The rule tests a confidence bound of the difference against a signed limit; show both.
        low, high = rule.interval
        bound = low if rule.higher_is_better else high
        allowed_below = (rule.op == "non_inferior") == rule.higher_is_better
        limit = -rule.threshold if allowed_below else rule.threshold
        return (f"  {mark}  {rule.rule_id}: delta {fmt_signed(rule.value)}, bound {fmt_signed(bound)} "
                f"vs {fmt_signed(limit)}")
    shown = fmt(rule.value)
    if rule.interval is not None:  # a rule with a confidence tests its bound, not the value
        shown += f", bound {fmt(rule.interval[0] if rule.op == '>=' else rule.interval[1])}"
    note = paint(f"  ({rule.note})", YELLOW, color) if rule.note else ""  # gate.decide.intervals' wording
    return f"  {mark}  {rule.rule_id}: {shown} vs {fmt(rule.threshold)}{note}"


def _candidate_lines(candidate: CandidateResult, color: bool = False) -> list[str]:
    # check: every rule of the one candidate, failed first.
    name = candidate.candidate.name
    rules = candidate.rules
    failed = candidate.failed_rules
    verdict = paint("passed", GREEN, color) if candidate.passed else paint("failed", RED, color)
    head = f"{name}: {verdict} ({rules_failed(candidate)})"
    ordered = [*failed, *(r for r in rules if r.passed)]
    lines = [head, *(_rule_line(r, color) for r in ordered[:MAX_RULE_LINES])]
    if len(ordered) > MAX_RULE_LINES:
        hidden = ordered[MAX_RULE_LINES:]
        hidden_failed = sum(not r.passed for r in hidden)
        lines.append(f"  ... {len(hidden)} more rules ({hidden_failed} failed)")
    return lines


def _comparison_lines(candidate: CandidateResult, baseline: str) -> list[str]:
    # The paired comparison in two lines: the accuracy difference with its interval, then where samples moved.
    comparison = candidate.comparison
    if comparison is None:
        return []
    delta = comparison.deltas.get("delta.accuracy")
    head = f"  vs baseline {baseline}: accuracy {fmt_signed(delta)}"
    interval = comparison.interval("accuracy", COMPARISON_CONFIDENCE)
    if interval is not None:
        head += (f" ({COMPARISON_CONFIDENCE:.0%} bounds {fmt_signed(interval.low)} .. "
                 f"{fmt_signed(interval.high)})")
    head += f", McNemar p {fmt(comparison.mcnemar_p)}"
    moved = comparison.migration
    tail = (f"  samples: {moved.corrected} corrected, {moved.regressed} regressed, "
            f"{moved.still_wrong} still wrong")
    dropped = moved.still_wrong_confidence_dropped
    if moved.still_wrong and math.isfinite(dropped):
        tail += f" (confidence dropped on {dropped:.0%})"
    return [head, tail]


def _select_lines(result: GateResult, color: bool = False) -> list[str]:
    # One line per passing candidate (rank and the scores it was ranked by), then each rejected one with the
    # rules it failed: a select over many candidates still fits on one screen and says why each lost.
    ranked = result.ranked()
    passing = [c for c in ranked if c.passed]
    rejected = [c for c in ranked if not c.passed]
    lines: list[str] = []
    if passing:
        lines.append(f"passed, ranked by {', '.join(result.rank_by)} (ties: next score, then name):")
        for place, candidate in enumerate(passing, start=1):
            name = candidate.candidate.name
            shown = "  ".join(f"{score} {fmt(candidate.scores.get(score))}" for score in result.rank_by)
            if candidate.comparison:
                shown += f"  (vs baseline: accuracy {fmt_signed(candidate.scores.get('delta.accuracy'))})"
            marker = paint("  <- selected", GREEN, color) if result.selected == name else ""
            lines.append(f"  {place}. {name}  {shown}{marker}")
    if rejected:
        lines.append("rejected:")
        for candidate in rejected:
            failed = candidate.failed_rules
            lines.append(f"  {candidate.candidate.name}: {paint(rules_failed(candidate), RED, color)}")
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
    return "\n".join(lines)

"""The plain-text summary the CLI prints: verdict, rules per candidate, the winner, where the outputs are."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gate.report.context import fmt, fmt_signed
from gate.result import CandidateResult, GateResult, RuleResult

if TYPE_CHECKING:  # gate.outputs imports the report package; the summary only reads the three paths
    from gate.outputs import OutputPaths

MAX_RULE_LINES = 20  # check: one candidate's rules, failed first
MAX_FAILED_LINES = 12  # select: per rejected candidate, so six of them fit on one screen


def _rule_line(rule: RuleResult) -> str:
    mark = "pass" if rule.passed else "FAIL"
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
    note = f"  ({rule.note})" if rule.note else ""  # the review set cannot settle it: gate.intervals' wording
    return f"  {mark}  {rule.rule_id}: {shown} vs {fmt(rule.threshold)}{note}"


def _candidate_lines(candidate: CandidateResult) -> list[str]:
    # check: every rule of the one candidate, failed first.
    name = candidate.candidate.name
    rules = candidate.rules
    failed = candidate.failed_rules
    verdict = "passed" if candidate.passed else "failed"
    head = f"{name}: {verdict} ({len(rules) - len(failed)}/{len(rules)} rules passed)"
    ordered = [*failed, *(r for r in rules if r.passed)]
    lines = [head, *(_rule_line(r) for r in ordered[:MAX_RULE_LINES])]
    if len(ordered) > MAX_RULE_LINES:
        hidden = ordered[MAX_RULE_LINES:]
        hidden_failed = sum(not r.passed for r in hidden)
        lines.append(f"  ... {len(hidden)} more rules ({hidden_failed} failed)")
    return lines


def _comparison_lines(candidate: CandidateResult, baseline: str) -> list[str]:
    # The paired comparison in two lines: the accuracy difference with its interval, then where samples moved.
    comparison = candidate.comparison
    if not comparison:
        return []
    delta = comparison["deltas"].get("delta.accuracy")
    head = f"  vs baseline {baseline}: accuracy {fmt_signed(delta)}"
    interval = comparison["intervals"].get("delta.accuracy@0.95")
    if interval:
        head += f" (95% bounds {fmt_signed(interval['low'])} .. {fmt_signed(interval['high'])})"
    head += f", McNemar p {fmt(comparison['mcnemar_p'])}"
    moved = comparison["migration"]
    tail = (f"  samples: {moved['corrected']} corrected, {moved['regressed']} regressed, "
            f"{moved['still_wrong']} still wrong")
    dropped = moved.get("still_wrong_confidence_dropped")
    if moved["still_wrong"] and dropped is not None:
        tail += f" (confidence dropped on {dropped:.0%})"
    return [head, tail]


def _select_lines(result: GateResult) -> list[str]:
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
            marker = "  <- selected" if result.selected == name else ""
            lines.append(f"  {place}. {name}  {shown}{marker}")
    if rejected:
        lines.append("rejected:")
        for candidate in rejected:
            failed = candidate.failed_rules
            lines.append(f"  {candidate.candidate.name}: failed {len(failed)} of {len(candidate.rules)} rules")
            lines.extend("  " + _rule_line(rule) for rule in failed[:MAX_FAILED_LINES])
            if len(failed) > MAX_FAILED_LINES:
                lines.append(f"    ... {len(failed) - MAX_FAILED_LINES} more failed rules")
    return lines


def format_summary(result: GateResult, paths: OutputPaths | None) -> str:
    """The plain-text summary for the console: verdict, rules per candidate, winner, where the report is."""
    review = result.review_set
    lines = [
        f"xgate {result.command}: {result.verdict.upper()}",
        f"policy {result.policy.name}, review set {review.name} {review.version} ({review.size} samples)",
    ]
    if not review.pinned:  # --allow-unpinned: say so where people read the verdict
        lines[-1] += f", UNPINNED (digest {review.digest} is not the one the policy pins)"
    if result.baseline is not None:
        lines.append(f"baseline: {result.baseline.candidate.name}")
    if result.command == "select":
        lines.extend(_select_lines(result))
        lines.append(f"selected: {result.selected}" if result.selected else "selected: none (no candidate passed)")
    else:
        for candidate in result.candidates:
            lines.extend(_candidate_lines(candidate))
            if result.baseline is not None:
                lines.extend(_comparison_lines(candidate, result.baseline.candidate.name))
    if paths is not None:
        lines.extend([f"report: {paths.report}", f"json:   {paths.json}", f"junit:  {paths.junit}"])
    return "\n".join(lines)

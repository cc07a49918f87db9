"""What a person sees browsing the MLflow UI: run names, the run's description, the Source and Version columns.

Pure (no MLflow): ``gate.tracking.plan`` adds these to each run's name and tags.

- The run name carries the verdict and the candidate (``passed · cutmix.pt``), so the runs table says both
  without adding a column.
- ``mlflow.note.content`` is the run page's Description (Markdown): the verdict and its reasons.
- ``mlflow.source.name`` fills the Source column (the UI shows the part after the last ``/``) and
  ``mlflow.source.git.commit`` the Version column (its first 6 hex digits) and the run page's "Git commit".
"""

from __future__ import annotations

from gate.result import CandidateResult, GateResult, RuleResult, SourceInfo

NOTE_TAG = "mlflow.note.content"
MAX_NOTE_REASONS = 20  # reasons in a description; the rest are counted (the tags and result.json hold all)


def candidate_run_name(cand: CandidateResult) -> str:
    """``passed · cutmix.pt`` or ``failed · cheater.pt``."""
    return f"{_verdict(cand.passed)} · {cand.candidate.name}"


def select_run_name(result: GateResult) -> str:
    """``passed · select: bgmix.pt of 6`` or ``failed · select: none of 6 passed``."""
    count = len(result.candidates)
    if result.selected:
        return f"{result.verdict} · select: {result.selected} of {count}"
    return f"{result.verdict} · select: none of {count} passed"


def source_tags(result: GateResult) -> dict[str, str]:
    """MLflow's source tags for the commit gated (none without one) and the short SHA to search by."""
    source = result.source
    if source is None:
        return {}
    tags = {"mlflow.source.git.commit": source.commit, "mlflow.source.name": source_name(result.command, source),
            "mlflow.source.type": "LOCAL", "xgate.commit": source.short}
    if source.branch:
        tags["mlflow.source.git.branch"] = source.branch
    return tags


def source_name(command: str, source: SourceInfo) -> str:
    """``xgate check @ 1a2b3c4``: the UI shows a source name after its last ``/``, so a branch stays out."""
    return f"xgate {command} @ {source.short}"


def candidate_note(result: GateResult, cand: CandidateResult) -> str:
    """The run's description: verdict, counts and where it ran, then one bullet per failed rule."""
    failed, total = len(cand.failed_rules), len(cand.rules)
    counts = f"{failed} of {total} rules failed" if failed else f"all {total} rules passed"
    lines = [f"**{_verdict(cand.passed)}**: {counts} · {_context(result)}"]
    lines += _bullets([_reason(rule) for rule in cand.failed_rules])
    return "\n".join(lines)


def select_note(result: GateResult) -> str:
    """The select parent's description: the winner, then one bullet per candidate in ranking order."""
    head = f"{_md(result.selected)} selected" if result.selected else "no candidate passed"
    lines = [f"**{result.verdict}**: {head} of {len(result.candidates)} · {_context(result)}"]
    items = []
    for cand in result.ranked():
        failed = ", ".join(rule.rule_id for rule in cand.failed_rules)
        items.append(f"{_md(cand.candidate.name)}: {_verdict(cand.passed)}" + (f" ({_md(failed)})" if failed else ""))
    return "\n".join([*lines, *_bullets(items, escaped=True)])


def _bullets(items: list[str], *, escaped: bool = False) -> list[str]:
    if not items:
        return []
    shown = [f"- {item if escaped else _md(item)}" for item in items[:MAX_NOTE_REASONS]]
    if len(items) > MAX_NOTE_REASONS:
        shown.append(f"- … and {len(items) - MAX_NOTE_REASONS} more")
    return ["", *shown]


def _reason(rule: RuleResult) -> str:
    # The rule's message is its sentence; an empty one (hand-built results) falls back to the rule id.
    return f"{rule.rule_id}: {rule.message}" if rule.message else rule.rule_id


def _context(result: GateResult) -> str:
    parts = [f"policy {_md(result.policy.name)}", f"review set {_md(result.review_set.name)}"]
    if result.source is not None:
        parts.append(f"commit {_md(result.source.label)}")
    return " · ".join(parts)


def _verdict(passed: bool) -> str:
    return "passed" if passed else "failed"


def _md(text: str | None) -> str:
    from gate.outputs.github import markdown_escape  # lazy: the report's imports are not paid by planning

    return markdown_escape(text or "")

"""GitHub Actions: ``::error`` annotations, the job summary ($GITHUB_STEP_SUMMARY) and step outputs ($GITHUB_OUTPUT)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

from gate.errors import InputError
from gate.outputs.files import OutputPaths
from gate.outputs.junit import failure_message
from gate.outputs.report.formatting import fmt
from gate.outputs.report.reasons import diagnose
from gate.outputs.sentences import decision, warning_sentence
from gate.result import CandidateResult, GateResult, RuleResult

MAX_ANNOTATIONS = 10  # GitHub shows about ten annotations per step; the rest go into one count line
SUMMARY_LIMIT = 1024 * 1024  # GitHub refuses a step summary over 1 MiB
TRUNCATED_NOTE = "\n\n_The xgate summary was cut to keep the job summary under 1 MiB; see the report for the rest._\n"
_MARKDOWN_SPECIAL = "\\`*_[]<|~"  # what can start emphasis, links, HTML, code or a new cell


# --- annotations -------------------------------------------------------------------


def escape_data(text: str) -> str:
    """Escape a workflow command's message (as @actions/core does)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow command's property value (as @actions/core does)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _annotation(level: str, candidate: str, rule: RuleResult) -> str:
    message = rule.message or f"{rule.rule_id}: {failure_message(rule)}"
    return f"::{level} title=xgate: {escape_property(candidate)}::{escape_data(message)}"


def github_annotations(result: GateResult, advisory: bool = False) -> list[str]:
    """One ``::error`` line per failed rule (at most ``MAX_ANNOTATIONS``), then a count of the rest.

    When the gate passed (``select`` found a winner) the losers' failed rules are warnings, not errors; in
    advisory mode (the action's ``fail-on: never``) every failed rule is a warning: it blocks nothing.
    """
    level = "error" if not result.passed and not advisory else "warning"
    failed = [(c.candidate.name, r) for c in result.candidates for r in c.failed_rules]
    lines = [_annotation(level, name, rule) for name, rule in failed[:MAX_ANNOTATIONS]]
    if len(failed) > MAX_ANNOTATIONS:
        lines.append(f"::{level} title=xgate::{len(failed) - MAX_ANNOTATIONS} more failed rules")
    return lines


# --- step summary -------------------------------------------------------------------


def markdown_escape(text: str) -> str:
    """Text safe inside a Markdown table cell: punctuation backslash-escaped, newlines flattened."""
    flat = " ".join(str(text).splitlines())
    return "".join("\\" + ch if ch in _MARKDOWN_SPECIAL else ch for ch in flat)


def markdown_code(text: str) -> str:
    """``text`` as an inline code span (paths, digests): nothing inside is interpreted."""
    flat = " ".join(str(text).splitlines())
    return f"`` {flat} ``" if "`" in flat else f"`{flat}`"


def _rules_table(candidate: CandidateResult) -> list[str]:
    lines = ["| | Rule | Decided by | Message |", "|---|---|---|---|"]
    for rule in candidate.rules:
        mark = "✅" if rule.passed else "❌"
        cells = [mark, markdown_escape(rule.rule_id), markdown_escape(decision(rule).text)]
        cells.append(markdown_escape(rule.message))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _candidate_markdown(candidate: CandidateResult, selected: str | None) -> list[str]:
    name = candidate.candidate.name
    verdict = "passed" if candidate.passed else "failed"
    failed, total = len(candidate.failed_rules), len(candidate.rules)
    winner = " (selected)" if selected == name else ""
    head = f"### {markdown_escape(name)}{winner}: {verdict}, {failed} of {total} rules failed"
    # The diagnosis and the reasons by family: the same sentences as the top of the report.
    diagnosis = diagnose(candidate.rules)
    why = [f"**{markdown_escape(diagnosis.headline)}**", ""]
    for group in diagnosis.families:
        why += [f"- {markdown_escape(group.title.capitalize())}:"]
        why += [f"  - {markdown_escape(r.sentence)}" for r in group.reasons]
    if diagnosis.closest:
        why += ["Closest calls:", *(f"- {markdown_escape(r.sentence)}" for r in diagnosis.closest)]
    versus = _versus_baseline(candidate)
    return ["", head, "", *why, *(["", *versus] if versus else []), "", *_rules_table(candidate)]


def _versus_baseline(candidate: CandidateResult) -> list[str]:
    """The comparison in Markdown: sample moves, McNemar, and each warning (an ungated change beyond its
    interval); [] without a comparison."""
    comparison = candidate.comparison
    if comparison is None:
        return []
    moved = comparison.migration
    lines = [f"Against the baseline: {moved.corrected} corrected, {moved.regressed} regressed "
             f"(McNemar p = {fmt(comparison.mcnemar_p)})"]
    for warning in comparison.warnings:
        lines += ["", f"⚠️ Warning: {markdown_escape(warning_sentence(warning))}"]
    return lines


def summary_markdown(result: GateResult, paths: OutputPaths | None) -> str:
    """The job summary: verdict, one rules table per candidate, and where the outputs are."""
    icon = "✅" if result.passed else "❌"
    review = result.review_set
    lines = [
        f"## {icon} xgate {result.command}: {result.verdict}",
        "",
        f"Policy **{markdown_escape(result.policy.name)}** · review set **{markdown_escape(review.name)}** "
        f"{markdown_escape(review.version)} ({review.size} samples, {markdown_code(review.digest)})",
    ]
    if not review.pinned:  # --allow-unpinned: the verdict is not on the set the policy pins
        lines += ["", "⚠️ **UNPINNED**: run with `--allow-unpinned`; this digest is not the one the policy pins."]
    if result.baseline is not None:
        lines += ["", f"Baseline: **{markdown_escape(result.baseline.candidate.name)}**"]
    if result.command == "select":
        winner = markdown_escape(result.selected) if result.selected else "none (no candidate passed)"
        ranked_by = ", ".join(markdown_escape(score) for score in result.rank_by)
        lines += ["", f"Selected: **{winner}** (passing candidates ranked by {ranked_by}; they come first below)"]
    for candidate in result.ranked():
        lines += _candidate_markdown(candidate, result.selected)
    if paths is not None:
        lines += [
            "",
            f"Outputs (in the uploaded artifact): report {markdown_code(str(paths.report))} · "
            f"JSON {markdown_code(str(paths.json))} · JUnit {markdown_code(str(paths.junit))}",
        ]
    return "\n".join(lines) + "\n"


def fit_summary(text: str, budget: int) -> str:
    """``text`` if it fits in ``budget`` UTF-8 bytes, else its leading whole lines plus a note; "" if nothing fits."""
    data = text.encode("utf-8")
    if len(data) <= budget:
        return text
    room = budget - len(TRUNCATED_NOTE.encode("utf-8"))
    if room <= 0:
        return ""
    head = data[:room].decode("utf-8", errors="ignore")
    cut = head.rfind("\n")
    return (head[:cut] if cut >= 0 else "") + TRUNCATED_NOTE


def _append(path: Path, text: str, field: str) -> None:
    try:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as error:
        raise InputError(f"cannot append to the file: {error.strerror or error}", path=path, field=field) from error


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def write_step_summary(result: GateResult, paths: OutputPaths | None, summary_path: Path) -> Path:
    """Append the Markdown summary to ``summary_path``, keeping the whole file under 1 MiB."""
    budget = SUMMARY_LIMIT - _size(summary_path)
    text = fit_summary(summary_markdown(result, paths), budget)
    if text:
        _append(summary_path, text, "GITHUB_STEP_SUMMARY")
    return summary_path


# --- step outputs ---------------------------------------------------------------------


def _output_line(key: str, value: str) -> str:
    if "\n" not in value and "\r" not in value:
        return f"{key}={value}\n"
    delimiter = f"ghadelimiter_{uuid.uuid4().hex}"  # GitHub's multi-line syntax, as @actions/core writes it
    return f"{key}<<{delimiter}\n{value}\n{delimiter}\n"


OUTPUT_KEYS = ("verdict", "selected", "report", "json", "junit")  # written after every gate (action.yml declares them)
TRACKING_OUTPUT_KEYS = ("mlflow-run-id", "mlflow-run-ids", "mlflow-run-url")  # written when MLflow logged the gate


def write_github_outputs(result: GateResult, paths: OutputPaths, output_path: Path) -> Path:
    """Append ``verdict``, ``selected``, ``report``, ``json`` and ``junit`` to ``output_path`` ($GITHUB_OUTPUT)."""
    values = {
        "verdict": result.verdict,
        "selected": result.selected or "",
        "report": str(paths.report),
        "json": str(paths.json),
        "junit": str(paths.junit),
    }
    _append(output_path, "".join(_output_line(k, v) for k, v in values.items()), "GITHUB_OUTPUT")
    return output_path


def emit_github(result: GateResult, paths: OutputPaths, env: Mapping[str, str]) -> list[str]:
    """In GitHub Actions (``GITHUB_ACTIONS=true``): write the summary and outputs; return the annotation lines.

    Outside GitHub Actions nothing is written and no lines are returned. ``XGATE_FAIL_ON=never`` (set by the
    action in advisory mode) turns the annotations into warnings.
    """
    if env.get("GITHUB_ACTIONS") != "true":
        return []
    if env.get("GITHUB_STEP_SUMMARY"):
        write_step_summary(result, paths, Path(env["GITHUB_STEP_SUMMARY"]))
    if env.get("GITHUB_OUTPUT"):
        write_github_outputs(result, paths, Path(env["GITHUB_OUTPUT"]))
    return github_annotations(result, advisory=env.get("XGATE_FAIL_ON") == "never")


# --- MLflow runs ------------------------------------------------------------------------


def mlflow_run_url(tracking_uri: str, run_id: str) -> str:
    """The run's page in the MLflow UI of an http(s) tracking server; "" for a local store (no UI to link)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return ""
    return f"{tracking_uri.rstrip('/')}/#/runs/{run_id}"  # the UI's direct run route finds the experiment itself


def write_tracking_outputs(run_ids: Sequence[str], tracking_uri: str, output_path: Path) -> Path:
    """Append ``mlflow-run-id`` (the first run: select's parent), ``mlflow-run-ids`` and ``mlflow-run-url``."""
    first = run_ids[0] if run_ids else ""
    values = {
        "mlflow-run-id": first,
        "mlflow-run-ids": " ".join(run_ids),
        "mlflow-run-url": mlflow_run_url(tracking_uri, first) if first else "",
    }
    _append(output_path, "".join(_output_line(k, v) for k, v in values.items()), "GITHUB_OUTPUT")
    return output_path


def emit_tracking(run_ids: Sequence[str], tracking_uri: str, env: Mapping[str, str]) -> None:
    """In GitHub Actions: the MLflow run outputs, and a link to the run in the job summary when it has a UI."""
    if env.get("GITHUB_ACTIONS") != "true":
        return
    if env.get("GITHUB_OUTPUT"):
        write_tracking_outputs(run_ids, tracking_uri, Path(env["GITHUB_OUTPUT"]))
    url = mlflow_run_url(tracking_uri, run_ids[0]) if run_ids else ""
    if url and env.get("GITHUB_STEP_SUMMARY"):
        summary = Path(env["GITHUB_STEP_SUMMARY"])
        line = f"\nMLflow: [run {markdown_escape(run_ids[0])}]({url})\n"
        if _size(summary) + len(line.encode("utf-8")) <= SUMMARY_LIMIT:
            _append(summary, line, "GITHUB_STEP_SUMMARY")

"""One sticky comment on the pull request: the verdict, its reasons, the baseline box and links.

The action's ``comment: true`` runs ``scripts/action_comment.py`` after the report is uploaded; it reads
result.json and keeps ONE comment per gate (per artifact name) on the pull request: created the first time,
then edited in place, found again by a hidden marker. GitHub's REST API through the standard library
(``urllib``), with ``GITHUB_TOKEN``; no new dependency.

Safety: every text from the candidate's side (names, rule messages, branch) is escaped so it cannot add
Markdown, HTML, links or @-mentions; the token goes only in the Authorization header to the API host (no
redirect is followed) and never into a message; at most ``MAX_PAGES + 1`` requests, each with a timeout.
A pull request from a fork gets a read-only token: the 403 is a notice and the step goes on.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gate.errors import InputError

MARKER = "<!-- xgate-comment:{key} -->"
MAX_PAGES, PER_PAGE = 10, 100  # comments searched for the marker: the newest 1000 are plenty
TIMEOUT_S = 10
MAX_REASONS = 10  # per candidate; the rest are counted (the report has them all)
MAX_BODY = 60_000  # GitHub refuses comments over 65,536 characters
_ASCII_PUNCTUATION = set("!\"#$%'()*+,-./:<=>?@[\\]^_`{|}~")  # all but "&" and ";", which the entities use
_KEY = re.compile(r"[^A-Za-z0-9._-]")
_REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_URL_SAFE = "/:?&=#%+~,@!$*;'"  # kept as they are in a link target; everything else is percent-encoded


@dataclass(frozen=True)
class Links:
    """Where the reader goes next (empty: not shown)."""

    artifact: str = ""
    mlflow: str = ""


@dataclass(frozen=True)
class Target:
    """The pull request to comment on."""

    api_url: str  # https://api.github.com (GITHUB_API_URL)
    repository: str  # owner/name
    number: int
    token: str


@dataclass(frozen=True)
class Outcome:
    """What ``post_comment`` did: created, updated, skipped (a notice) or failed (a warning)."""

    action: str
    message: str
    requests: int = 0
    comment_url: str = ""


# --- the text ---------------------------------------------------------------------------------------------


def markdown_text(text: object) -> str:
    """Plain text inside Markdown: no HTML, emphasis, links, tables, code or @-mentions can come out of it."""
    flat = " ".join(str(text).split())
    html = flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    escaped = "".join("\\" + ch if ch in _ASCII_PUNCTUATION else ch for ch in html)
    return escaped.replace("\\@", "\\@\u200b")  # a zero-width space: "@team" never notifies anyone


def safe_url(url: str) -> str:
    """An http(s) URL as a Markdown link target, or "" when it is anything else (javascript:, spaces ...)."""
    parsed = urllib.parse.urlsplit(url.strip()) if url and url.isprintable() else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        return ""
    return urllib.parse.quote(url.strip(), safe=_URL_SAFE)


def marker(key: str) -> str:
    """The hidden line that finds this gate's comment again (one per artifact name)."""
    return MARKER.format(key=_KEY.sub("_", key)[:100] or "xgate")


def comment_body(result: Mapping[str, Any], links: Links, key: str = "xgate-report") -> str:
    """The whole comment: marker, headline, reasons per candidate, the baseline box, links."""
    lines = [marker(key), headline(result), "", _context(result)]
    for cand in result.get("candidates") or []:
        lines += ["", *_candidate_lines(cand, result)]
    box = baseline_box(result)
    if box:
        lines += ["", *box]
    lines += ["", *_links(links)]
    body = "\n".join(lines).rstrip() + "\n"
    return body if len(body) <= MAX_BODY else body[:MAX_BODY] + "\n\n… (cut: see the report)\n"


def headline(result: Mapping[str, Any]) -> str:
    """One line: the verdict first (the report's diagnosis headline can replace this later)."""
    passed = result.get("verdict") == "passed"
    mark = "✅ passed" if passed else "❌ failed"
    if result.get("command") == "select":
        count = len(result.get("candidates") or [])
        chosen = result.get("selected")
        what = f"**{markdown_text(chosen)}** selected of {count}" if chosen else f"none of {count} candidates passed"
        return f"### xgate select: {mark}: {what}"
    names = [markdown_text((c.get("candidate") or {}).get("name", "")) for c in result.get("candidates") or []]
    return f"### xgate: {mark}: **{', '.join(names)}**"


def reasons(candidate: Mapping[str, Any]) -> list[str]:
    """The failed rules of one candidate, in words (its messages), in policy order."""
    return [str(rule.get("message") or rule.get("id", "")) for rule in candidate.get("rules") or []
            if not rule.get("passed")]


def baseline_box(result: Mapping[str, Any]) -> list[str]:
    """With a baseline: each compared score (both models, the difference and its interval), McNemar, migration."""
    baseline = result.get("baseline")
    cand = _compared(result)
    comparison = (cand or {}).get("comparison")
    if not baseline or not comparison:
        return []
    name = markdown_text((baseline.get("candidate") or {}).get("name", "baseline"))
    lines = [f"**Against the baseline {name}**" + (f" ({_name(cand)})" if result.get("command") == "select" else ""),
             "", "| score | candidate | baseline | difference | interval |", "|---|---|---|---|---|"]
    mine, theirs = comparison.get("candidate_scores") or {}, comparison.get("baseline_scores") or {}
    for label, interval in sorted((comparison.get("intervals") or {}).items()):
        score = label.removeprefix("delta.").rsplit("@", 1)[0]
        delta = (comparison.get("deltas") or {}).get(f"delta.{score}")
        confidence = interval.get("confidence")
        span = f"[{_number(interval.get('low'), True)}, {_number(interval.get('high'), True)}]"
        lines.append(f"| {markdown_text(score)} | {_number(mine.get(score))} | {_number(theirs.get(score))} | "
                     f"{_number(delta, True)} | {span}{_at(confidence)} |")
    lines += ["", _migration(comparison)]
    return lines


def _compared(result: Mapping[str, Any]) -> Mapping[str, Any] | None:
    cands = result.get("candidates") or []
    chosen = [c for c in cands if (c.get("candidate") or {}).get("name") == result.get("selected")]
    first: Mapping[str, Any] | None = (chosen or cands or [None])[0]
    return first


def _candidate_lines(cand: Mapping[str, Any], result: Mapping[str, Any]) -> list[str]:
    failed = reasons(cand)
    total = len(cand.get("rules") or [])
    if not failed:
        return [f"**{_name(cand)}**: all {total} rules passed"]
    lines = [f"**{_name(cand)}**: {len(failed)} of {total} rules failed"]
    lines += [f"- {markdown_text(text)}" for text in failed[:MAX_REASONS]]
    if len(failed) > MAX_REASONS:
        lines.append(f"- … and {len(failed) - MAX_REASONS} more in the report")
    return lines


def _context(result: Mapping[str, Any]) -> str:
    policy, review = result.get("policy") or {}, result.get("review_set") or {}
    parts = [f"policy **{markdown_text(policy.get('name', ''))}**",
             f"review set **{markdown_text(review.get('name', ''))}** {markdown_text(review.get('version', ''))} "
             f"({review.get('size', '?')} samples)"]
    source = result.get("source")
    if source:
        branch = f" on {markdown_text(source.get('branch'))}" if source.get("branch") else ""
        parts.append(f"commit {markdown_text(source.get('short', ''))}{branch}")
    return " · ".join(parts)


def _migration(comparison: Mapping[str, Any]) -> str:
    moved = comparison.get("migration") or {}
    parts = []
    if comparison.get("mcnemar_p") is not None:
        parts.append(f"McNemar p = {_number(comparison['mcnemar_p'])}")
    if moved:
        parts.append(f"{moved.get('corrected', 0)} samples corrected, {moved.get('regressed', 0)} regressed "
                     "(baseline wrong → candidate right / right → wrong)")
    return " · ".join(parts)


def _links(links: Links) -> list[str]:
    found = [f"[{text}]({url})" for text, url in (("Report (artifact)", safe_url(links.artifact)),
                                                   ("MLflow run", safe_url(links.mlflow))) if url]
    return [" · ".join(found)] if found else ["_The report is in the job's artifacts._"]


def _name(cand: Mapping[str, Any] | None) -> str:
    return markdown_text(((cand or {}).get("candidate") or {}).get("name", ""))


def _number(value: object, signed: bool = False) -> str:
    if not isinstance(value, int | float):
        return "–"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _at(confidence: object) -> str:
    return f" at {confidence:.0%}" if isinstance(confidence, int | float) else ""


# --- the request ------------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would carry the token to another host: it is an error instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_comment(body: str, target: Target, *, timeout_s: float = TIMEOUT_S, max_pages: int = MAX_PAGES) -> Outcome:
    """Update this gate's comment (found by the marker on the body's first line) or create it."""
    api = f"{target.api_url.rstrip('/')}/repos/{target.repository}/issues"
    sent = 0
    first_line = body.split("\n", 1)[0]
    try:
        existing = None
        for page in range(1, max_pages + 1):
            sent += 1
            comments = _request("GET", f"{api}/{target.number}/comments?per_page={PER_PAGE}&page={page}", target,
                                None, timeout_s)
            existing = next((c for c in comments if str(c.get("body", "")).startswith(first_line)), None)
            if existing is not None or len(comments) < PER_PAGE:
                break
        sent += 1
        if existing is not None:
            try:
                done = _request("PATCH", f"{api}/comments/{int(existing['id'])}", target, {"body": body}, timeout_s)
                return Outcome("updated", f"updated the xgate comment on pull request #{target.number}", sent,
                               str(done.get("html_url", "")))
            except urllib.error.HTTPError as exc:
                if exc.code != 403:
                    raise
                sent += 1  # someone else's comment carries the marker: ours is a new one
        done = _request("POST", f"{api}/{target.number}/comments", target, {"body": body}, timeout_s)
        return Outcome("created", f"commented on pull request #{target.number}", sent, str(done.get("html_url", "")))
    except urllib.error.HTTPError as exc:
        return _refused(exc.code, target, sent)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # unreachable, timeout, not JSON
        return Outcome("failed", _redact(f"could not comment on the pull request: {type(exc).__name__}: {exc}",
                                         target.token), sent)


def _refused(code: int, target: Target, sent: int) -> Outcome:
    if code in (403, 404):
        return Outcome("skipped", f"no permission to comment on pull request #{target.number} (HTTP {code}): a "
                                  "pull request from a fork gets a read-only token, and the workflow needs "
                                  "`permissions: pull-requests: write`; no comment", sent)
    return Outcome("failed", f"could not comment on pull request #{target.number}: HTTP {code}", sent)


def _request(method: str, url: str, target: Target, payload: Mapping[str, str] | None, timeout_s: float) -> Any:
    data = None if payload is None else json.dumps(payload).encode("utf-8")
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {target.token}", "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "xgate", "Content-Type": "application/json"})
    with _OPENER.open(request, timeout=timeout_s) as response:
        if response.status >= 300:  # a redirect that was not followed
            raise urllib.error.HTTPError(url, response.status, "redirect refused", response.headers, None)
        return json.loads(response.read().decode("utf-8") or "null")


def _redact(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


# --- the action step --------------------------------------------------------------------------------------


def target_from_env(env: Mapping[str, str]) -> Target | None:
    """The pull request of this workflow run, or None when the event is not a pull request."""
    event = _event(env.get("GITHUB_EVENT_PATH", ""))
    pull = event.get("pull_request") if isinstance(event, dict) else None
    if not isinstance(pull, dict):
        return None
    number = pull.get("number")
    if not isinstance(number, int) or isinstance(number, bool) or number <= 0:
        raise InputError("pull_request.number is not a positive integer", path=env.get("GITHUB_EVENT_PATH"),
                         field="pull_request.number")
    repository = env.get("GITHUB_REPOSITORY", "")
    if not _REPOSITORY.fullmatch(repository):
        raise InputError(f"$GITHUB_REPOSITORY is not owner/name: {repository[:80]!r}", field="GITHUB_REPOSITORY")
    api_url = env.get("GITHUB_API_URL") or "https://api.github.com"
    if not safe_url(api_url) or safe_url(api_url) != api_url:
        raise InputError(f"$GITHUB_API_URL is not an http(s) URL: {api_url[:80]!r}", field="GITHUB_API_URL")
    return Target(api_url=api_url, repository=repository, number=number, token=env.get("GITHUB_TOKEN", ""))


def _event(path: str) -> Any:
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the event payload: {exc}", path=path, field="GITHUB_EVENT_PATH") from None


def read_result(path: Path) -> Mapping[str, Any]:
    """result.json as written by the gate (an InputError naming the file when it is missing or not one)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the gate's result: {getattr(exc, 'strerror', None) or exc}", path=path,
                         field="result") from None
    if not isinstance(data, dict) or not isinstance(data.get("candidates"), list):
        raise InputError("not an xgate result (no candidates list)", path=path, field="candidates")
    return data


def comment_from_env(env: Mapping[str, str], echo: Callable[[str], None]) -> int:
    """The action's comment step: 0 when commented or skipped (with a notice), 2 on bad input.

    Skipped: ``comment`` false or empty, not a pull request, no result.json (the gate step failed before
    writing it and says why), no token, a read-only token (fork), the API unreachable (a warning).

    Reads XGATE_COMMENT (must be "true"), XGATE_RESULT, XGATE_ARTIFACT_URL, XGATE_MLFLOW_RUN_URL,
    XGATE_COMMENT_KEY (the artifact name) and GitHub's GITHUB_TOKEN, GITHUB_EVENT_PATH, GITHUB_REPOSITORY,
    GITHUB_API_URL. A failed request is a warning: the gate's verdict is the step before, not this.
    """
    if env.get("XGATE_COMMENT", "true") in ("", "false"):
        return 0
    try:
        if env.get("XGATE_COMMENT", "true") != "true":
            raise InputError(f"comment must be true or false, got {env.get('XGATE_COMMENT', '')[:40]!r}",
                             field="comment")
        target = target_from_env(env)
        if target is None:
            echo("::notice title=xgate::not a pull request: no comment")
            return 0
        if not target.token:
            echo("::warning title=xgate::no GITHUB_TOKEN: no comment on the pull request")
            return 0
        path = Path(env.get("XGATE_RESULT") or "xgate-out/result.json")
        if not path.exists():  # the gate stopped before writing it (bad input): its own step says why
            echo(f"::notice title=xgate::no {path.name}, the gate did not finish: no comment")
            return 0
        result = read_result(path)
    except InputError as exc:
        echo(f"::error title=xgate::{_one_line(exc.one_line())}")
        return 2
    links = Links(artifact=env.get("XGATE_ARTIFACT_URL", ""), mlflow=env.get("XGATE_MLFLOW_RUN_URL", ""))
    outcome = post_comment(comment_body(result, links, env.get("XGATE_COMMENT_KEY") or "xgate-report"), target)
    level = {"created": "notice", "updated": "notice", "skipped": "notice"}.get(outcome.action, "warning")
    echo(f"::{level} title=xgate::{_one_line(_redact(outcome.message, target.token))}")
    return 0


def _one_line(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


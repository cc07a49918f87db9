"""The sticky pull-request comment: its text (escaped), and the REST calls against a local stand-in for GitHub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from tracking_fixtures import candidate, gate_result

from gate.outputs.pr_comment import (
    Links,
    Target,
    comment_body,
    comment_from_env,
    markdown_text,
    marker,
    post_comment,
    safe_url,
)
from gate.result import CandidateResult, Comparison, DeltaInterval, Migration, RuleResult

REPO = Path(__file__).resolve().parents[1]
TOKEN = "ghs_secretTOKEN1234567890"
HOSTILE = "<img src=x onerror=alert(1)> [click](javascript:alert(1)) @org/team **bold** | `code`"


class Handler(BaseHTTPRequestHandler):
    """GitHub's issue-comment endpoints for o/r#7, from the FakeGitHub that serves them."""

    server: Any  # ThreadingHTTPServer with a `fake` attribute

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _answer(self, code: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        fake.requests.append({"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body})
        if fake.mode == "hang":
            time.sleep(3)
        if fake.mode == "redirect":
            return self._answer(302, {}, {"Location": fake.redirect_to + self.path})
        if fake.mode == "forbidden" and self.command != "GET":
            return self._answer(403, {"message": "Resource not accessible by integration"})
        return self._route(fake, urlsplit(self.path), body)

    def _route(self, fake: FakeGitHub, url: Any, body: Any) -> None:
        if self.command == "GET" and url.path == "/repos/o/r/issues/7/comments":
            query = parse_qs(url.query)
            size, page = int(query["per_page"][0]), int(query["page"][0])
            return self._answer(200, fake.comments[(page - 1) * size: page * size])
        if self.command == "POST" and url.path == "/repos/o/r/issues/7/comments":
            comment = {"id": 1000 + len(fake.comments), "body": body["body"],
                       "html_url": f"https://github.test/o/r/pull/7#c{len(fake.comments)}"}
            fake.comments.append(comment)
            return self._answer(201, comment)
        if self.command == "PATCH" and url.path.startswith("/repos/o/r/issues/comments/"):
            number = int(url.path.rsplit("/", 1)[1])
            if number in fake.foreign:
                return self._answer(403, {"message": "not yours"})
            comment = next(c for c in fake.comments if c["id"] == number)
            comment["body"] = body["body"]
            return self._answer(200, comment)
        return self._answer(404, {"message": "Not Found"})

    do_GET = do_POST = do_PATCH = _handle  # noqa: N815 - http.server's names


class FakeGitHub:
    """Issue comments of one pull request (o/r#7), served on 127.0.0.1; every request is recorded."""

    def __init__(self) -> None:
        self.comments: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.mode = "ok"  # ok | forbidden | hang | redirect
        self.redirect_to = ""
        self.foreign: set[int] = set()  # ids of comments the token may not edit
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.fake = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def ours(self) -> list[dict[str, Any]]:
        return [c for c in self.comments if c["body"].startswith(marker("xgate-report"))]


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


def rule(rule_id: str, passed: bool, message: str) -> RuleResult:
    return RuleResult(rule_id=rule_id, score=rule_id.split()[0], op=">=", threshold=0.9, value=0.5, passed=passed,
                      message=message, higher_is_better=True)


def failing(name: str = "cheater.pt") -> CandidateResult:
    rules = (rule("accuracy >= 0.9", False, "accuracy = 0.913 (95% lower bound 0.893) fails >= 0.9"),
             rule("alignment.lift >= 2", True, "fine"),
             rule("background.only_bg_accuracy <= 0.4", False, "the scene alone is answered right on 92%"))
    cand = candidate(name, False)
    return replace(cand, rules=rules, comparison=Comparison(
        deltas={"delta.accuracy": 0.013}, candidate_scores={"accuracy": 0.913}, baseline_scores={"accuracy": 0.9},
        migration=Migration(corrected=12, regressed=8, still_wrong=3, still_right=377,
                            still_wrong_confidence_dropped=0.5),
        class_deltas={}, mcnemar_p=0.4119, intervals=(DeltaInterval("accuracy", 0.95, -0.004, 0.03),)))


def result_json(cand: CandidateResult | None = None) -> dict[str, Any]:
    result = gate_result(cand or failing())
    return replace(result, baseline=candidate("baseline.pt", True)).to_json()


def env_for(tmp_path: Path, github: FakeGitHub, result: dict[str, Any], **extra: str) -> dict[str, str]:
    (tmp_path / "result.json").write_text(json.dumps(result))
    (tmp_path / "event.json").write_text(json.dumps({"pull_request": {"number": 7}}))
    return {"GITHUB_TOKEN": TOKEN, "GITHUB_EVENT_PATH": str(tmp_path / "event.json"), "GITHUB_REPOSITORY": "o/r",
            "GITHUB_API_URL": github.url, "XGATE_RESULT": str(tmp_path / "result.json"), "XGATE_COMMENT": "true",
            "XGATE_ARTIFACT_URL": "https://github.test/o/r/actions/runs/1/artifacts/2",
            "XGATE_MLFLOW_RUN_URL": "http://mlflow.test/#/experiments/1/runs/abc", **extra}


def run_step(env: dict[str, str]) -> tuple[int, list[str]]:
    printed: list[str] = []
    return comment_from_env(env, printed.append), printed


# --- the text ---------------------------------------------------------------------------------------------


def test_the_comment_has_headline_reasons_baseline_box_and_links() -> None:
    body = comment_body(result_json(), Links(artifact="https://a.test/x", mlflow="http://m.test/#/runs/1"))
    lines = body.splitlines()
    assert lines[0] == "<!-- xgate-comment:xgate-report -->"
    assert lines[1] == "### xgate: ❌ failed: **cheater\\.pt**"
    assert lines[3] == ("policy **strict** · review set **shapes\\-v1** 1 (4 samples) · commit 1111111 on main")
    assert lines[5:8] == [
        "**cheater\\.pt**: 2 of 3 rules failed",
        "- accuracy \\= 0\\.913 \\(95\\% lower bound 0\\.893\\) fails &gt;\\= 0\\.9",
        "- the scene alone is answered right on 92\\%"]
    assert "**Against the baseline baseline\\.pt**" in lines
    assert "| accuracy | 0.913 | 0.9 | +0.013 | [-0.004, +0.03] at 95% |" in lines
    assert "McNemar p = 0.4119 · 12 samples corrected, 8 regressed (baseline wrong → candidate right / right → " \
           "wrong)" in lines
    assert lines[-1] == "[Report (artifact)](https://a.test/x) · [MLflow run](http://m.test/#/runs/1)"


def test_a_select_comment_names_the_winner_and_each_candidate() -> None:
    winner = replace(candidate("bgmix.pt", True), rules=(rule("accuracy >= 0.9", True, "ok"),))
    result = replace(gate_result(winner, failing(), command="select", selected="bgmix.pt")).to_json()
    body = comment_body(result, Links())
    assert body.splitlines()[1] == "### xgate select: ✅ passed: **bgmix\\.pt** selected of 2"
    assert "**bgmix\\.pt**: all 1 rules passed" in body and "**cheater\\.pt**: 2 of 3 rules failed" in body
    assert body.rstrip().endswith("_The report is in the job's artifacts._")  # no links given
    assert "Against the baseline" not in body  # no baseline


def test_candidate_names_and_messages_cannot_inject_markdown_html_links_or_mentions() -> None:
    cand = replace(failing(HOSTILE), rules=(rule("accuracy >= 0.9", False, HOSTILE + "\n# heading\n|a|b|"),))
    body = comment_body(result_json(cand), Links(artifact="javascript:alert(1)", mlflow="https://m.test/a)b c"))
    assert "<img" not in body and "](javascript" not in body and "javascript:alert(1))" not in body.split("](")[-1]
    assert "@\u200b" in body and "@org" not in body.replace("@\u200b", "")
    assert "\n#" not in body.replace("\n###", "") and "**bold**" not in body
    assert "[MLflow run](https://m.test/a%29b%20c)" in body and "Report (artifact)" not in body
    markdown_it = pytest.importorskip("markdown_it")
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(body)
    assert "<img" not in html and "<a href" in html
    assert [a for a in html.split("<a href=")[1:] if not a.startswith('"https://m.test/')] == []
    assert "<strong>bold</strong>" not in html and "<code>" not in html and "<h1>" not in html


def test_markdown_text_and_safe_url_by_hand() -> None:
    assert markdown_text("a_b*c\n<d>") == "a\\_b\\*c &lt;d&gt;"
    assert markdown_text("me@x.io") == "me\\@\u200bx\\.io"
    assert safe_url("javascript:alert(1)") == "" and safe_url("ftp://x/y") == "" and safe_url("https://x\n/") == ""
    assert safe_url("https://x.test/a(b)") == "https://x.test/a%28b%29"
    assert marker("my report/../x") == "<!-- xgate-comment:my_report_.._x -->"


# --- the requests -----------------------------------------------------------------------------------------


def test_created_once_then_updated_in_place(tmp_path: Path, github: FakeGitHub) -> None:
    github.comments.append({"id": 1, "body": "LGTM"})  # someone else's comment stays untouched
    env = env_for(tmp_path, github, result_json())
    code, printed = run_step(env)
    assert code == 0 and printed == ["::notice title=xgate::commented on pull request #7"]
    assert [(r["method"], urlsplit(r["path"]).path) for r in github.requests] == [
        ("GET", "/repos/o/r/issues/7/comments"), ("POST", "/repos/o/r/issues/7/comments")]
    assert len(github.ours()) == 1 and "❌ failed" in github.ours()[0]["body"]

    passing = replace(candidate("cheater.pt", True), rules=(rule("accuracy >= 0.9", True, "ok"),))
    env = env_for(tmp_path, github, result_json(passing))
    github.requests.clear()
    code, printed = run_step(env)
    assert code == 0 and printed == ["::notice title=xgate::updated the xgate comment on pull request #7"]
    assert [r["method"] for r in github.requests] == ["GET", "PATCH"]
    assert github.requests[1]["path"] == "/repos/o/r/issues/comments/1001"
    assert len(github.ours()) == 1 and "✅ passed" in github.ours()[0]["body"]
    assert github.comments[0] == {"id": 1, "body": "LGTM"}


def test_the_token_goes_only_in_the_authorization_header(tmp_path: Path, github: FakeGitHub) -> None:
    code, printed = run_step(env_for(tmp_path, github, result_json()))
    assert code == 0 and TOKEN not in "".join(printed)
    for request in github.requests:
        headers = {key.lower(): value for key, value in request["headers"].items()}
        assert headers["authorization"] == f"Bearer {TOKEN}" and headers["x-github-api-version"] == "2022-11-28"
        assert [k for k, v in headers.items() if TOKEN in v] == ["authorization"]
        assert TOKEN not in request["path"] and TOKEN not in json.dumps(request["body"])


def test_a_fork_without_write_permission_skips_with_a_notice(tmp_path: Path, github: FakeGitHub) -> None:
    github.mode = "forbidden"
    code, printed = run_step(env_for(tmp_path, github, result_json()))
    assert code == 0 and len(printed) == 1
    assert printed[0].startswith("::notice title=xgate::no permission to comment on pull request #7 (HTTP 403)")
    assert "pull-requests: write" in printed[0] and TOKEN not in printed[0]
    assert github.comments == [] and [r["method"] for r in github.requests] == ["GET", "POST"]


def test_the_marker_is_found_on_a_later_page_and_the_search_is_bounded(github: FakeGitHub) -> None:
    body = comment_body(result_json(), Links())
    github.comments = [{"id": n, "body": f"chatter {n}"} for n in range(150)]
    github.comments.append({"id": 999, "body": body})
    target = Target(api_url=github.url, repository="o/r", number=7, token=TOKEN)
    outcome = post_comment(body, target)
    assert (outcome.action, outcome.requests) == ("updated", 3)  # pages 1 and 2, then the PATCH
    github.comments = [{"id": n, "body": f"chatter {n}"} for n in range(1000)]
    github.requests.clear()
    outcome = post_comment(body, target, max_pages=3)
    assert outcome.action == "created" and len(github.requests) == 4 == outcome.requests  # 3 pages, then POST


def test_a_comment_someone_else_wrote_with_the_marker_is_not_ours(github: FakeGitHub) -> None:
    body = comment_body(result_json(), Links())
    github.comments = [{"id": 5, "body": body}]
    github.foreign = {5}
    outcome = post_comment(body, Target(api_url=github.url, repository="o/r", number=7, token=TOKEN))
    assert outcome.action == "created" and [r["method"] for r in github.requests] == ["GET", "PATCH", "POST"]
    assert github.comments[0]["id"] == 5 and len(github.comments) == 2


def test_a_hanging_api_times_out_as_a_warning(tmp_path: Path, github: FakeGitHub) -> None:
    github.mode = "hang"
    started = time.monotonic()
    outcome = post_comment("x", Target(api_url=github.url, repository="o/r", number=7, token=TOKEN), timeout_s=0.5)
    assert time.monotonic() - started < 2.5  # one request, its timeout, no retries
    assert outcome.action == "failed" and outcome.requests == 1 and TOKEN not in outcome.message


def test_a_redirect_is_not_followed_so_the_token_stays_home(github: FakeGitHub) -> None:
    elsewhere = FakeGitHub()
    elsewhere.thread.start()
    try:
        github.mode, github.redirect_to = "redirect", elsewhere.url
        outcome = post_comment("x", Target(api_url=github.url, repository="o/r", number=7, token=TOKEN))
        assert outcome.action == "failed" and "302" in outcome.message
        assert elsewhere.requests == []
    finally:
        elsewhere.server.shutdown()
        elsewhere.server.server_close()


def test_not_a_pull_request_is_a_notice_and_no_request(tmp_path: Path, github: FakeGitHub) -> None:
    env = env_for(tmp_path, github, result_json())
    (tmp_path / "event.json").write_text(json.dumps({"push": {"ref": "refs/heads/main"}}))
    assert run_step(env) == (0, ["::notice title=xgate::not a pull request: no comment"])
    assert github.requests == []


@pytest.mark.parametrize(("change", "needle"), [
    ({"XGATE_COMMENT": "yes"}, "comment must be true or false"),
    ({"GITHUB_REPOSITORY": "o/r/../x"}, "GITHUB_REPOSITORY"),
    ({"GITHUB_API_URL": "file:///etc/passwd"}, "GITHUB_API_URL"),
    ({"XGATE_RESULT": "__file__"}, "not an xgate result"),
], ids=["comment-yes", "repository", "api-url", "not-a-result"])
def test_bad_inputs_exit_2_with_one_error_line(tmp_path: Path, github: FakeGitHub, change: dict[str, str],
                                               needle: str) -> None:
    if change.get("XGATE_RESULT") == "__file__":
        (tmp_path / "other.json").write_text('{"verdict": "passed"}')
        change = {"XGATE_RESULT": str(tmp_path / "other.json")}
    code, printed = run_step({**env_for(tmp_path, github, result_json()), **change})
    assert code == 2 and len(printed) == 1 and printed[0].startswith("::error title=xgate::") and needle in printed[0]
    assert github.requests == []


def test_no_result_or_comment_false_posts_nothing_and_passes(tmp_path: Path, github: FakeGitHub) -> None:
    env = env_for(tmp_path, github, result_json())
    assert run_step({**env, "XGATE_RESULT": str(tmp_path / "missing.json")}) == (
        0, ["::notice title=xgate::no missing.json, the gate did not finish: no comment"])
    assert run_step({**env, "XGATE_COMMENT": "false"}) == (0, [])
    assert run_step({**env, "XGATE_COMMENT": ""}) == (0, [])
    assert github.requests == []


def test_a_bad_pull_request_number_in_the_event_is_bad_input(tmp_path: Path, github: FakeGitHub) -> None:
    env = env_for(tmp_path, github, result_json())
    (tmp_path / "event.json").write_text(json.dumps({"pull_request": {"number": "7; rm -rf /"}}))
    code, printed = run_step(env)
    assert code == 2 and "pull_request.number" in printed[0] and github.requests == []


# --- the action step -------------------------------------------------------------------------------------------


def test_the_action_comments_after_the_upload_with_inputs_through_env_only() -> None:
    import yaml

    action = yaml.safe_load((REPO / "action.yml").read_text())
    assert action["inputs"]["comment"]["default"] == "false"
    steps = action["runs"]["steps"]
    names = [step.get("name") for step in steps]
    comment = steps[names.index("Comment on the pull request")]
    assert names.index("Comment on the pull request") > names.index("Upload the report")  # the artifact URL exists
    assert comment["if"] == "always() && inputs.comment != 'false'"  # a failed gate is commented too
    assert comment["run"] == 'python "$GITHUB_ACTION_PATH/scripts/action_comment.py"'
    assert comment["env"]["GITHUB_TOKEN"] == "${{ github.token }}"
    assert comment["env"]["XGATE_ARTIFACT_URL"] == "${{ steps.upload.outputs.artifact-url }}"
    assert comment["env"]["XGATE_MLFLOW_RUN_URL"] == "${{ steps.gate.outputs.mlflow-run-url }}"
    assert "comment: true" in (REPO / "README.md").read_text()


def test_the_script_posts_the_comment(tmp_path: Path, github: FakeGitHub) -> None:
    env = {**env_for(tmp_path, github, result_json()), "PATH": os.environ["PATH"],
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "action_comment.py")], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout == "::notice title=xgate::commented on pull request #7\n"
    assert TOKEN not in done.stdout + done.stderr and len(github.ours()) == 1

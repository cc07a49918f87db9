"""The console summary: colour only when asked, the device and model names in the first line, one rule-count
wording (the rest of the summary is tested in tests/test_outputs.py)."""

from __future__ import annotations

import io
import re
from dataclasses import replace

import pytest
from report_fixtures import check_result, select_result

from gate.cli import progress
from gate.outputs.github import summary_markdown
from gate.outputs.summary import GREEN, RED, RESET, YELLOW, format_summary

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_colour_marks_verdicts_rules_and_notes_and_is_off_by_default() -> None:
    result = check_result(kept=0)
    cand = result.candidates[0]
    noted = replace(cand.rules[1], note="the review set is too small to settle it")
    result = replace(result, candidates=(replace(cand, rules=(cand.rules[0], noted, *cand.rules[2:])),))
    plain = format_summary(result, None)
    coloured = format_summary(result, None, color=True)
    assert ANSI.search(plain) is None
    assert ANSI.sub("", coloured) == plain  # colour adds codes, never changes the words
    lines = coloured.splitlines()
    assert lines[0] == f"xgate check: {RED}FAILED{RESET} - cand.pt on cpu"
    assert lines[2] == f"cand.pt: {RED}failed{RESET} (1 of 5 rules failed)"
    assert lines[3] == "  Accuracy: the model is right too rarely (accuracy below the floor)"
    assert lines[4] == f"  {RED}FAIL{RESET}  accuracy >= 0.95: 67.5% < 95%: failed"
    assert lines[5].startswith(f"  {GREEN}pass{RESET}  ")
    assert lines[5].endswith(f"{YELLOW}  (the review set is too small to settle it){RESET}")


def test_an_undecided_rule_says_its_bound_and_undecided_in_yellow() -> None:
    result = check_result(kept=0)
    cand = result.candidates[0]
    undecided = replace(cand.rules[0], value=0.913, interval=(0.893, 0.93), confidence=0.95,
                        rule_id="accuracy >= 0.9 @95%", threshold=0.9, passed=False)
    result = replace(result, candidates=(replace(cand, rules=(undecided, *cand.rules[1:])),))
    lines = format_summary(result, None, color=True).splitlines()
    assert lines[3] == "  Accuracy not shown: accuracy may be below the floor on this many samples"
    assert lines[4] == (f"  {RED}FAIL{RESET}  accuracy >= 0.9 @95%: 91.3% ≥ 90%, but the 95% lower bound is 89.3%: "
                        f"{YELLOW}undecided{RESET}; more samples would settle it")


def test_select_header_names_the_candidates_and_device() -> None:
    result = select_result(kept=0)
    env = {"device": "cuda:0", "device_name": "NVIDIA H200"}
    lines = format_summary(replace(result, environment=env), None, color=True).splitlines()
    assert lines[0] == f"xgate select: {GREEN}PASSED{RESET} - a.pt, b.pt, c.pt on cuda:0 (NVIDIA H200)"
    assert f"  <- selected{RESET}" in lines[3]
    many = replace(result, candidates=tuple(replace(c, candidate=replace(c.candidate, name=f"{'x' * 30}{i}.pt"))
                                            for i, c in enumerate(result.candidates)), environment={})
    assert format_summary(many, None).splitlines()[0] == "xgate select: PASSED - 3 candidates"


def test_rule_counts_read_the_same_in_the_console_and_the_job_summary() -> None:
    result = check_result(kept=0)
    assert "1 of 5 rules failed" in format_summary(result, None)
    assert "1 of 5 rules failed" in summary_markdown(result, None)


class FakeTty(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("tty", "env", "want"), [
    (True, {}, True),
    (False, {}, False),  # piped
    (True, {"NO_COLOR": "1"}, False),
    (True, {"NO_COLOR": ""}, True),  # no-color.org: only a non-empty value counts
    (True, {"TERM": "dumb"}, False),
], ids=["terminal", "piped", "no-color", "empty-no-color", "dumb-term"])
def test_the_cli_colours_only_a_terminal(monkeypatch: pytest.MonkeyPatch, tty: bool, env: dict[str, str],
                                         want: bool) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("sys.stdout", FakeTty(tty))
    assert progress.color() is want

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from bs4 import BeautifulSoup
from report_fixtures import XSS, check_result, select_result

from gate.errors import InputError
from gate.outputs.files import OutputPaths, check_paths, default_paths, result_json, write_outputs
from gate.outputs.summary import MAX_FAILED_LINES, MAX_RULE_LINES, format_summary
from gate.result import RuleResult


def _refuse_constant(name: str) -> float:
    raise AssertionError(f"non-standard JSON constant {name}")


def test_default_paths_and_overrides(tmp_path: Path) -> None:
    paths = default_paths(tmp_path / "out")
    assert paths == OutputPaths(tmp_path / "out/report.html", tmp_path / "out/result.json", tmp_path / "out/junit.xml")
    moved = default_paths(tmp_path / "out", json=tmp_path / "elsewhere/r.json")
    assert moved.json == tmp_path / "elsewhere/r.json" and moved.report == paths.report and moved.junit == paths.junit


def test_write_outputs_writes_all_three_files(tmp_path: Path) -> None:
    result = check_result(baseline=True, kept=4)
    paths = default_paths(tmp_path / "deep/out", junit=tmp_path / "other/junit.xml")
    assert write_outputs(result, paths) == paths
    text = paths.json.read_text(encoding="utf-8")
    document = json.loads(text, parse_constant=_refuse_constant)
    # Expected values written out, not taken from to_json() (the code under test).
    assert set(document) == {"format", "command", "verdict", "selected", "rank_by", "ranking", "created", "policy",
                             "review_set", "candidates", "baseline", "timings", "environment", "source"}
    assert document["source"] is None  # built without a commit
    assert document["command"] == "check" and document["created"] == "2025-01-01T00:00:00+00:00"
    assert document["environment"] == {"torch": "2.14.1", "device": "cpu"} and document["timings"] == {"total_s": 3.5}
    assert document["review_set"]["pinned"] is True
    assert [c["candidate"]["name"] for c in document["candidates"]] == ["cand.pt"]
    assert document["baseline"]["candidate"]["name"] != "cand.pt"
    assert document["format"] == "xgate.result/v1" and document["verdict"] == "failed"
    assert document["candidates"][0]["scores"]["nll"] is None  # NaN became null
    assert text.startswith('{\n  "format"')  # indent=2
    assert paths.junit.read_text(encoding="utf-8").startswith("<?xml")
    soup = BeautifulSoup(paths.report.read_text(encoding="utf-8"), "html.parser")
    assert soup.find("section", id="verdict") is not None


def test_result_json_refuses_nan_that_escaped_to_json() -> None:
    result = check_result(kept=0)
    bad = replace(result.candidates[0], timings={"engine_s": float("nan")})
    with pytest.raises(Exception, match="not JSON-safe") as info:
        result_json(replace(result, candidates=(bad,)))
    assert info.value.exit_code == 3  # type: ignore[attr-defined]  # an internal error, not the user's


def test_unwritable_output_is_an_input_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    paths = default_paths(tmp_path, report=blocker / "report.html")
    with pytest.raises(InputError) as info:
        write_outputs(check_result(kept=0), paths)
    assert info.value.exit_code == 2 and info.value.field == "report" and str(blocker) in str(info.value)
    assert not paths.json.exists() and not paths.junit.exists()  # all or none: no verdict without its report
    assert not list(tmp_path.glob(".*.tmp"))  # no temporaries left behind


def test_an_interrupt_while_renaming_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    paths = default_paths(tmp_path / "out")
    real_replace = os.replace
    calls: list[str] = []

    def replace_then_interrupt(src: str, dst: str) -> None:
        calls.append(Path(dst).name)
        if len(calls) == 2:  # the report is in place, SIGINT arrives before junit.xml
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_outputs(check_result(kept=0), paths)
    assert calls == ["report.html", "junit.xml"]  # result.json is renamed last
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []  # the report placed first was removed


def test_files_are_replaced_whole_never_truncated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = default_paths(tmp_path)
    write_outputs(check_result(kept=0), paths)
    first = paths.json.read_bytes()
    inode = paths.json.stat().st_ino
    write_outputs(check_result(kept=0), paths)
    assert paths.json.read_bytes() == first
    assert paths.json.stat().st_ino != inode  # a new file renamed over the old one, not the old one rewritten


@pytest.mark.parametrize("which", ["report", "json", "junit"])
def test_check_paths_removes_earlier_outputs_and_refuses_folders(tmp_path: Path, which: str) -> None:
    paths = default_paths(tmp_path / "out")
    write_outputs(check_result(kept=0), paths)
    check_paths(paths)
    assert not any(p.exists() for p in (paths.report, paths.json, paths.junit))
    (tmp_path / "out" / getattr(paths, which).name).mkdir()
    with pytest.raises(InputError) as info:
        check_paths(paths)
    assert info.value.field == which and "folder" in info.value.message


def test_check_paths_refuses_two_outputs_on_one_file(tmp_path: Path) -> None:
    paths = default_paths(tmp_path, report=tmp_path / "x", json=tmp_path / "x")
    with pytest.raises(InputError, match="same file"):
        check_paths(paths)


def test_check_paths_finds_an_unwritable_folder_first(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError) as info:
        check_paths(default_paths(tmp_path, junit=blocker / "sub" / "junit.xml"))
    assert info.value.field == "junit" and info.value.exit_code == 2


def test_summary_for_check_lists_failed_then_passed_rules_and_paths(tmp_path: Path) -> None:
    result = check_result(baseline=True, kept=0)
    lines = format_summary(result, default_paths(tmp_path)).splitlines()
    assert lines[0] == "xgate check: FAILED - cand.pt on cpu"
    assert lines[1] == "policy strict, review set shapes-v1 1 (40 samples)"
    assert lines[2] == "baseline: prod.pt"
    assert lines[3] == "cand.pt: failed (1 of 5 rules failed)"
    assert lines[4] == "  Accuracy: the model is right too rarely (accuracy below the floor)"
    assert result.candidates[0].scores["accuracy"] == 27 / 40
    assert lines[5] == "  FAIL  accuracy >= 0.95: 67.5% < 95%: failed"
    assert lines[6] == "  pass  ece <= 0.5: 8% ≤ 50%: passed"
    assert lines[7] == f"  pass  class_accuracy.{XSS} >= 0.0: 60% ≥ 0%: passed"
    assert lines[-3:] == [f"report: {tmp_path / 'report.html'}", f"json:   {tmp_path / 'result.json'}",
                          f"junit:  {tmp_path / 'junit.xml'}"]


def test_summary_for_select_ranks_the_passing_and_explains_the_rejected() -> None:
    result = select_result(kept=0)
    a, b, c = result.candidates
    lines = format_summary(result, None).splitlines()
    assert (a.scores["accuracy"], b.scores["accuracy"], c.scores["accuracy"]) == (27 / 40, 31 / 40, 25 / 40)
    assert lines[2:] == [
        "passed, ranked by accuracy (ties: next score, then name):",
        "  1. a.pt  accuracy 67.5%  <- selected",
        "  2. c.pt  accuracy 62.5%",
        "rejected:",
        "  b.pt: 1 of 5 rules failed - Accuracy: the model is right too rarely (accuracy below the floor)",
        "    FAIL  accuracy >= 0.99: 77.5% < 99%: failed",
        "selected: a.pt",
    ]


def test_summary_for_select_follows_the_ranking_not_the_argument_order() -> None:
    result = select_result(kept=0)
    text = format_summary(replace(result, ranking=("c.pt", "a.pt", "b.pt"), selected="c.pt"), None)
    assert text.index("1. c.pt") < text.index("2. a.pt")
    assert "1. c.pt" in text.splitlines()[3] and text.splitlines()[3].endswith("<- selected")


def forty_rules() -> tuple[RuleResult, ...]:
    """40 rules; every third one (14 in all) fails."""
    return tuple(
        RuleResult(rule_id=f"rule{i}", score="accuracy", op=">=", threshold=0.5, value=0.6 if i % 3 else 0.1,
                   passed=bool(i % 3), message="", higher_is_better=True)
        for i in range(40)
    )


def test_summary_stays_on_one_screen_with_many_rules() -> None:
    result = select_result(kept=0)
    many = forty_rules()
    candidates = tuple(replace(c, rules=many) for c in result.candidates)
    lines = format_summary(replace(result, candidates=candidates, selected=None), None).splitlines()
    assert len(lines) == 2 + 1 + 3 * (1 + MAX_FAILED_LINES + 1) + 1
    first = lines.index("  a.pt: 14 of 40 rules failed - Accuracy: the model is right too rarely (accuracy below the "
                        "floor)")
    shown = lines[first + 1: first + 1 + MAX_FAILED_LINES]
    assert all(line.startswith("    FAIL  rule") for line in shown)  # only failed rules are listed
    assert lines[first + 1 + MAX_FAILED_LINES] == f"    ... {14 - MAX_FAILED_LINES} more failed rules"
    assert lines[-1] == "selected: none (no candidate passed)"


def test_check_summary_keeps_passing_rules_and_caps_lines() -> None:
    result = check_result(kept=0)
    many = forty_rules()
    text = format_summary(replace(result, candidates=(replace(result.candidates[0], rules=many),)), None)
    lines = text.splitlines()
    first = lines.index("cand.pt: failed (14 of 40 rules failed)") + 1  # then the diagnosis headline
    shown = lines[first + 1: first + 1 + MAX_RULE_LINES]
    assert [line.startswith("  FAIL  ") for line in shown] == [True] * 14 + [False] * (MAX_RULE_LINES - 14)
    assert lines[first + 1 + MAX_RULE_LINES] == f"  ... {40 - MAX_RULE_LINES} more rules (0 failed)"


def test_a_passing_check_has_no_select_marker() -> None:
    result = check_result(kept=0)
    cand = result.candidates[0]
    passing = replace(cand, rules=tuple(replace(r, passed=True) for r in cand.rules))
    lines = format_summary(replace(result, candidates=(passing,), selected="cand.pt"), None).splitlines()
    assert lines[2] == f"cand.pt: passed (0 of {len(cand.rules)} rules failed)"
    assert not any("selected" in line for line in lines)


def test_check_summary_with_a_baseline_shows_the_paired_comparison() -> None:
    result = check_result(baseline=True, kept=0)
    (cand,) = result.candidates
    assert cand.comparison is not None
    moved = cand.comparison.migration
    lines = format_summary(result, None).splitlines()
    assert cand.scores["delta.accuracy"] == pytest.approx(-2 / 40)
    assert lines[-2] == "  vs baseline prod.pt: accuracy -5.0 pts [-5.0 pts, +11.0 pts] at 95%, McNemar p 0.0312"
    assert lines[-1] == (f"  samples: {moved.corrected} corrected, {moved.regressed} regressed, "
                         f"{moved.still_wrong} still wrong (confidence dropped on 50%)")


def test_select_summary_with_a_baseline_shows_each_accuracy_delta() -> None:
    result = select_result(baseline=True, kept=0)
    assert result.candidates[0].scores["delta.accuracy"] == pytest.approx(-2 / 40)
    assert "1. a.pt  accuracy 67.5%  (vs baseline: accuracy -5.0 pts)" in format_summary(result, None)


@pytest.mark.parametrize(
    ("op", "higher", "interval", "line"),
    [
        # low >= -max_drop
        ("non_inferior", True, (-0.004, 0.006), "change +0.1 pts ≥ -1.0 pts, and the lower bound -0.4 pts ≥ -1.0 pts"),
        # high <= +max_drop
        ("non_inferior", False, (-0.004, 0.006), "change +0.1 pts ≤ +1.0 pts, and the upper bound +0.6 pts ≤ +1.0 pts"),
        # low > +min_gain: not so here, and the line says so although the (made-up) rule passed
        ("superior", True, (-0.004, 0.006), "change +0.1 pts ≤ +1.0 pts, and the lower bound -0.4 pts ≤ +1.0 pts"),
        # high < -min_gain
        ("superior", False, (-0.004, 0.006), "change +0.1 pts ≥ -1.0 pts, and the upper bound +0.6 pts ≥ -1.0 pts"),
    ],
)
def test_vs_baseline_rule_line_shows_the_bound_and_the_signed_limit(
    op: str, higher: bool, interval: tuple[float, float], line: str
) -> None:
    result = check_result(kept=0)
    rule = RuleResult(rule_id="r", score="accuracy", op=op, threshold=0.01, value=0.001, passed=True, message="",
                      higher_is_better=higher, interval=interval)
    text = format_summary(replace(result, candidates=(replace(result.candidates[0], rules=(rule,)),)), None)
    assert f"  pass  r: {line}: passed" in text.splitlines()

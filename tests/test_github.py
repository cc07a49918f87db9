from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from report_fixtures import XSS, check_result, select_result

from gate.outputs.files import default_paths
from gate.outputs.github import (
    SUMMARY_LIMIT,
    TRUNCATED_NOTE,
    emit_github,
    emit_tracking,
    fit_summary,
    github_annotations,
    markdown_code,
    markdown_escape,
    mlflow_run_url,
    summary_markdown,
    write_github_outputs,
    write_step_summary,
    write_tracking_outputs,
)
from gate.result import GateResult, RuleResult


def with_failed_rules(result: GateResult, count: int, message: str = "rule {i} failed") -> GateResult:
    rules = tuple(
        RuleResult(rule_id=f"rule{i}", score="accuracy", op=">=", threshold=0.9, value=0.5, passed=False,
                   message=message.format(i=i), higher_is_better=True)
        for i in range(count)
    )
    return replace(result, candidates=(replace(result.candidates[0], rules=rules),))


def test_one_error_per_failed_rule() -> None:
    result = check_result(kept=0)
    rule = result.candidates[0].failed_rules[0]
    assert github_annotations(result) == [f"::error title=xgate: cand.pt::{rule.message}"]


def test_at_most_ten_annotations_then_a_count() -> None:
    lines = github_annotations(with_failed_rules(check_result(kept=0), 13))
    assert len(lines) == 11
    assert lines[9] == "::error title=xgate: cand.pt::rule 9 failed"
    assert lines[10] == "::error title=xgate::3 more failed rules"


def test_annotation_escapes_newlines_percent_and_title_separators() -> None:
    result = with_failed_rules(check_result(kept=0), 1, message="50% of\nthe samples")
    result = replace(result, candidates=(replace(result.candidates[0], candidate=replace(
        result.candidates[0].candidate, name="a::b,c")),))
    assert github_annotations(result) == ["::error title=xgate: a%3A%3Ab%2Cc::50%25 of%0Athe samples"]


def test_losers_of_a_passing_select_are_warnings() -> None:
    result = select_result(kept=0)
    assert result.passed
    assert [line.split(" ", 1)[0] for line in github_annotations(result)] == ["::warning"]


def test_summary_has_verdict_rules_table_and_paths(tmp_path: Path) -> None:
    result = check_result(baseline=True, kept=0)
    text = summary_markdown(result, default_paths(tmp_path))
    lines = text.splitlines()
    assert lines[0] == "## ❌ xgate check: failed"
    assert "| ❌ | accuracy >= 0.95 | 67.5% \\< 95%: failed |" in text
    assert "| ✅ | ece \\<= 0.5 | 8% ≤ 50%: passed |" in text
    rows = [line for line in lines if line.startswith("| ✅") or line.startswith("| ❌")]
    assert len(rows) == len(result.candidates[0].rules)
    assert markdown_escape(XSS) in text and XSS not in text
    assert "Baseline: **prod.pt**" in text
    assert f"report `{tmp_path / 'report.html'}`" in text


def test_summary_says_when_the_review_set_was_not_the_pinned_one(tmp_path: Path) -> None:
    result = check_result(kept=0)
    assert "UNPINNED" not in summary_markdown(result, default_paths(tmp_path))
    unpinned = replace(result, review_set=replace(result.review_set, pinned=False))
    assert "⚠️ **UNPINNED**: run with `--allow-unpinned`" in summary_markdown(unpinned, default_paths(tmp_path))


def test_markdown_escape_keeps_table_cells_intact() -> None:
    assert markdown_escape("a|b\nc <x> *y*") == "a\\|b c \\<x> \\*y\\*"
    assert markdown_code("odd`name") == "`` odd`name ``" and markdown_code("plain") == "`plain`"


def test_step_summary_appends_to_existing_content(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("# earlier step\n", encoding="utf-8")
    write_step_summary(check_result(kept=0), None, summary)
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("# earlier step\n## ❌ xgate check: failed")


def test_huge_summary_is_cut_under_one_mib_with_a_note(tmp_path: Path) -> None:
    result = with_failed_rules(check_result(kept=0), 6000, message="x" * 200 + " {i}")
    assert len(summary_markdown(result, None).encode("utf-8")) > SUMMARY_LIMIT
    summary = tmp_path / "summary.md"
    summary.write_text("y" * 1000 + "\n", encoding="utf-8")
    write_step_summary(result, None, summary)
    data = summary.read_bytes()
    assert SUMMARY_LIMIT - 500 < len(data) <= SUMMARY_LIMIT
    text = data.decode("utf-8")
    assert text.startswith("y" * 1000) and text.endswith(TRUNCATED_NOTE)
    assert text[: -len(TRUNCATED_NOTE)].endswith("|")  # cut at a whole table row


def test_fit_summary_respects_multibyte_characters() -> None:
    text = "✅ line\n" * 100
    fitted = fit_summary(text, 300)
    assert len(fitted.encode("utf-8")) <= 300 and fitted.endswith(TRUNCATED_NOTE)
    assert fit_summary(text, 10) == ""
    assert fit_summary("short\n", 300) == "short\n"


def test_github_outputs_lines(tmp_path: Path) -> None:
    output = tmp_path / "output"
    output.write_text("earlier=1\n", encoding="utf-8")
    paths = default_paths(tmp_path / "out")
    write_github_outputs(select_result(kept=0), paths, output)
    assert output.read_text(encoding="utf-8").splitlines() == [
        "earlier=1", "verdict=passed", "selected=a.pt", f"report={paths.report}", f"json={paths.json}",
        f"junit={paths.junit}",
    ]


def test_github_output_with_a_newline_uses_a_delimiter(tmp_path: Path) -> None:
    output = tmp_path / "output"
    paths = replace(default_paths(tmp_path), report=Path("odd\nname.html"))
    write_github_outputs(check_result(kept=0), paths, output)
    lines = output.read_text(encoding="utf-8").splitlines()
    start = lines.index(next(line for line in lines if line.startswith("report<<")))
    delimiter = lines[start].split("<<", 1)[1]
    assert lines[start + 1: start + 4] == ["odd", "name.html", delimiter]


def test_emit_github_does_nothing_outside_actions(tmp_path: Path) -> None:
    env = {"GITHUB_STEP_SUMMARY": str(tmp_path / "s.md"), "GITHUB_OUTPUT": str(tmp_path / "o")}
    assert emit_github(check_result(kept=0), default_paths(tmp_path), env) == []
    assert not (tmp_path / "s.md").exists() and not (tmp_path / "o").exists()


def test_emit_github_in_actions_writes_everything(tmp_path: Path) -> None:
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(tmp_path / "s.md"),
           "GITHUB_OUTPUT": str(tmp_path / "o")}
    result = check_result(kept=0)
    lines = emit_github(result, default_paths(tmp_path), env)
    assert lines == github_annotations(result) and len(lines) == 1
    assert (tmp_path / "s.md").read_text(encoding="utf-8").startswith("## ❌ xgate check: failed")
    assert "verdict=failed\n" in (tmp_path / "o").read_text(encoding="utf-8")


def test_unwritable_summary_is_an_input_error(tmp_path: Path) -> None:
    from gate.errors import InputError

    with pytest.raises(InputError) as info:
        write_step_summary(check_result(kept=0), None, tmp_path / "missing" / "s.md")
    assert info.value.field == "GITHUB_STEP_SUMMARY"


def test_select_summary_lists_candidates_in_rank_order() -> None:
    result = select_result(kept=0)  # ranking: a.pt, c.pt (passed), then b.pt (failed)
    text = summary_markdown(result, None)
    assert "Selected: **a.pt** (passing candidates ranked by accuracy; they come first below)" in text
    assert text.index("a.pt") < text.index("c.pt") < text.index("b.pt")


def test_mlflow_run_url_only_for_a_server_with_a_ui() -> None:
    assert mlflow_run_url("https://mlflow.example.com/", "abc123") == "https://mlflow.example.com/#/runs/abc123"
    assert mlflow_run_url("http://10.0.0.5:5000", "r1") == "http://10.0.0.5:5000/#/runs/r1"
    assert mlflow_run_url("sqlite:///mlflow.db", "r1") == ""
    assert mlflow_run_url("databricks", "r1") == ""


def test_tracking_outputs_name_the_first_run_and_all_runs(tmp_path: Path) -> None:
    output = tmp_path / "output"
    write_tracking_outputs(("p0", "c1", "c2"), "https://ml.example.com", output)
    assert output.read_text(encoding="utf-8").splitlines() == [
        "mlflow-run-id=p0", "mlflow-run-ids=p0 c1 c2", "mlflow-run-url=https://ml.example.com/#/runs/p0"]
    write_tracking_outputs((), "https://ml.example.com", output)
    assert output.read_text(encoding="utf-8").splitlines()[3:] == ["mlflow-run-id=", "mlflow-run-ids=",
                                                                   "mlflow-run-url="]


def test_emit_tracking_links_the_run_in_the_summary_only_in_actions(tmp_path: Path) -> None:
    files = {"GITHUB_STEP_SUMMARY": str(tmp_path / "s.md"), "GITHUB_OUTPUT": str(tmp_path / "o")}
    emit_tracking(("r1",), "https://ml.example.com", files)
    assert not (tmp_path / "s.md").exists() and not (tmp_path / "o").exists()
    emit_tracking(("r1",), "https://ml.example.com", {"GITHUB_ACTIONS": "true", **files})
    assert (tmp_path / "s.md").read_text(encoding="utf-8") == "\nMLflow: [run r1](https://ml.example.com/#/runs/r1)\n"
    assert "mlflow-run-id=r1\n" in (tmp_path / "o").read_text(encoding="utf-8")
    emit_tracking(("r2",), "sqlite:///x.db", {"GITHUB_ACTIONS": "true", **files})
    assert "r2" not in (tmp_path / "s.md").read_text(encoding="utf-8")  # no UI: no link


def test_advisory_mode_annotates_failed_rules_as_warnings(tmp_path: Path) -> None:
    result = check_result(kept=0)
    assert not result.passed
    env = {"GITHUB_ACTIONS": "true", "XGATE_FAIL_ON": "never"}
    lines = emit_github(result, default_paths(tmp_path), env)
    assert lines == [line.replace("::error ", "::warning ", 1) for line in github_annotations(result)]
    assert lines and all(line.startswith("::warning title=xgate: ") for line in lines)
    assert emit_github(result, default_paths(tmp_path), {**env, "XGATE_FAIL_ON": "fail"})[0].startswith("::error")


def test_summary_says_each_failed_rule_in_words_as_the_report_does() -> None:
    result = check_result()
    assert result.candidates[0].scores["accuracy"] == 27 / 40
    text = summary_markdown(result, None)
    # The diagnosis, then the family, then the registry's words and the deciding number; passing rules get none.
    assert "**Accuracy: the model is right too rarely (accuracy below the floor)**" in text
    assert ("- Accuracy:\n  - The model answers right on 67.5% of samples — 67.5% \\< 95%: failed "
            "(rule accuracy >= 0.95).") in text
    assert text.count("\n  - ") == len(result.candidates[0].failed_rules) == 1


def test_summary_gives_the_migration_and_mcnemar_line_with_a_baseline() -> None:
    result = check_result(baseline=True)
    comparison = result.candidates[0].comparison
    assert comparison is not None
    migration = comparison.migration
    line = (f"Against the baseline: {migration.corrected} corrected, {migration.regressed} regressed "
            "(McNemar p = 0.0312)")
    assert line in summary_markdown(result, None)
    assert "Against the baseline" not in summary_markdown(check_result(), None)

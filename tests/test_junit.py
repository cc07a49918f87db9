from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from junitparser import Failure, JUnitXml
from report_fixtures import XSS, check_result, select_result

from gate.outputs.junit import junit_tree
from gate.result import GateResult


def _parse(result: GateResult, tmp_path: Path) -> JUnitXml:
    """The JUnit document as gate.outputs.files writes it: UTF-8, with an XML declaration."""
    path = tmp_path / "junit.xml"
    junit_tree(result).write(path, encoding="utf-8", xml_declaration=True)
    return JUnitXml.fromfile(str(path))


def test_one_suite_per_candidate_and_one_case_per_rule(tmp_path: Path) -> None:
    result = select_result(kept=0)
    xml = _parse(result, tmp_path)
    suites = list(xml)
    assert [s.name for s in suites] == ["a.pt", "b.pt", "c.pt"]
    for suite, candidate in zip(suites, result.candidates, strict=True):
        cases = list(suite)
        assert [c.name for c in cases] == [r.rule_id for r in candidate.rules]
        assert {c.classname for c in cases} == {f"xgate.{candidate.candidate.name}"}
        assert suite.tests == len(candidate.rules)
        assert suite.failures == len(candidate.failed_rules)
        failed = [c.name for c in cases if any(isinstance(r, Failure) for r in c.result)]
        assert failed == [r.rule_id for r in candidate.failed_rules]
    assert sum(s.failures for s in suites) == 1


def test_failure_message_is_the_deciding_number_as_the_console_says_it(tmp_path: Path) -> None:
    result = check_result(kept=0)
    rule = result.candidates[0].failed_rules[0]
    assert rule.value == 27 / 40
    case = next(c for c in next(iter(_parse(result, tmp_path))) if c.name == rule.rule_id)
    failure = case.result[0]
    assert isinstance(failure, Failure)
    assert failure.message == "67.5% < 95%: failed"
    assert failure.text == "The model answers right on 67.5% of samples — 67.5% < 95%: failed\n" + rule.message
    passing = next(c for c in next(iter(_parse(result, tmp_path))) if c.name == "ece <= 0.5")
    assert passing.is_passed


def test_user_strings_and_control_characters_survive(tmp_path: Path) -> None:
    result = check_result(kept=0)
    candidate = result.candidates[0]
    odd = replace(candidate.rules[0], message="bad\x00byte & <tag>", value=None, passed=False)
    result = replace(result, candidates=(replace(candidate, rules=(odd, *candidate.rules[1:])),))
    suite = next(iter(_parse(result, tmp_path)))
    cases = list(suite)
    assert cases[2].name == f"class_accuracy.{XSS} >= 0.0"
    failure = cases[0].result[0]
    assert failure.message == "could not be computed: failed"
    assert failure.text == "Accuracy could not be computed — could not be computed: failed\nbad\ufffdbyte & <tag>"

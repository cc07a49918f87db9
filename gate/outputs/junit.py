"""JUnit XML: one test suite per candidate, one test case per rule, so CI shows rules as tests."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from gate.result import CandidateResult, GateResult, RuleResult, json_number

# Characters XML 1.0 cannot carry at all; ElementTree would write them and produce an unreadable file.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def _number(value: float | None) -> str:
    number = json_number(value)
    return "n/a" if number is None else f"{number:.6g}"


def failure_message(rule: RuleResult) -> str:
    """``value X vs threshold Y`` for a failed rule."""
    return f"value {_number(rule.value)} vs threshold {_number(rule.threshold)}"


def _testcase(parent: ET.Element, candidate: str, rule: RuleResult) -> None:
    case = ET.SubElement(parent, "testcase", name=_text(rule.rule_id), classname=_text(f"xgate.{candidate}"), time="0")
    if not rule.passed:
        failure = ET.SubElement(case, "failure", message=failure_message(rule), type=_text(rule.op))
        failure.text = _text(rule.message)


def _testsuite(parent: ET.Element, candidate: CandidateResult) -> None:
    name = candidate.candidate.name
    suite = ET.SubElement(
        parent, "testsuite", name=_text(name), tests=str(len(candidate.rules)),
        failures=str(len(candidate.failed_rules)), errors="0", skipped="0",
    )
    properties = ET.SubElement(suite, "properties")
    for key, value in (("candidate.path", candidate.candidate.path), ("candidate.sha256", candidate.candidate.sha256)):
        ET.SubElement(properties, "property", name=key, value=_text(value))
    for rule in candidate.rules:
        _testcase(suite, name, rule)


def junit_tree(result: GateResult) -> ET.ElementTree:
    """The JUnit document for a gate result."""
    root = ET.Element(
        "testsuites", name=f"xgate {result.command}",
        tests=str(sum(len(c.rules) for c in result.candidates)),
        failures=str(sum(len(c.failed_rules) for c in result.candidates)),
        errors="0",
    )
    for candidate in result.candidates:
        _testsuite(root, candidate)
    ET.indent(root)
    return ET.ElementTree(root)


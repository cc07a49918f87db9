"""JUnit XML: one test suite per candidate, one test case per rule, so CI shows rules as tests."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from gate.outputs.sentences import decision, rule_sentence
from gate.result import CandidateResult, GateResult, RuleResult

# Characters XML 1.0 cannot carry at all; ElementTree would write them and produce an unreadable file.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _text(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def failure_message(rule: RuleResult) -> str:
    """The number that decided a failed rule, as the console and the report say it
    ("91.3% ≥ 90%, but the 95% lower bound is 89.3%: undecided; more samples would settle it")."""
    return decision(rule).text


def _testcase(parent: ET.Element, candidate: str, rule: RuleResult) -> None:
    case = ET.SubElement(parent, "testcase", name=_text(rule.rule_id), classname=_text(f"xgate.{candidate}"), time="0")
    if not rule.passed:
        failure = ET.SubElement(case, "failure", message=failure_message(rule), type=_text(rule.op))
        failure.text = _text(f"{rule_sentence(rule)}\n{rule.message}")


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


"""Why a candidate failed, in words: one sentence per failed rule, and where the report shows the evidence.

The sentence comes from the score registry (``gate.metrics.registry.say``); the evidence is the part of the
report that shows the failure, as the score's spec declares it (the showroom for background scores, the
galleries for alignment, a plot for calibration and per-class accuracy), the baseline section for deltas,
else the rule's own row. Plain data, no Jinja2: the job summary (gate/outputs/github.py) prints the same
sentences.
"""

from __future__ import annotations

from dataclasses import dataclass

from gate.metrics.registry import get_spec, say
from gate.result import RuleResult


@dataclass(frozen=True)
class Reason:
    """One failed rule in words, with the report anchor that shows the evidence."""

    rule_id: str
    text: str  # "the map lands off the object on 98% of samples"
    needs: str  # "needs <= 0.3"
    anchor: str  # element id in the report, without "#"
    evidence: str  # what the anchor shows, in words

    @property
    def brief(self) -> str:
        """The threshold without the interval ("needs >= 0.9"), for the compact list of several candidates."""
        return self.needs.partition(",")[0]

    @property
    def sentence(self) -> str:
        """The reason as one sentence for text outputs (the job summary)."""
        return f"{self.text[:1].upper()}{self.text[1:]} ({self.needs}; rule {self.rule_id})."


def anchor_prefix(index: int) -> str:
    """The id prefix of a candidate's parts in the report (its position in rank order)."""
    return f"c{index}"


def rule_anchor(index: int, position: int) -> str:
    """The id of a rule's row in the report's rules table."""
    return f"{anchor_prefix(index)}-rule-{position}"


def _evidence(score: str) -> tuple[str, str] | None:
    if score.startswith("delta."):
        return "baseline", "the comparison with the baseline"
    spec = get_spec(score)
    if spec is None or spec.evidence is None:
        return None
    return spec.evidence.anchor, spec.evidence.shows


def reasons(rules: tuple[RuleResult, ...], index: int) -> tuple[Reason, ...]:
    """One ``Reason`` per failed rule of the candidate at rank ``index``, in policy order."""
    out = []
    for position, rule in enumerate(rules):
        if rule.passed:
            continue
        found = _evidence(rule.score)
        if found is None:
            anchor, evidence = rule_anchor(index, position), "the rule"
        else:
            anchor, evidence = f"{anchor_prefix(index)}-{found[0]}", found[1]
        needs = f"needs {rule.op} {rule.threshold:.4g}"
        if rule.interval is not None and rule.value is not None:
            needs += f", with its interval [{rule.interval[0]:.4g}, {rule.interval[1]:.4g}]"
        out.append(Reason(rule.rule_id, say(rule.score, rule.value), needs, anchor, evidence))
    return tuple(out)

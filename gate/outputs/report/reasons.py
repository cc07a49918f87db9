"""Why a candidate failed, in words: one sentence per failed rule, and where the report shows the evidence.

The sentence comes from the score registry (``gate.metrics.registry.say``); the evidence is the part of the
report that shows the failure (the showroom for background scores, the galleries for alignment, a plot for
calibration and per-class accuracy, the baseline section for deltas, else the rule's own row). Plain data,
no Jinja2: the job summary (gate/outputs/github.py) prints the same sentences.
"""

from __future__ import annotations

from dataclasses import dataclass

from gate.metrics.registry import get_spec, say
from gate.result import RuleResult

# Evidence by score name (exact) or group; the anchor part is suffixed to the candidate's anchor prefix.
_BY_NAME: dict[str, tuple[str, str]] = {
    "accuracy": ("gallery-failures", "the failures gallery"),
    "selective_accuracy@0.8": ("plot-reliability", "the reliability diagram"),
    "balanced_accuracy": ("plot-class_accuracy", "the per-class accuracy plot"),
    "worst_class_accuracy": ("plot-class_accuracy", "the per-class accuracy plot"),
    "class_accuracy.<class>": ("plot-class_accuracy", "the per-class accuracy plot"),
    "confident_wrong_rate@0.9": ("plot-wrong_by_threshold", "the wrong-by-confidence plot"),
    "confident_wrong_rate@0.99": ("plot-wrong_by_threshold", "the wrong-by-confidence plot"),
}
_BY_GROUP: dict[str, tuple[str, str]] = {
    "calibration": ("plot-reliability", "the reliability diagram"),
    "alignment": ("galleries", "the Grad-CAM galleries"),
    "background": ("showroom", "the showroom"),
    "shortcuts": ("shortcuts", "the shortcut probes' flipped samples"),
}


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
    if spec is None:
        return None
    return _BY_NAME.get(spec.name) or _BY_GROUP.get(spec.group)


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

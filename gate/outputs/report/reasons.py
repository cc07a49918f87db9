"""Why a candidate failed, in words: a diagnosis first, then one reason per failed rule grouped by family.

A reason is what the score says (``gate.outputs.sentences.rule_text``), the number that decided the rule
(``decision``), and the part of the report that shows the evidence (the showroom for background scores, the
galleries for alignment, a plot for calibration and per-class accuracy, the baseline box for comparisons,
else the rule's own row). Plain data, no Jinja2: the job summary and the console print the same sentences.
"""

from __future__ import annotations

from dataclasses import dataclass

from gate.metrics.registry import get_spec
from gate.outputs.sentences import BASELINE_OPS, UNDECIDED, capital, decision, rule_text
from gate.result import RuleResult

# Families of failed rules, most telling first: a model that reads the scene fails its accuracy rules too,
# but the shortcut is the story. Each: (key, short title, headline when shown, headline when only undecided).
FAMILIES: tuple[tuple[str, str, str, str], ...] = (
    ("shortcut", "shortcut", "Shortcut: {what}", "Possible shortcut, not ruled out on this many samples: {what}"),
    ("regression", "regression against the baseline", "Regression against the baseline: {nouns} worse than "
     "allowed", "Regression not ruled out: {nouns} not shown within the allowed change from the baseline"),
    ("accuracy", "accuracy", "Accuracy: the model is right too rarely ({nouns} below the floor)",
     "Accuracy not shown: {nouns} may be below the floor on this many samples"),
    ("calibration", "calibration", "Calibration: the model's confidence is not earned ({nouns})",
     "Calibration not shown: {nouns} may be off on this many samples"),
    ("sanity", "explanation sanity", "Explanations: the maps barely depend on the trained weights",
     "Explanations not shown to depend on the trained weights on this many samples"),
    ("samples", "too few samples", "Too few samples: the review set cannot settle the policy",
     "Too few samples: the review set cannot settle the policy"),
)
_FAMILY_ORDER = {key: n for n, (key, *_rest) in enumerate(FAMILIES)}
SCENE, OFF_OBJECT = "the model reads the scene, not the object", "its attention lands off the object"
SWAPPED = {"border": "border", "corners": "corners", "lighting": "lighting"}  # mask-free probe -> what it swaps
CLOSEST = 3  # closest calls listed for a pass


@dataclass(frozen=True)
class Reason:
    """One rule in words, with the number that decided it and the report anchor that shows the evidence."""

    rule_id: str
    text: str  # "the map lands off the object on 97.7% of samples"
    decision: str  # "97.7% > 20%, and even the 95% lower bound 96.1% > 20%: failed"
    anchor: str  # element id in the report, without "#"
    evidence: str  # what the anchor shows, in words
    family: str = "accuracy"
    state: str = "failed"  # passed | failed | undecided
    margin: float = 0.0  # the deciding number's distance from the threshold (negative: failing side)

    @property
    def sentence(self) -> str:
        """The reason as one line for text outputs (console, job summary, JUnit)."""
        return f"{capital(self.text)} — {self.decision} (rule {self.rule_id})."


@dataclass(frozen=True)
class FamilyReasons:
    """The failed rules of one family, most telling first."""

    key: str
    title: str
    reasons: tuple[Reason, ...]


@dataclass(frozen=True)
class Diagnosis:
    """A candidate's verdict in words: one headline, the failed rules by family, or a pass's closest calls."""

    headline: str
    families: tuple[FamilyReasons, ...]
    closest: tuple[Reason, ...] = ()

    @property
    def reasons(self) -> tuple[Reason, ...]:
        """Every failed rule's reason, in display order (families, most telling first)."""
        return tuple(r for f in self.families for r in f.reasons)


def anchor_prefix(index: int) -> str:
    """The id prefix of a candidate's parts in the report (its position in rank order)."""
    return f"c{index}"


def rule_anchor(index: int, position: int) -> str:
    """The id of a rule's row in the report's rules table."""
    return f"{anchor_prefix(index)}-rule-{position}"


def family(rule: RuleResult) -> str:
    """The family a rule belongs to: shortcut, regression, accuracy, calibration, sanity or samples."""
    if rule.score == "samples" or rule.note.startswith(("review set too small", "failed: review set too small")):
        return "samples"
    if rule.op in BASELINE_OPS:
        return "regression"
    spec = get_spec(rule.score)
    group = "classification" if spec is None else spec.group
    if group in ("background", "alignment", "shortcuts"):
        return "shortcut"
    return {"calibration": "calibration", "sanity": "sanity"}.get(group, "accuracy")


def _evidence(rule: RuleResult) -> tuple[str, str] | None:
    if rule.op in BASELINE_OPS:
        return "comparison", "the comparison with the baseline"
    spec = get_spec(rule.score)
    if spec is None or spec.evidence is None:
        return None
    return spec.evidence.anchor, spec.evidence.shows


def reason(rule: RuleResult, index: int, position: int) -> Reason:
    """One rule of the candidate at rank ``index`` (``position``: its place in the rules) in words."""
    found = _evidence(rule)
    if found is None:
        anchor, evidence = rule_anchor(index, position), "the rule"
    else:
        anchor, evidence = f"{anchor_prefix(index)}-{found[0]}", found[1]
    decided = decision(rule)
    return Reason(rule.rule_id, rule_text(rule), decided.text, anchor, evidence, family(rule), decided.state,
                  decided.margin)


def reasons(rules: tuple[RuleResult, ...], index: int) -> tuple[Reason, ...]:
    """One ``Reason`` per failed rule of the candidate at rank ``index``, grouped by family, most telling first."""
    return diagnose(rules, index).reasons


def _nouns(family_reasons: tuple[Reason, ...], rules: dict[str, RuleResult]) -> str:
    names: list[str] = []
    for found in family_reasons:
        rule = rules[found.rule_id]
        spec = get_spec(rule.score)
        noun = rule.score if spec is None or spec.wording is None else spec.name_class(rule.score, spec.wording.noun)
        if noun not in names:
            names.append(noun)
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _shortcut_what(family_reasons: tuple[Reason, ...], rules: dict[str, RuleResult]) -> str:
    groups = {getattr(get_spec(rules[r.rule_id].score), "group", "") for r in family_reasons}
    parts = [text for group, text in (("background", SCENE), ("alignment", OFF_OBJECT)) if group in groups]
    # Mask-free probes name what the answer follows: "border", "corners" or "lighting" (the score's prefix).
    probes = dict.fromkeys(rules[r.rule_id].score.split(".", 1)[0] for r in family_reasons
                           if getattr(get_spec(rules[r.rule_id].score), "group", "") == "shortcuts")
    if probes:
        parts.append(f"its answer follows the image's {' and '.join(SWAPPED[p] for p in probes if p in SWAPPED)}")
    return ", and ".join(parts)


def _headline(group: FamilyReasons, rules: dict[str, RuleResult]) -> str:
    _key, _title, shown, undecided = FAMILIES[_FAMILY_ORDER[group.key]]
    template = undecided if all(r.state == UNDECIDED for r in group.reasons) else shown
    return template.format(what=_shortcut_what(group.reasons, rules), nouns=_nouns(group.reasons, rules))


def diagnose(rules: tuple[RuleResult, ...], index: int = 0) -> Diagnosis:
    """The diagnosis of one candidate: the headline of its most telling family of failed rules, the reasons by
    family (decided failures before undecided ones, the furthest from the threshold first), or, for a pass,
    its closest calls (the smallest margins between the deciding number and the threshold)."""
    by_id = {rule.rule_id: rule for rule in rules}
    said = [reason(rule, index, n) for n, rule in enumerate(rules)]
    failed = [r for r in said if r.state != "passed"]
    if not failed:
        closest = sorted((r for r in said if r.margin == r.margin), key=lambda r: r.margin)[:CLOSEST]
        return Diagnosis(f"All {len(rules)} rules passed", (), tuple(closest))
    groups: dict[str, list[Reason]] = {}
    for found in failed:
        groups.setdefault(found.family, []).append(found)
    ordered = [
        FamilyReasons(key, FAMILIES[_FAMILY_ORDER[key]][1],
                      tuple(sorted(members, key=lambda r: (r.state == UNDECIDED, r.margin))))
        for key, members in groups.items()
    ]
    ordered.sort(key=lambda g: (all(r.state == UNDECIDED for r in g.reasons), _FAMILY_ORDER[g.key]))
    headline = _headline(ordered[0], by_id)
    if len(ordered) > 1:
        headline += ". Also failed: " + ", ".join(g.title for g in ordered[1:])
    return Diagnosis(headline, tuple(ordered))

"""A rule in words, the one wording of every output: what the score says, and the number that decided it.

The console summary, the report, the job summary and JUnit all call :func:`rule_text` and :func:`decision`,
so they say the same. Each number is written in its score's own unit (``gate.metrics.registry.Wording``):
a fraction as a percentage and its changes in points, a lift as "2.30×", anything else as a plain number;
a line never mixes percentages with fractions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gate.decide.policy import TOO_SMALL
from gate.metrics.registry import ScoreSpec, get_spec, number, say
from gate.result import ChangeWarning, RuleResult

SYMBOL = {">=": "≥", "<=": "≤", ">": ">", "<": "<"}
NOT_SYMBOL = {">=": "<", "<=": ">", ">": "≤", "<": "≥"}
BASELINE_OPS = ("non_inferior", "superior")
SETTLE = "more samples would settle it"
MIN_SCALE = 0.01  # the scale of a margin when the threshold is 0 (superior with min_gain 0, a floor of 0)
PASSED, FAILED, UNDECIDED = "passed", "failed", "undecided"


@dataclass(frozen=True)
class Decision:
    """How a rule was decided: the deciding number against the threshold, in words.

    ``margin``: the deciding number's distance from the threshold, positive on the passing side, as a share of
    the threshold (at least ``MIN_SCALE``): the closest calls are the smallest.
    """

    text: str  # "91.3% ≥ 90%, but the 95% lower bound is 89.3%: undecided; more samples would settle it"
    state: str  # passed | failed | undecided
    margin: float


def unit_of(score: str) -> str:
    """The unit a score is written in: pct, times, count or value (unknown scores and "samples")."""
    spec = get_spec(score)
    if score == "samples":
        return "count"
    return "value" if spec is None or spec.wording is None else spec.wording.unit


def change(value: float, unit: str) -> str:
    """A signed change in ``unit``: points for percentages ("-1.4 pts"), else a signed number."""
    if unit == "pct":
        shown = abs(value) * 100
        digits = 2 if 0 < shown < 0.1 else 1
        sign = "-" if value < 0 and round(shown, digits) else "+"
        return f"{sign}{shown:.{digits}f} pts"
    if unit == "times":
        return f"{value:+.2f}"
    return f"{value:+.4g}"


def amount(value: float, unit: str) -> str:
    """A size of change, unsigned ("1.0 points", "0.30", "0.012")."""
    if unit == "pct":
        return f"{abs(value) * 100:.1f} points"
    if unit == "times":
        return f"{abs(value):.2f}"
    return f"{abs(value):.4g}"


def tested(rule: RuleResult) -> tuple[str, float]:
    """The comparison a rule makes, as (op, limit): a baseline rule tests the change against a signed limit."""
    if rule.op == "non_inferior":
        return (">=", -rule.threshold) if rule.higher_is_better else ("<=", rule.threshold)
    if rule.op == "superior":
        return (">", rule.threshold) if rule.higher_is_better else ("<", -rule.threshold)
    return rule.op, rule.threshold


def holds(value: float, op: str, limit: float) -> bool:
    """``value op limit``."""
    return {">=": value >= limit, "<=": value <= limit, ">": value > limit, "<": value < limit}[op]


def _scale(threshold: float) -> float:
    # Margins relative to the threshold: a bound of 0.45% under a 1% ceiling is as safe as 45% under 100%.
    return max(abs(threshold), MIN_SCALE)


def _level(rule: RuleResult) -> str:
    return "" if rule.confidence is None else f"{rule.confidence:.0%} "


def decision(rule: RuleResult) -> Decision:
    """The number that decided ``rule``, in the score's unit, with "undecided" when the interval holds the limit."""
    if rule.value is None or not math.isfinite(rule.value):
        return Decision("could not be computed: failed", FAILED, -math.inf)
    op, limit = tested(rule)
    baseline = rule.op in BASELINE_OPS
    unit = unit_of(rule.score)

    def show(v: float) -> str:
        return change(v, unit) if baseline else number(v, unit)

    value = rule.value
    lead = ("change " if baseline else "") + f"{show(value)} {(SYMBOL if holds(value, op, limit) else NOT_SYMBOL)[op]} "
    lead += show(limit)
    scale = _scale(rule.threshold)
    sign = 1.0 if op in (">=", ">") else -1.0
    if rule.interval is None:
        state = PASSED if rule.passed else FAILED
        return Decision(f"{lead}: {state}", state, sign * (value - limit) / scale)
    low, high = rule.interval
    deciding, other = (low, high) if sign > 0 else (high, low)
    names = ("lower", "upper") if sign > 0 else ("upper", "lower")
    level = _level(rule)
    if math.isnan(deciding) or math.isnan(other):
        return Decision(f"{lead}, with no {level}interval (too few samples): undecided", UNDECIDED, -math.inf)
    margin = sign * (deciding - limit) / scale
    if rule.passed:
        symbol = (SYMBOL if holds(deciding, op, limit) else NOT_SYMBOL)[op]  # at the limit, within float tolerance
        text = f"{lead}, and the {level}{names[0]} bound {show(deciding)} {symbol} {show(limit)}: passed"
        return Decision(text, PASSED, margin)
    if not holds(other, op, limit):
        text = f"{lead}, and even the {level}{names[1]} bound {show(other)} {NOT_SYMBOL[op]} {show(limit)}: failed"
        return Decision(text, FAILED, margin)
    settle = rule.note if rule.note.startswith("review set too small") else SETTLE
    bound = (names[0], deciding) if holds(value, op, limit) else (names[1], other)
    return Decision(f"{lead}, but the {level}{bound[0]} bound is {show(bound[1])}: undecided; {settle}",
                    UNDECIDED, margin)


def rule_text(rule: RuleResult) -> str:
    """What the rule's score says, true at its value ("the model answers right on 91.3% of samples")."""
    if rule.score == "samples" or rule.message.startswith(TOO_SMALL):
        return rule.message.removeprefix(f"{TOO_SMALL} (").removesuffix(")") if not rule.passed else rule.message
    spec = get_spec(rule.score)
    if rule.op in BASELINE_OPS:
        return baseline_text(rule, spec)
    text = say(rule.score, rule.value)
    wording = None if spec is None else spec.wording
    if (wording is not None and wording.bad and rule.value is not None and math.isfinite(rule.value)
            and not holds(rule.value, rule.op, rule.threshold)):
        text += f": {wording.bad}"
    return text


def baseline_text(rule: RuleResult, spec: ScoreSpec | None) -> str:
    """A baseline rule in words: "accuracy is 0.5 points below the baseline's (worse); it may drop at most 1.0
    points"."""
    wording = None if spec is None else spec.wording
    noun = rule.score if spec is None or wording is None else spec.name_class(rule.score, wording.noun)
    unit = unit_of(rule.score)
    delta = rule.value
    if delta is None or not math.isfinite(delta):
        return f"the change in {noun} against the baseline could not be computed"
    if delta == 0:
        head = f"{noun} equals the baseline's"
    else:
        side = "above" if delta > 0 else "below"
        better = (delta > 0) == rule.higher_is_better
        head = f"{noun} is {amount(delta, unit)} {side} the baseline's ({'better' if better else 'worse'})"
    if rule.op == "non_inferior":
        limit = f"it may {'drop' if rule.higher_is_better else 'rise'} at most {amount(rule.threshold, unit)}"
    else:
        limit = f"it must {'rise' if rule.higher_is_better else 'fall'} by more than {amount(rule.threshold, unit)}"
    return f"{head}; {limit}"


def capital(text: str) -> str:
    """``text`` with its first letter upper-case."""
    return text[:1].upper() + text[1:]


def rule_sentence(rule: RuleResult) -> str:
    """The rule as one line for text outputs: what the score says, then the deciding number."""
    return f"{capital(rule_text(rule))} — {decision(rule).text}"


def warning_sentence(warning: ChangeWarning) -> str:
    """An ungated change beyond its interval, in words (``gate.decide.watch``): "ECE is 10.0 points above the
    baseline's (worse): change +10.0 pts, 95% interval [+6.2 pts, +13.8 pts]; no rule gates it"."""
    spec = get_spec(warning.score)
    unit = unit_of(warning.score)
    wording = None if spec is None else spec.wording
    noun = warning.score if spec is None or wording is None else spec.name_class(warning.score, wording.noun)
    side = "above" if warning.delta > 0 else "below"
    return (f"{noun} is {amount(warning.delta, unit)} {side} the baseline's (worse): change "
            f"{change(warning.delta, unit)}, {warning.confidence:.0%} interval [{change(warning.low, unit)}, "
            f"{change(warning.high, unit)}]; no rule gates it")

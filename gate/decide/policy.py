"""Policies: YAML validated into typed rules, and their evaluation into a verdict.

A rule is a floor (``min``), a ceiling (``max``) — optionally at a confidence,
so a small review set cannot pass a threshold by luck — or a comparison with
the baseline (``vs_baseline``: non-inferiority by ``max_drop`` or superiority
by ``min_gain``, on a seeded paired-bootstrap bound).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from gate.errors import PolicyError, UsageError
from gate.inputs import safe_import, strict_yaml
from gate.metrics.registry import CLASS_PLACEHOLDER, ScoreSpec, get_spec
from gate.records import Records
from gate.result import RuleResult

if TYPE_CHECKING:
    from gate.decide.compare import Pairing
    from gate.decide.intervals import Bounds

PROBES = ("background", "sanity", "border", "corners", "lighting")
MAX_POLICY_BYTES = 256 * 1024  # a policy is a few kilobytes; a bigger file is a mistake or an attack
ScoreFn = Callable[[Records], Mapping[str, float]]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReviewSetRef(_Strict):
    """Where the review set lives and the digest it must have."""

    path: str
    digest: str | None = None


class ExplainSettings(_Strict):
    """The explanation method (Grad-CAM only for now) and its layer."""

    method: Literal["gradcam"] = "gradcam"
    target_layer: str = "auto"


class BaselineTest(_Strict):
    """Candidate versus baseline: non-inferiority (max_drop) or superiority (min_gain)."""

    max_drop: float | None = Field(default=None, ge=0, strict=True, allow_inf_nan=False)
    min_gain: float | None = Field(default=None, ge=0, strict=True, allow_inf_nan=False)
    confidence: float = Field(default=0.95, gt=0.5, lt=1, strict=True)

    @model_validator(mode="after")
    def _one_kind(self) -> BaselineTest:
        if (self.max_drop is None) == (self.min_gain is None):
            raise ValueError("give exactly one of max_drop or min_gain")
        return self


class Rule(_Strict):
    """One rule: a score and one of min, max or vs_baseline."""

    score: str
    # strict: a YAML `true` or "0.9" is a wrong type (it would silently become 1.0 or 0.9); ints are fine.
    min: float | None = Field(default=None, strict=True)
    max: float | None = Field(default=None, strict=True)
    confidence: float | None = Field(default=None, gt=0.5, lt=1, strict=True)
    vs_baseline: BaselineTest | None = None

    @field_validator("score")
    @classmethod
    def _known_score(cls, name: str) -> str:
        if get_spec(name) is None or name.startswith("delta."):
            raise ValueError(f"unknown score {name!r} (see docs/scores.md)")
        return name

    @field_validator("min", "max")
    @classmethod
    def _in_range(cls, value: float | None, info: ValidationInfo) -> float | None:
        # `accuracy min: -5` or `ece max: 7` would make the rule pass whatever the model does; NaN never compares.
        if value is None:
            return value
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        spec = get_spec(str(info.data.get("score", "")))
        if spec is not None:
            low, high = spec.range
            if not low <= value <= high:
                raise ValueError(f"{value:g} is outside the range of {info.data['score']} [{low:g}, {high:g}]")
        return value

    @model_validator(mode="after")
    def _one_test(self) -> Rule:
        given = [k for k in ("min", "max", "vs_baseline") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of min, max or vs_baseline (got {given or 'none'})")
        if self.confidence is not None and self.vs_baseline is not None:
            raise ValueError("put confidence inside vs_baseline")
        if self.vs_baseline is not None:
            low, high = self.spec.range
            limit = self.vs_baseline.max_drop if self.vs_baseline.max_drop is not None else self.vs_baseline.min_gain
            if limit is not None and limit > high - low:
                raise ValueError(f"vs_baseline limit {limit:g} is wider than the range of {self.score} "
                                 f"[{low:g}, {high:g}]")
        return self

    @property
    def spec(self) -> ScoreSpec:
        """The registry entry of the rule's score."""
        spec = get_spec(self.score)
        assert spec is not None
        return spec


class SelectSettings(_Strict):
    """How ``select`` ranks passing candidates: scores in order, ties broken by the next."""

    rank_by: list[str] = Field(default_factory=lambda: ["accuracy"])

    @field_validator("rank_by", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("rank_by")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            if get_spec(name) is None:
                raise ValueError(f"unknown score {name!r}")
        return names


class CandidateSettings(_Strict):
    """What candidates may use: module prefixes whose import-path archs may be imported (trusted side)."""

    allow_modules: list[str] = Field(default_factory=list)

    @field_validator("allow_modules")
    @classmethod
    def _module_names(cls, names: list[str]) -> list[str]:
        for name in names:
            refusal = safe_import.prefix_refusal(name)  # never the standard library or an installed package
            if refusal:
                raise ValueError(refusal)
        return names


class MinSamples(_Strict):
    """Fewest scored samples, overall and in each review-set class, below which the gate fails."""

    overall: int = Field(default=0, ge=0, strict=True)
    per_class: int = Field(default=0, ge=0, strict=True)


class PolicyModel(_Strict):
    """The policy file's schema."""

    name: str
    review_set: ReviewSetRef
    explain: ExplainSettings = ExplainSettings()
    probes: list[Literal["background", "sanity", "border", "corners", "lighting"]] = Field(default_factory=list)
    rules: list[Rule] = Field(min_length=1)
    select: SelectSettings = SelectSettings()
    candidate: CandidateSettings = CandidateSettings()
    min_samples: MinSamples | None = None
    description: str = ""

    @model_validator(mode="after")
    def _probes_enabled(self) -> PolicyModel:
        for index, rule in enumerate(self.rules):
            probe = rule.spec.probe
            if probe is not None and probe not in self.probes:
                raise ValueError(f"rules[{index}]: score {rule.score!r} needs `probes: [{probe}]`")
        return self


@dataclass(frozen=True)
class Policy:
    """A validated policy, with the review-set path resolved against the policy's folder."""

    path: Path
    sha256: str
    model: PolicyModel

    @property
    def name(self) -> str:
        """The policy's name."""
        return self.model.name

    @property
    def review_set_path(self) -> Path:
        """The review set folder (relative paths resolve against the policy file's folder)."""
        raw = Path(self.model.review_set.path)
        return raw if raw.is_absolute() else (self.path.parent / raw)

    @property
    def probes(self) -> frozenset[str]:
        """Enabled probes."""
        return frozenset(self.model.probes)

    @property
    def needs_baseline(self) -> bool:
        """True when any rule compares with a baseline."""
        return any(rule.vs_baseline is not None for rule in self.model.rules)


def load(path: str | Path) -> Policy:
    """Read and validate a policy file; every problem is a PolicyError naming the file, rule and field."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise PolicyError("cannot read policy (not a regular file)", path=path)
    try:
        raw_bytes = strict_yaml.read_bounded(path, MAX_POLICY_BYTES, PolicyError)
    except PolicyError as exc:
        raise PolicyError(exc.message.replace("cannot read the file", "cannot read policy"), path=path,
                          field=exc.field) from None
    # Duplicate keys, aliases and deep nesting are refused: the last of two `min:` keys must not win silently.
    raw = strict_yaml.parse(raw_bytes, path, PolicyError)
    return from_mapping(raw, path=path, sha256=hashlib.sha256(raw_bytes).hexdigest())


def from_mapping(raw: object, *, path: Path, sha256: str) -> Policy:
    """Validate a policy already read (a YAML document, or a dict given to ``gate.check``); ``path`` names it."""
    if not isinstance(raw, dict):
        raise PolicyError("a policy must be a YAML mapping", path=path)
    try:
        model = PolicyModel.model_validate(raw)
    except ValidationError as exc:
        raise PolicyError(_first_error(exc), path=path) from None
    return Policy(path=path, sha256=sha256, model=model)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    location = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
    message = error["msg"].removeprefix("Value error, ")
    count = exc.error_count()
    more = f" (and {count - 1} more)" if count > 1 else ""
    return f"{location}: {message}{more}" if location else f"{message}{more}"


def check_classes(policy: Policy, classes: Sequence[str]) -> None:
    """Per-class rules must name a class of the review set."""
    for index, rule in enumerate(policy.model.rules):
        if rule.spec.per_class:
            prefix, _, suffix = rule.spec.name.partition(CLASS_PLACEHOLDER)
            class_name = rule.score[len(prefix) : len(rule.score) - len(suffix)]
            if class_name not in classes:
                raise PolicyError(f"score {rule.score!r} names class {class_name!r}, not in the review set",
                                  path=policy.path, field=f"rules[{index}].score")


@dataclass(frozen=True)
class Evidence:
    """What rules are evaluated on: the candidate's scores and records, and the baseline's records."""

    scores: Mapping[str, float]
    records: Records
    score_fn: ScoreFn
    baseline: Records | None = None
    seed: int = 0

    @cached_property
    def comparison(self) -> Pairing | None:
        """The paired comparison with the baseline (None without one), built once for every rule and output."""
        from gate.decide import compare

        return None if self.baseline is None else compare.compare(self.records, self.baseline, self.score_fn)


def evaluate(policy: Policy, evidence: Evidence) -> tuple[RuleResult, ...]:
    """Evaluate every rule in policy order."""
    if policy.needs_baseline and evidence.baseline is None:
        raise UsageError("the policy has vs_baseline rules; give --baseline", path=policy.path, field="rules")
    sizes = _sample_size_rules(policy.model.min_samples, evidence.records)
    return (*sizes, *(_evaluate_rule(rule, evidence) for rule in policy.model.rules))


TOO_SMALL = "failed: review set too small"


def _sample_size_rules(minimum: MinSamples | None, records: Records) -> tuple[RuleResult, ...]:
    """The policy's ``min_samples`` as rules: below either count, "failed: review set too small"."""
    if minimum is None:
        return ()
    rules = []
    if minimum.overall:
        need, n = minimum.overall, records.size
        text = f"{n} scored samples, the policy needs at least {need}"
        rules.append(_size_rule(f"samples >= {need}", need, n, text))
    if minimum.per_class:
        need = minimum.per_class
        counts = np.bincount(records.labels, minlength=len(records.classes))
        fewest = int(counts.argmin())
        text = (f"class {records.classes[fewest]!r} has {int(counts[fewest])} scored samples, "
                f"the policy needs at least {need} per class")
        rules.append(_size_rule(f"samples per class >= {need}", need, int(counts[fewest]), text))
    return tuple(rules)


def _size_rule(rule_id: str, need: int, have: int, text: str) -> RuleResult:
    passed = have >= need
    message = text if passed else f"{TOO_SMALL} ({text})"
    return RuleResult(rule_id, "samples", ">=", float(need), float(have), passed, message, True,
                      decidable=passed, note="" if passed else TOO_SMALL)


def _evaluate_rule(rule: Rule, evidence: Evidence) -> RuleResult:
    value = evidence.scores.get(rule.score, float("nan"))
    spec = rule.spec
    if rule.vs_baseline is not None:
        return _baseline_rule(rule, rule.vs_baseline, evidence)
    op, threshold = (">=", rule.min) if rule.min is not None else ("<=", rule.max)
    assert threshold is not None
    rule_id = f"{rule.score} {op} {threshold:g}" + (f" @{rule.confidence:.0%}" if rule.confidence else "")
    if math.isnan(value):
        return RuleResult(rule_id, rule.score, op, threshold, None, False,
                          f"{rule.score} could not be computed (no samples to score)", spec.higher_is_better)
    interval = None
    tested = value
    decidable, note = None, ""
    if rule.confidence is not None:
        bounds = confidence_interval(rule.score, evidence, rule.confidence)
        interval = (bounds.interval.low, bounds.interval.high)
        tested = interval[0] if op == ">=" else interval[1]
        decidable, note = _decidability(op, threshold, bounds)
    passed = tested >= threshold if op == ">=" else tested <= threshold
    bound = "" if interval is None else f" (bound {tested:.4g} at {rule.confidence:.0%})"
    verb = "meets" if passed else "fails"
    message = f"{rule.score} = {value:.4g}{bound} {verb} {op} {threshold:g}" + (f"; {note}" if note else "")
    return RuleResult(rule_id, rule.score, op, threshold, value, passed, message, spec.higher_is_better, interval,
                      decidable=decidable, note=note, confidence=rule.confidence)


def _baseline_rule(rule: Rule, test: BaselineTest, evidence: Evidence) -> RuleResult:
    from gate.decide import compare

    comparison = evidence.comparison
    assert comparison is not None
    spec = rule.spec
    # The comparison caches the interval, so the outputs show exactly the bounds this rule tested.
    interval = comparison.interval_for(rule.score, confidence=test.confidence, seed=evidence.seed)
    delta = comparison.deltas.get(f"delta.{rule.score}", float("nan"))
    span = (interval.low, interval.high)
    if test.max_drop is not None:
        op, threshold = "non_inferior", test.max_drop
        passed = compare.non_inferior(interval, max_drop=test.max_drop, higher_is_better=spec.higher_is_better)
        claim = f"no worse than the baseline by more than {threshold:g}"
    else:
        op, threshold = "superior", float(test.min_gain or 0.0)
        passed = compare.superior(interval, min_gain=threshold, higher_is_better=spec.higher_is_better)
        claim = f"better than the baseline by at least {threshold:g}"
    rule_id = f"{rule.score} vs baseline: {op} {threshold:g} @{test.confidence:.0%}"
    message = (f"Δ{rule.score} = {delta:+.4g}, {test.confidence:.0%} bound [{span[0]:+.4g}, {span[1]:+.4g}]: "
               f"{'is' if passed else 'not shown'} {claim}")
    if math.isnan(delta):
        passed, message = False, f"Δ{rule.score} could not be computed"
    return RuleResult(rule_id, rule.score, op, threshold, None if math.isnan(delta) else delta, passed, message,
                      spec.higher_is_better, span, confidence=test.confidence)


def _decidability(op: str, threshold: float, bounds: Bounds) -> tuple[bool, str]:
    from gate.decide import intervals

    return intervals.decidability(op, threshold, bounds)


def confidence_interval(score: str, evidence: Evidence, confidence: float) -> Bounds:
    """Bounds whose lower (upper) end is the one-sided bound at ``confidence``: Wilson for shares of samples,
    else a seeded vectorised bootstrap over samples of the score's form (:mod:`gate.decide.intervals`)."""
    from gate.decide import intervals  # lazily: scipy is not paid by `xgate --help`

    return intervals.score_interval(evidence.records, score, confidence=confidence, seed=evidence.seed)


def rank_key(scores: Mapping[str, float], rank_by: Collection[str], name: str) -> tuple[Any, ...]:
    """Sort key for ``select``: better first on each score in order (NaN last), then by name."""
    key: list[Any] = []
    for score in rank_by:
        spec = get_spec(score)
        value = scores.get(score, float("nan"))
        if math.isnan(value):
            key.append((1, 0.0))
        else:
            key.append((0, -value if spec is None or spec.higher_is_better else value))
    key.append(name)
    return tuple(key)

"""The gate's result: verdicts, rules and scores per candidate, and its JSON form.

Outputs (report, JSON, JUnit, GitHub summary) and tracking read only this.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gate.records import Records

RESULT_FORMAT = "xgate.result/v1"
COMPARISON_CONFIDENCE = 0.95  # of the accuracy-difference interval every baseline comparison reports


@dataclass(frozen=True)
class RuleResult:
    """One policy rule evaluated on one candidate."""

    rule_id: str  # e.g. "accuracy >= 0.9" — stable, used as the JUnit test name
    score: str
    op: str  # ">=", "<=", "non_inferior", "superior"
    threshold: float
    value: float | None  # None when the score could not be computed
    passed: bool
    message: str
    higher_is_better: bool
    interval: tuple[float, float] | None = None  # bound used by confidence / vs_baseline rules
    # Rules with a confidence: False when this review set cannot settle the rule at that confidence (``note``
    # says why, in one wording: gate.decide.intervals.decidability); None for rules without a confidence.
    decidable: bool | None = None
    note: str = ""
    confidence: float | None = None  # the level of ``interval`` (each end a one-sided bound at it)


@dataclass(frozen=True)
class CandidateInfo:
    """What identifies a candidate in outputs and tracking."""

    path: str
    name: str
    sha256: str
    arch: str
    target_layer: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    target_layout: str = ""  # "spatial", "tokens" or "channels_last" (gate.engine.layers)
    model_source: str = ""  # torchvision, timm, transformers, xgate or import path (gate.inputs.archs.source_of)
    input: Mapping[str, Any] = field(default_factory=dict)  # the input pipeline and where it came from


@dataclass(frozen=True)
class Gallery:
    """Sample ids shown in the report, by kind."""

    easy: tuple[str, ...] = ()
    borderline: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    wrong_reason: tuple[str, ...] = ()  # right answers whose map lies off the object (lift < 1)


@dataclass(frozen=True)
class Migration:
    """How samples moved between the baseline's and the candidate's predictions."""

    corrected: int  # baseline wrong, candidate right
    regressed: int  # baseline right, candidate wrong
    still_wrong: int
    still_right: int
    still_wrong_confidence_dropped: float  # share of still-wrong whose top confidence dropped; NaN if none


def interval_key(score: str, confidence: float) -> str:
    """How result.json names the interval of ``delta.<score>`` at ``confidence``: ``"delta.accuracy@0.95"``."""
    return f"delta.{score}@{confidence:g}"


@dataclass(frozen=True)
class DeltaInterval:
    """The paired-bootstrap interval of ``delta.<score>``; each end a one-sided bound at ``confidence``."""

    score: str
    confidence: float
    low: float
    high: float

    @property
    def key(self) -> str:
        """Its name in result.json."""
        return interval_key(self.score, self.confidence)


@dataclass(frozen=True)
class ChangeWarning:
    """A change no ``vs_baseline`` rule gates whose interval lies wholly on the worse side (gate.decide.watch):
    a third state beside pass and fail that never changes the verdict."""

    score: str
    delta: float
    low: float
    high: float
    confidence: float
    candidate: float
    baseline: float

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form (NaN becomes null)."""
        return {"score": self.score, "delta": json_number(self.delta), "low": json_number(self.low),
                "high": json_number(self.high), "confidence": self.confidence,
                "candidate": json_number(self.candidate), "baseline": json_number(self.baseline)}


@dataclass(frozen=True)
class Comparison:
    """The candidate against the baseline on the same samples (built by ``gate.decide.compare``)."""

    deltas: Mapping[str, float]  # "delta.<score>" -> candidate - baseline, for every score both have
    candidate_scores: Mapping[str, float]
    baseline_scores: Mapping[str, float]
    migration: Migration
    class_deltas: Mapping[str, float]  # class name -> candidate - baseline accuracy on that class
    mcnemar_p: float
    intervals: tuple[DeltaInterval, ...] = ()  # those the rules asked for, and the accuracy difference's
    warnings: tuple[ChangeWarning, ...] = ()  # ungated changes beyond their interval, largest first

    def interval(self, score: str, confidence: float) -> DeltaInterval | None:
        """The interval of ``delta.<score>`` at ``confidence``, when one was computed."""
        key = interval_key(score, confidence)
        return next((iv for iv in self.intervals if iv.key == key), None)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form for result.json (NaN becomes null)."""
        migration = {k: json_number(v) if isinstance(v, float) else v for k, v in vars(self.migration).items()}
        return {
            "deltas": _json_map(self.deltas),
            "candidate_scores": _json_map(self.candidate_scores),
            "baseline_scores": _json_map(self.baseline_scores),
            "migration": migration,
            "class_deltas": _json_map(self.class_deltas),
            "mcnemar_p": json_number(self.mcnemar_p),
            "intervals": {
                iv.key: {"low": json_number(iv.low), "high": json_number(iv.high), "confidence": iv.confidence}
                for iv in self.intervals
            },
            "warnings": [w.to_json() for w in self.warnings],
        }


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's scores, rule outcomes and (optionally) its comparison to the baseline."""

    candidate: CandidateInfo
    scores: Mapping[str, float]
    rules: tuple[RuleResult, ...]
    records: Records
    gallery: Gallery = Gallery()
    comparison: Comparison | None = None
    timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when every rule passed."""
        return all(rule.passed for rule in self.rules)

    @property
    def failed_rules(self) -> tuple[RuleResult, ...]:
        """The rules that failed, in policy order."""
        return tuple(rule for rule in self.rules if not rule.passed)


@dataclass(frozen=True)
class PolicyInfo:
    """The policy as identified in outputs."""

    name: str
    path: str
    sha256: str


@dataclass(frozen=True)
class ReviewSetInfo:
    """The review set as identified in outputs."""

    name: str
    version: str
    path: str
    digest: str
    size: int
    classes: tuple[str, ...]
    pinned: bool = True  # False: --allow-unpinned and the digest is not the one the policy pins


SHORT_SHA = 7  # characters of a commit SHA shown to people (git's own default)


@dataclass(frozen=True)
class SourceInfo:
    """The commit gated and its branch (gate.inputs.source decides where they come from)."""

    commit: str  # the full SHA, lower-case hex
    branch: str = ""  # "" when unknown (a detached checkout)
    origin: str = "git"  # "GITHUB_SHA", "CI_COMMIT_SHA" or "git" (the candidate's repository)

    @property
    def short(self) -> str:
        """The commit as people quote it: its first 7 hex digits."""
        return self.commit[:SHORT_SHA]

    @property
    def label(self) -> str:
        """``1a2b3c4 on main`` (or just the short SHA without a branch)."""
        return f"{self.short} on {self.branch}" if self.branch else self.short

    def to_json(self) -> dict[str, str]:
        """The ``source`` object of result.json."""
        return {"commit": self.commit, "short": self.short, "branch": self.branch, "from": self.origin}


@dataclass(frozen=True)
class GateResult:
    """A whole gate call: ``check`` has one candidate, ``select`` several."""

    command: str  # "check" | "select"
    policy: PolicyInfo
    review_set: ReviewSetInfo
    candidates: tuple[CandidateResult, ...]
    baseline: CandidateResult | None = None
    selected: str | None = None  # name of the winning candidate (select) or the passing one (check)
    rank_by: tuple[str, ...] = ("accuracy",)  # the policy's select.rank_by, ties then broken by name
    ranking: tuple[str, ...] = ()  # candidate names, passing ones first, each group best first by rank_by
    environment: Mapping[str, str] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)
    created: str = ""
    source: SourceInfo | None = None  # the commit gated, when there is one

    @property
    def passed(self) -> bool:
        """check: the candidate passed; select: at least one candidate passed."""
        return any(c.passed for c in self.candidates)

    def ranked(self) -> tuple[CandidateResult, ...]:
        """Candidates in ``ranking`` order (given order when there is no ranking)."""
        by_name = {c.candidate.name: c for c in self.candidates}
        if sorted(self.ranking) != sorted(by_name):
            return self.candidates
        return tuple(by_name[name] for name in self.ranking)

    @property
    def verdict(self) -> str:
        """``"passed"`` or ``"failed"``."""
        return "passed" if self.passed else "failed"

    def to_json(self) -> dict[str, Any]:
        """The ``xgate.result/v1`` document (JSON-safe: NaN becomes null)."""
        return {
            "format": RESULT_FORMAT,
            "command": self.command,
            "verdict": self.verdict,
            "selected": self.selected,
            "rank_by": list(self.rank_by),
            "ranking": list(self.ranking),
            "created": self.created,
            "source": None if self.source is None else self.source.to_json(),
            "policy": vars(self.policy),
            "review_set": {**vars(self.review_set), "classes": list(self.review_set.classes)},
            "candidates": [_candidate_json(c) for c in self.candidates],
            "baseline": None if self.baseline is None else _candidate_json(self.baseline),
            "timings": dict(self.timings),
            "environment": dict(self.environment),
        }


def _candidate_json(result: CandidateResult) -> dict[str, Any]:
    info = result.candidate
    return {
        "candidate": {**vars(info), "meta": dict(info.meta), "input": dict(info.input)},
        "verdict": "passed" if result.passed else "failed",
        "scores": {k: json_number(v) for k, v in result.scores.items()},
        "rules": [
            {
                "id": r.rule_id, "score": r.score, "op": r.op, "threshold": r.threshold,
                "value": json_number(r.value), "interval": None if r.interval is None else list(r.interval),
                "passed": r.passed, "message": r.message, "higher_is_better": r.higher_is_better,
                "decidable": r.decidable, "note": r.note, "confidence": r.confidence,
            }
            for r in result.rules
        ],
        "failed_rules": [r.rule_id for r in result.failed_rules],
        "gallery": {k: list(v) for k, v in vars(result.gallery).items()},
        "comparison": None if result.comparison is None else result.comparison.to_json(),
        "timings": dict(result.timings),
    }


def _json_map(values: Mapping[str, float]) -> dict[str, float | None]:
    return {k: json_number(float(v)) for k, v in values.items()}


def json_number(value: float | None) -> float | None:
    """A float for JSON: NaN and infinities become None."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)

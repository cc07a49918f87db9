"""result.json: every key a real gate writes is documented in docs/result.md."""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import replace
from pathlib import Path

from gate.inputs.review_set import ReviewSet
from gate.run import GateRequest, run_gate
from tests.conftest import REPO, pinned_policy

RESULT_MD = REPO / "docs" / "result.md"


def documented() -> set[str]:
    """Every `name` in backticks in docs/result.md (`a`, `b` lists count each)."""
    return set(re.findall(r"`([\w.@<>-]+)`", RESULT_MD.read_text(encoding="utf-8")))


def test_every_key_of_a_real_result_is_documented(tmp_path: Path, small_set: ReviewSet,
                                                  untrained_checkpoint: Path) -> None:
    prod = tmp_path / "prod.pt"
    shutil.copy(untrained_checkpoint, prod)
    policy = pinned_policy(tmp_path, small_set, [{"score": "accuracy", "vs_baseline": {"max_drop": 0.01}}])
    result = run_gate(GateRequest(command="select", candidates=(untrained_checkpoint,), policy=policy,
                                  baseline=prod))
    doc = json.loads(json.dumps(result.to_json()))
    cand = doc["candidates"][0]
    comparison = cand["comparison"]
    keys = {
        "top level": set(doc),
        "policy": set(doc["policy"]),
        "review_set": set(doc["review_set"]),
        "timings": set(doc["timings"]),
        "environment": set(doc["environment"]),
        "candidate entry": set(cand),
        "candidate": set(cand["candidate"]),
        "rule": set(cand["rules"][0]),
        "gallery": set(cand["gallery"]),
        "comparison": set(comparison),
        "migration": set(comparison["migration"]),
        "interval": set(next(iter(comparison["intervals"].values()))),
    }
    missing = {where: sorted(names - documented()) for where, names in keys.items() if names - documented()}
    assert not missing, f"document these in docs/result.md: {missing}"
    assert "delta.accuracy@0.95" in comparison["intervals"] and "delta.accuracy@0.95" in documented()


def test_the_comparison_is_serialised_as_before_with_nan_as_null() -> None:
    from gate.result import Comparison, DeltaInterval, Migration

    comparison = Comparison(
        deltas={"delta.accuracy": -0.01, "delta.ece": math.nan}, candidate_scores={"accuracy": 0.89},
        baseline_scores={"accuracy": 0.9}, migration=Migration(2, 8, 50, 540, math.nan),
        class_deltas={"a": 0.5, "b": math.nan}, mcnemar_p=0.109375,
        intervals=(DeltaInterval("ece", 0.9, math.nan, 0.02), DeltaInterval("accuracy", 0.95, -0.03, 0.005)))
    # The text result.json held before the comparison became a dataclass (keys in this order).
    assert json.dumps(comparison.to_json()) == (
        '{"deltas": {"delta.accuracy": -0.01, "delta.ece": null}, "candidate_scores": {"accuracy": 0.89}, '
        '"baseline_scores": {"accuracy": 0.9}, "migration": {"corrected": 2, "regressed": 8, "still_wrong": 50, '
        '"still_right": 540, "still_wrong_confidence_dropped": null}, "class_deltas": {"a": 0.5, "b": null}, '
        '"mcnemar_p": 0.109375, "intervals": {"delta.ece@0.9": {"low": null, "high": 0.02, "confidence": 0.9}, '
        '"delta.accuracy@0.95": {"low": -0.03, "high": 0.005, "confidence": 0.95}}, "warnings": []}')
    # ... plus the warnings (issue 23): ungated changes beyond their interval, NaN as null as everywhere.
    from gate.result import ChangeWarning

    warned = replace(comparison, warnings=(ChangeWarning("ece", 0.1, 0.085, math.nan, 0.95, 0.11, 0.01),))
    assert json.dumps(warned.to_json()["warnings"]) == (
        '[{"score": "ece", "delta": 0.1, "low": 0.085, "high": null, "confidence": 0.95, "candidate": 0.11, '
        '"baseline": 0.01}]')
    found = comparison.interval("accuracy", 0.95)
    assert found is not None and (found.low, found.high) == (-0.03, 0.005)
    assert comparison.interval("accuracy", 0.9) is None

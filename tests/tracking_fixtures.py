"""Hand-built GateResults for the tracking tests: tiny Records with kept samples, candidates and output files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gate.records import KeptSample, Records
from gate.result import CandidateInfo, CandidateResult, GateResult, PolicyInfo, ReviewSetInfo, RuleResult, SourceInfo

CLASSES = ("circle", "square", "star", "triangle")
MODEL = "shapes-classifier"


# --- fixtures: tiny records and results built by hand ------------------------------------------


def kept_sample(sample_id: str, label: int, pred: int, seed: int) -> KeptSample:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    mask = np.zeros((16, 16), dtype=bool)
    mask[4:10, 5:12] = True
    yy, xx = np.mgrid[0:16, 0:16]
    cam = np.exp(-((yy - 7) ** 2 + (xx - 8) ** 2) / 8.0).astype(np.float32) * 3.0  # peak 3.0 at (7, 8)
    return KeptSample(sample_id=sample_id, image=image, mask=mask, cam=cam, label=label, pred=pred, confidence=0.9)


def make_records() -> Records:
    # Samples 0-2 right, sample 3 ("s/3", a triangle) confidently called a circle.
    probs = np.array([[0.90, 0.05, 0.03, 0.02], [0.10, 0.70, 0.10, 0.10],
                      [0.20, 0.20, 0.40, 0.20], [0.995, 0.002, 0.002, 0.001]], dtype=np.float32)
    return Records(
        classes=CLASSES, ids=("s0", "s1", "s2", "s/3"), labels=np.array([0, 1, 2, 3], dtype=np.int64), probs=probs,
        energy=np.array([0.5, 0.2, np.nan, 0.9]), mask_area=np.array([0.25, 0.2, 0.1, 0.3]),
        pointing_hit=np.array([1.0, 0.0, np.nan, 1.0]), rank_accuracy=np.array([0.4, 0.1, np.nan, 0.8]),
        probe_preds={"mixed_rand": np.array([0, 1, 0, 0], dtype=np.int64),
                     "only_bg": np.array([3, 3, 3, 3], dtype=np.int64)},
        kept={"s0": kept_sample("s0", 0, 0, seed=1), "s/3": kept_sample("s/3", 3, 0, seed=2)},
    )


def rule(rule_id: str, score: str, value: float, passed: bool) -> RuleResult:
    return RuleResult(rule_id=rule_id, score=score, op=">=", threshold=0.9, value=value, passed=passed,
                      message="", higher_is_better=True)


def candidate(path: Path | str, passed: bool, sha256: str = "ab" * 32) -> CandidateResult:
    rules = (rule("accuracy >= 0.9", "accuracy", 0.75, passed), rule("alignment.lift >= 2", "alignment.lift", 2.5,
                                                                      True))
    if not passed:
        rules = (*rules, rule("ece <= 0.05", "ece", 0.2, False))
    scores = {"accuracy": 0.75, "ece": 0.04 if passed else 0.2, "confident_wrong_rate@0.99": 0.25,
              "alignment.lift": 2.5, "class_accuracy.star": 1.0, "nll": float("nan"), "aurc": float("inf")}
    info = CandidateInfo(path=str(path), name=Path(path).name, sha256=sha256, arch="tiny_cnn", target_layer="features")
    return CandidateResult(candidate=info, scores=scores, rules=rules, records=make_records())


def gate_result(*cands: CandidateResult, command: str = "check", selected: str | None = None,
                created: str = "2026-01-01T10:00:00+00:00") -> GateResult:
    return GateResult(
        command=command, policy=PolicyInfo(name="strict", path="policies/strict.yaml", sha256="cd" * 32),
        review_set=ReviewSetInfo(name="shapes-v1", version="1", path="review_sets/shapes-v1",
                                 digest="sha256:" + "ef" * 32, size=4, classes=CLASSES),
        candidates=cands, selected=selected, created=created,
        source=SourceInfo(commit="1" * 40, branch="main", origin="GITHUB_SHA"),
    )


def write_outputs(result: GateResult, folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"report": folder / "my-report.html", "json": folder / "result.json", "junit": folder / "junit.xml"}
    paths["report"].write_text("<html>report</html>", encoding="utf-8")
    paths["json"].write_text(json.dumps(result.to_json()), encoding="utf-8")
    paths["junit"].write_text("<testsuites/>", encoding="utf-8")
    return paths

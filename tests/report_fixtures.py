"""Hand-built GateResults for the output tests: tiny Records, kept samples, a baseline and probes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from gate.records import PROBE_VARIANTS, KeptSample, Records
from gate.result import (
    CandidateInfo,
    CandidateResult,
    ChangeWarning,
    Comparison,
    DeltaInterval,
    Gallery,
    GateResult,
    Migration,
    PolicyInfo,
    ReviewSetInfo,
    RuleResult,
)

XSS = "<script>alert(1)</script>"
# A class whose name is broken TeX: matplotlib raises on it unless math parsing is off.
MATH = "price $\\x$"
CLASSES: tuple[str, ...] = ("circle", "square", XSS, MATH)


def _image(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth scene (gradient plus mild noise) like the shapes review set, not incompressible noise."""
    ramp = np.linspace(0, 200, size)
    base = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1), np.full((size, size), 90.0)], -1)
    return np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


def _mask(size: int, centre: tuple[int, int], radius: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return np.asarray((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2)


def _cam(size: int, centre: tuple[int, int]) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    blob = np.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * (size / 6) ** 2))
    return (3.0 * blob).astype(np.float32)  # raw scale, not normalised to [0, 1]


def kept_sample(
    rng: np.random.Generator, sample_id: str, label: int, pred: int, confidence: float, size: int, probes: bool
) -> KeptSample:
    """One kept sample with an object disc, a Gaussian map and (optionally) the four probe variants."""
    centre = (int(rng.integers(size // 4, 3 * size // 4)), int(rng.integers(size // 4, 3 * size // 4)))
    image = _image(rng, size)
    mask = _mask(size, centre, size / 5)
    image[mask] = (230, 40, 40)
    variants = {v: _image(rng, size) for v in PROBE_VARIANTS} if probes else {}
    variant_preds = {v: int(rng.integers(len(CLASSES))) for v in PROBE_VARIANTS} if probes else {}
    return KeptSample(sample_id=sample_id, image=image, mask=mask, cam=_cam(size, centre), label=label, pred=pred,
                      confidence=confidence, variants=variants, variant_preds=variant_preds)


def make_records(
    n: int = 40, *, seed: int = 0, kept: int = 8, size: int = 16, probes: bool = True,
    labels: np.ndarray | None = None, kept_ids: Sequence[str] | None = None,
) -> Records:
    """Random but fixed Records: about 60-70% accuracy, ``kept`` samples with pictures."""
    rng = np.random.default_rng(seed)
    n_classes = len(CLASSES)
    labels = rng.integers(0, n_classes, n) if labels is None else labels
    logits = rng.normal(0, 1.0, (n, n_classes))
    logits[np.arange(n), labels] += 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    ids = tuple(f"s{i:04d}" for i in range(n))
    records = Records(
        classes=CLASSES, ids=ids, labels=labels.astype(np.int64), probs=probs.astype(np.float32),
        energy=rng.uniform(0, 1, n), mask_area=rng.uniform(0.05, 0.3, n), pointing_hit=rng.integers(0, 2, n) * 1.0,
        rank_accuracy=rng.uniform(0, 1, n),
        probe_preds={v: rng.integers(0, n_classes, n) for v in PROBE_VARIANTS} if probes else {},
    )
    chosen = list(kept_ids) if kept_ids is not None else list(ids[:kept])
    index = {sample_id: i for i, sample_id in enumerate(ids)}
    samples = {
        s: kept_sample(rng, s, int(records.labels[index[s]]), int(records.preds[index[s]]),
                       float(records.confidence[index[s]]), size, probes)
        for s in chosen
    }
    return replace(records, kept=samples)


def gallery_of(records: Records) -> Gallery:
    """Kept samples split by outcome: wrong → failures, confident right → easy, the rest borderline; right
    answers with lift < 1 also → wrong_reason."""
    failures = tuple(s for s, k in records.kept.items() if k.pred != k.label)
    easy = tuple(s for s, k in records.kept.items() if k.pred == k.label and k.confidence >= 0.6)
    borderline = tuple(s for s in records.kept if s not in failures and s not in easy)
    lift = dict(zip(records.ids, records.lift.tolist(), strict=True))
    wrong_reason = tuple(s for s, k in records.kept.items() if k.pred == k.label and lift[s] < 1)
    return Gallery(easy=easy, borderline=borderline, failures=failures, wrong_reason=wrong_reason)


def scores_of(records: Records) -> dict[str, float]:
    """A few scores named as the registry names them (values need not match the metric modules)."""
    scores = {
        "accuracy": float(records.correct.mean()),
        "ece": 0.08,
        "confident_wrong_rate@0.9": float(np.mean(~records.correct & (records.confidence >= 0.9))),
        "alignment.lift": float(np.nanmean(records.lift)),
        "background.only_bg_accuracy": 0.3,
        "sanity.randomization_similarity": 0.12,
        "nll": float("nan"),  # a score that could not be computed
    }
    for i, name in enumerate(records.classes):
        scores[f"class_accuracy.{name}"] = float(records.correct[records.labels == i].mean())
    return scores


def rules_of(scores: dict[str, float]) -> tuple[RuleResult, ...]:
    """Rules over ``scores``: accuracy fails at 0.95, ece passes, one per-class rule names the XSS class."""
    def rule(
        score: str, op: str, threshold: float, higher: bool, interval: tuple[float, float] | None = None
    ) -> RuleResult:
        value = scores.get(score)
        passed = value is not None and (value >= threshold if op == ">=" else value <= threshold)
        return RuleResult(rule_id=f"{score} {op} {threshold}", score=score, op=op, threshold=threshold, value=value,
                          passed=passed, message=f"{score} = {value:.4g}, needs {op} {threshold}",
                          higher_is_better=higher, interval=interval)

    return (
        rule("accuracy", ">=", 0.95, True),
        rule("ece", "<=", 0.5, False),
        rule(f"class_accuracy.{XSS}", ">=", 0.0, True),
        rule("alignment.lift", ">=", 0.5, True, interval=(0.61, 0.93)),
        rule("confident_wrong_rate@0.9", "<=", 0.2, False),
    )


def comparison_of(candidate: Records, baseline: Records) -> Comparison:
    """A comparison computed by hand from the two record sets (a made-up interval and McNemar p)."""
    c, b = candidate.correct, baseline.correct
    class_deltas = {
        name: float(c[candidate.labels == i].mean() - b[candidate.labels == i].mean())
        for i, name in enumerate(candidate.classes)
    }
    return Comparison(
        deltas={"delta.accuracy": float(c.mean() - b.mean()), "delta.ece": -0.02, "delta.nll": float("nan")},
        candidate_scores={}, baseline_scores={},
        migration=Migration(corrected=int(np.sum(c & ~b)), regressed=int(np.sum(~c & b)),
                            still_wrong=int(np.sum(~c & ~b)), still_right=int(np.sum(c & b)),
                            still_wrong_confidence_dropped=0.5 if np.sum(~c & ~b) else float("nan")),
        class_deltas=class_deltas,
        mcnemar_p=0.0312,
        intervals=(DeltaInterval("accuracy", 0.95, -0.05, 0.11),),
    )


def candidate_result(
    name: str, records: Records, baseline: Records | None = None, rules: tuple[RuleResult, ...] | None = None
) -> CandidateResult:
    """A CandidateResult with scores, rules, gallery and (with a baseline) a comparison."""
    scores = scores_of(records)
    comparison = None if baseline is None else comparison_of(records, baseline)
    if comparison is not None:
        scores.update({k: v for k, v in comparison.deltas.items() if math.isfinite(v)})
    return CandidateResult(
        candidate=CandidateInfo(path=f"models/{name}", name=name, sha256="ab" * 32, arch="tiny_cnn",
                                target_layer="features.3"),
        scores=scores, rules=rules_of(scores) if rules is None else rules, records=records,
        gallery=gallery_of(records), comparison=comparison, timings={"engine_s": 1.25},
    )


def _infos(size: int) -> tuple[PolicyInfo, ReviewSetInfo]:
    policy = PolicyInfo(name="strict", path="policies/strict.yaml", sha256="cd" * 32)
    review = ReviewSetInfo(name="shapes-v1", version="1", path="review_sets/shapes-v1", digest="sha256:" + "ef" * 32,
                           size=size, classes=CLASSES)
    return policy, review


def _baseline(candidate: Records, n: int, size: int, probes: bool) -> CandidateResult:
    records = make_records(n, seed=99, size=size, probes=probes, labels=candidate.labels,
                           kept_ids=tuple(candidate.kept))
    return candidate_result("prod.pt", records, rules=())


def check_result(
    *, baseline: bool = False, probes: bool = True, n: int = 40, kept: int = 8, size: int = 16
) -> GateResult:
    """``xgate check`` on one candidate, optionally against a baseline."""
    records = make_records(n, seed=1, kept=kept, size=size, probes=probes)
    base = _baseline(records, n, size, probes) if baseline else None
    cand = candidate_result("cand.pt", records, None if base is None else base.records)
    policy, review = _infos(n)
    return GateResult(command="check", policy=policy, review_set=review, candidates=(cand,), baseline=base,
                      selected=cand.candidate.name if cand.passed else None,
                      environment={"torch": "2.14.1", "device": "cpu"}, timings={"total_s": 3.5},
                      created="2025-01-01T00:00:00+00:00")


def select_result(*, baseline: bool = False, n: int = 40, kept: int = 6, size: int = 16) -> GateResult:
    """``xgate select`` over three candidates: a.pt and c.pt pass, b.pt fails; a.pt wins."""
    made = [make_records(n, seed=s, kept=kept, size=size) for s in (1, 2, 3)]
    labels = made[0].labels
    made = [made[0]] + [make_records(n, seed=s, kept=kept, size=size, labels=labels) for s in (2, 3)]
    base = _baseline(made[0], n, size, True) if baseline else None
    base_records = None if base is None else base.records
    results = []
    for name, records, threshold in zip(("a.pt", "b.pt", "c.pt"), made, (0.0, 0.99, 0.0), strict=True):
        scores = scores_of(records)
        rules = tuple(
            replace(r, rule_id=f"accuracy >= {threshold}", threshold=threshold, passed=scores["accuracy"] >= threshold)
            if r.score == "accuracy" else replace(r, passed=True)
            for r in rules_of(scores)
        )
        results.append(candidate_result(name, records, base_records, rules=rules))
    policy, review = _infos(n)
    return GateResult(command="select", policy=policy, review_set=review, candidates=tuple(results), baseline=base,
                      selected="a.pt", rank_by=("accuracy",), ranking=("a.pt", "c.pt", "b.pt"),
                      environment={"torch": "2.14.1"}, created="2025-01-01T00:00:00+00:00")


# --- the demo's reports, as the release and strict policies judge them (values as the demo gives them) -----------

# (score, op, threshold, value, (low, high)) of the strict policy's rules at 95%, after its min_samples rules.
_STRICT = ("accuracy", "worst_class_accuracy", "ece", "overconfidence_error", "confident_wrong_rate@0.99",
           "alignment.lift", "alignment.off_object_rate", "alignment.coverage", "background.only_bg_accuracy",
           "background.bg_gap", "background.flip_rate", "sanity.randomization_similarity")
_THRESHOLDS = {"accuracy": (">=", 0.9), "worst_class_accuracy": (">=", 0.8), "ece": ("<=", 0.15),
               "overconfidence_error": ("<=", 0.03), "confident_wrong_rate@0.99": ("<=", 0.01),
               "alignment.lift": (">=", 2.0), "alignment.off_object_rate": ("<=", 0.2),
               "alignment.coverage": (">=", 0.95), "background.only_bg_accuracy": ("<=", 0.4),
               "background.bg_gap": ("<=", 0.1), "background.flip_rate": ("<=", 0.2),
               "sanity.randomization_similarity": ("<=", 0.5)}
DEMO_VALUES: dict[str, dict[str, tuple[float, float, float]]] = {
    # The cheater reads the scene: right 91.3% of the time, but its lower bound is under 90%.
    "cheater.pt": {"accuracy": (0.913, 0.893, 0.93), "worst_class_accuracy": (0.86, 0.82, 0.9),
                   "ece": (0.041, 0.03, 0.055), "overconfidence_error": (0.012, 0.006, 0.019),
                   "confident_wrong_rate@0.99": (0.0, 0.0, 0.0045), "alignment.lift": (0.58, 0.52, 0.64),
                   "alignment.off_object_rate": (0.9767, 0.963, 0.986), "alignment.coverage": (1.0, 0.9955, 1.0),
                   "background.only_bg_accuracy": (0.9133, 0.894, 0.93), "background.bg_gap": (0.62, 0.57, 0.67),
                   "background.flip_rate": (0.71, 0.68, 0.74), "sanity.randomization_similarity": (0.12, 0.09, 0.15)},
    # bgmix passes; the scene adds nothing, and its closest call is accuracy.
    "bgmix.pt": {"accuracy": (0.955, 0.94, 0.967), "worst_class_accuracy": (0.91, 0.88, 0.93),
                 "ece": (0.0075, 0.0061, 0.0091), "overconfidence_error": (0.004, 0.002, 0.006),
                 "confident_wrong_rate@0.99": (0.0, 0.0, 0.0045), "alignment.lift": (2.5, 2.304, 2.7),
                 "alignment.off_object_rate": (0.05, 0.037, 0.067), "alignment.coverage": (1.0, 0.9955, 1.0),
                 "background.only_bg_accuracy": (0.27, 0.245, 0.297), "background.bg_gap": (0.0, -0.02, 0.03),
                 "background.flip_rate": (0.04, 0.029, 0.055), "sanity.randomization_similarity": (0.1, 0.07, 0.13)},
    # cutmix against baseline.pt under the release policy: passes, but two changes nobody gated got worse.
    "cutmix.pt": {"accuracy": (0.96, 0.945, 0.971), "worst_class_accuracy": (0.93, 0.9, 0.95),
                  "ece": (0.11, 0.1, 0.12), "overconfidence_error": (0.002, 0.0, 0.004),
                  "confident_wrong_rate@0.99": (0.0, 0.0, 0.0045), "alignment.lift": (2.9, 2.7, 3.1),
                  "alignment.off_object_rate": (0.03, 0.02, 0.045), "alignment.coverage": (1.0, 0.9955, 1.0),
                  "background.only_bg_accuracy": (0.25, 0.225, 0.277), "background.bg_gap": (0.0, -0.01, 0.02),
                  "background.flip_rate": (0.03, 0.02, 0.043), "sanity.randomization_similarity": (0.1, 0.07, 0.13)},
}


def _demo_rule(score: str, value: float, low: float, high: float) -> RuleResult:
    op, threshold = _THRESHOLDS[score]
    bound = low if op == ">=" else high
    passed = bound >= threshold if op == ">=" else bound <= threshold
    undecided = low < threshold <= high if op == ">=" else low <= threshold < high
    note = f"undecided at 95%: [{low:.4g}, {high:.4g}] holds {threshold:g}; more samples could decide it"
    spec_higher = op == ">="
    return RuleResult(f"{score} {op} {threshold:g} @95%", score, op, threshold, value, passed,
                      f"{score} = {value:.4g}", spec_higher, (low, high), decidable=not undecided,
                      note=note if undecided else "", confidence=0.95)


def _demo_rules(name: str, release: bool) -> tuple[RuleResult, ...]:
    sizes = (RuleResult("samples >= 300", "samples", ">=", 300.0, 600.0, True,
                        "600 scored samples, the policy needs at least 300", True, decidable=True),
             RuleResult("samples per class >= 30", "samples", ">=", 30.0, 150.0, True,
                        "class 'circle' has 150 scored samples, the policy needs at least 30 per class", True,
                        decidable=True))
    plain = tuple(_demo_rule(score, *DEMO_VALUES[name][score]) for score in _STRICT)
    if not release:
        return (*sizes, *plain)
    versus = (
        RuleResult("accuracy vs baseline: non_inferior 0.01 @95%", "accuracy", "non_inferior", 0.01, 0.0, True,
                   "Δaccuracy = +0", True, (-0.006, 0.006), confidence=0.95),
        RuleResult("overconfidence_error vs baseline: non_inferior 0.01 @95%", "overconfidence_error",
                   "non_inferior", 0.01, -0.03, True, "Δoverconfidence_error = -0.03", False, (-0.04, -0.02),
                   confidence=0.95),
    )
    return (*sizes, *plain, *versus)


def _demo_comparison() -> Comparison:
    # cutmix against baseline.pt: gated accuracy and over-confidence are fine; ECE and the pointing game are not.
    candidate = {"accuracy": 0.96, "overconfidence_error": 0.002, "ece": 0.11, "alignment.pointing_game": 0.62}
    baseline = {"accuracy": 0.96, "overconfidence_error": 0.032, "ece": 0.01, "alignment.pointing_game": 0.92}
    return Comparison(
        deltas={f"delta.{k}": candidate[k] - baseline[k] for k in candidate},
        candidate_scores=candidate, baseline_scores=baseline,
        migration=Migration(corrected=9, regressed=9, still_wrong=15, still_right=567,
                            still_wrong_confidence_dropped=0.4),
        class_deltas={"circle": 0.0, "square": 0.02, XSS: -0.02, MATH: 0.0},
        mcnemar_p=1.0,
        intervals=(DeltaInterval("accuracy", 0.95, -0.006, 0.006),
                   DeltaInterval("overconfidence_error", 0.95, -0.04, -0.02),
                   DeltaInterval("ece", 0.95, 0.085, 0.115),
                   DeltaInterval("alignment.pointing_game", 0.95, -0.34, -0.26)),
        warnings=(ChangeWarning("alignment.pointing_game", -0.3, -0.34, -0.26, 0.95, 0.62, 0.92),
                  ChangeWarning("ece", 0.1, 0.085, 0.115, 0.95, 0.11, 0.01)),
    )


def demo_result(name: str, *, kept: int = 8) -> GateResult:
    """The demo's report of ``name``: cheater.pt or bgmix.pt under strict, cutmix.pt against baseline.pt under
    release (name "release")."""
    release = name == "release"
    model = "cutmix.pt" if release else name
    records = make_records(40, seed=1, kept=kept, size=16)
    cand = candidate_result(model, records, rules=_demo_rules(model, release))
    base = None
    if release:
        base = _baseline(records, 40, 16, True)
        cand = replace(cand, comparison=_demo_comparison())
    policy, review = _infos(600)
    policy = replace(policy, name="release" if release else "strict")
    return GateResult(command="check", policy=policy, review_set=review, candidates=(cand,), baseline=base,
                      selected=model if cand.passed else None, environment={"device": "cpu"},
                      created="2025-01-01T00:00:00+00:00")


def _tempered(records: Records, power: float) -> Records:
    """The same answers (argmax kept) with sharper or flatter probabilities: equal accuracy, another ECE."""
    probs = records.probs.astype(np.float64) ** power
    return replace(records, probs=(probs / probs.sum(1, keepdims=True)).astype(np.float32))


def six_select(*, n: int = 200, kept: int = 24, size: int = 64) -> GateResult:
    """``xgate select`` over six candidates named as the demo's, real scores from the registry: two pass with equal
    accuracy and ECEs whose intervals overlap (a tie within noise), four fail."""
    from gate.metrics.registry import compute_scores

    first = make_records(n, seed=1, kept=kept, size=size)
    labels = first.labels
    made = {
        "bgmix.pt": first,
        "baseline.pt": _tempered(first, 1.05),
        "cutmix.pt": make_records(n, seed=2, kept=kept, size=size, labels=labels),
        "cheater.pt": make_records(n, seed=3, kept=kept, size=size, labels=labels),
        "baseline-biased.pt": make_records(n, seed=4, kept=kept, size=size, labels=labels),
        "cutmix-biased.pt": make_records(n, seed=5, kept=kept, size=size, labels=labels),
    }
    results = []
    for name, records in made.items():
        scores = compute_scores(records)
        floor = 0.0 if name in ("bgmix.pt", "baseline.pt") else 0.99
        rules = (RuleResult(f"accuracy >= {floor:g}", "accuracy", ">=", floor, scores["accuracy"],
                            scores["accuracy"] >= floor, "", True),
                 RuleResult("ece <= 0.5", "ece", "<=", 0.5, scores["ece"], scores["ece"] <= 0.5, "", False))
        results.append(replace(candidate_result(name, records, rules=rules), scores=scores))
    policy, review = _infos(n)
    ranking = ("bgmix.pt", "baseline.pt", "baseline-biased.pt", "cheater.pt", "cutmix-biased.pt", "cutmix.pt")
    return GateResult(command="select", policy=policy, review_set=review, candidates=tuple(results),
                      selected="bgmix.pt", rank_by=("accuracy", "ece"), ranking=ranking,
                      environment={"device": "cpu"}, created="2025-01-01T00:00:00+00:00")


def svg_texts_of(uri: str) -> list[str]:
    """The text elements of an SVG data URI (a plot)."""
    import xml.etree.ElementTree as ET
    from urllib.parse import unquote

    root = ET.fromstring(unquote(uri.removeprefix("data:image/svg+xml,")))
    return ["".join(t.itertext()) for t in root.iter("{http://www.w3.org/2000/svg}text")]

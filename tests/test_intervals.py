"""Intervals for every gated score, small review sets told apart, and the policy's min_samples."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.stats import binomtest

from gate.decide import intervals, stats
from gate.decide import policy as policy_io
from gate.inputs.review_set import ReviewSet
from gate.metrics.registry import compute_scores
from gate.metrics.spec import RankForm, SumForm
from gate.records import Records

CLASSES = ("circle", "square", "star", "tri")
PROBES = frozenset({"background", "sanity"})


def synthetic(n: int, seed: int = 0) -> Records:
    """``n`` calibrated samples (confidence in (0.6, 1)), lifts around 2.4 (sd 1), probe predictions, sanity."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    conf = rng.uniform(0.6, 0.999, size=n)
    preds = np.where(rng.random(n) < conf, labels, (labels + 1) % 4)  # calibrated: right with prob. conf
    probs = np.tile(((1 - conf) / 3)[:, None], (1, 4))
    probs[np.arange(n), preds] = conf
    area = np.full(n, 0.2)
    lift = np.clip(rng.normal(2.4, 1.0, size=n), 0.05, 4.95)
    energy = np.where(rng.random(n) < 0.05, np.nan, lift * area)  # some zero maps: NaN energy
    probe_preds = {v: np.where(rng.random(n) < p, labels, (labels + 2) % 4)
                   for v, p in (("only_fg", 0.5), ("only_bg", 0.3), ("mixed_same", 0.95), ("mixed_rand", 0.9))}
    sanity = np.where(rng.random((n, 3)) < 0.02, np.nan, rng.normal(0.1, 0.3, size=(n, 3)))
    return Records(classes=CLASSES, ids=tuple(f"s{i}" for i in range(n)), labels=labels.astype(np.int64),
                   probs=probs.astype(np.float32), energy=energy, mask_area=area,
                   pointing_hit=(rng.random(n) < 0.7).astype(np.float64), rank_accuracy=rng.random(n),
                   probe_preds=probe_preds, sanity_similarity=sanity)


REGISTRY = partial(compute_scores, probes=PROBES)


def evaluate(records: Records, rules: list[dict[str, object]], tmp_path: Path,
             min_samples: dict[str, int] | None = None) -> dict[str, policy_io.RuleResult]:
    doc: dict[str, object] = {"name": "t", "review_set": {"path": "."}, "probes": sorted(PROBES), "rules": rules}
    if min_samples is not None:
        doc["min_samples"] = min_samples
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    policy = policy_io.load(path)
    evidence = policy_io.Evidence(scores=REGISTRY(records), records=records, score_fn=REGISTRY, seed=0)
    return {r.rule_id: r for r in policy_io.evaluate(policy, evidence)}


# --- the Done-when cases ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "rule_id"),
    [({"score": "alignment.lift", "min": 2.25, "confidence": 0.95}, "alignment.lift >= 2.25 @95%"),
     ({"score": "ece", "max": 0.15, "confidence": 0.95}, "ece <= 0.15 @95%")],
    ids=["lift", "ece"],
)
def test_non_proportion_rule_with_confidence_passes_on_600_and_refuses_on_20(
    rule: dict[str, object], rule_id: str, tmp_path: Path
) -> None:
    big = synthetic(600)
    small = big.take(np.arange(20))  # the same distribution, 20 samples
    plain = {k: v for k, v in rule.items() if k != "confidence"}
    small_point = evaluate(small, [plain], tmp_path)
    assert next(iter(small_point.values())).passed  # on its point value the small set would pass: luck
    on_big = evaluate(big, [rule], tmp_path)[rule_id]
    on_small = evaluate(small, [rule], tmp_path)[rule_id]
    assert on_big.passed and on_big.decidable is True and on_big.note == ""
    assert on_big.interval is not None and on_big.interval[0] < on_big.value < on_big.interval[1]
    assert not on_small.passed and on_small.decidable is False
    assert on_small.note.startswith("undecided at 95%: [")
    assert on_small.note in on_small.message


def test_min_samples_fails_a_seven_image_set_and_passes_600(tmp_path: Path) -> None:
    rules = [{"score": "accuracy", "min": 0.5}]
    minimum = {"overall": 30, "per_class": 5}
    seven = evaluate(synthetic(600).take(np.arange(7)), rules, tmp_path, minimum)
    overall, per_class = seven["samples >= 30"], seven["samples per class >= 5"]
    assert not overall.passed and overall.value == 7 and overall.threshold == 30
    assert overall.message == "failed: review set too small (7 scored samples, the policy needs at least 30)"
    assert not per_class.passed and per_class.value == 1  # labels 0,1,2,3,0,1,2: 'tri' has one
    assert per_class.message.startswith("failed: review set too small (class 'tri' has 1 scored samples")
    assert overall.note == per_class.note == "failed: review set too small"
    assert list(seven)[:2] == ["samples >= 30", "samples per class >= 5"]  # before the policy's own rules
    big = evaluate(synthetic(600), rules, tmp_path, minimum)
    assert all(r.passed for r in big.values())


def test_min_samples_rejects_wrong_types(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "review_set": {"path": "."}, "rules": [{"score": "accuracy",
                                    "min": 0.5}], "min_samples": {"overall": "30"}}))
    with pytest.raises(policy_io.PolicyError, match="min_samples.overall"):
        policy_io.load(path)


# --- Wilson, and what a small set cannot settle ------------------------------------------------------------------


def test_share_rules_use_wilson_and_match_scipy(tmp_path: Path) -> None:
    records = synthetic(200)
    result = evaluate(records, [{"score": "accuracy", "min": 0.8, "confidence": 0.95}], tmp_path)
    rule = result["accuracy >= 0.8 @95%"]
    hits = int(records.correct.sum())
    # Each end one-sided at 95% = scipy's two-sided Wilson interval at 90%.
    ci = binomtest(hits, 200).proportion_ci(confidence_level=0.90, method="wilson")
    assert rule.interval == (pytest.approx(ci.low, abs=1e-12), pytest.approx(ci.high, abs=1e-12))


@pytest.mark.parametrize(("op", "threshold"), [(">=", 0.9), (">=", 0.99), ("<=", 0.01), ("<=", 0.2)])
def test_needed_trials_is_the_first_size_whose_best_outcome_passes(op: str, threshold: float) -> None:
    need = intervals.needed_trials(op, threshold, 0.95)
    assert need is not None

    def best_bound(n: int) -> float:
        best = stats.wilson_interval(n if op == ">=" else 0, n, confidence=0.95)
        return best.low if op == ">=" else best.high

    passes = (lambda b: b >= threshold) if op == ">=" else (lambda b: b <= threshold)
    assert passes(best_bound(need)) and (need == 1 or not passes(best_bound(need - 1)))


def test_a_rare_event_ceiling_cannot_pass_on_a_small_set(tmp_path: Path) -> None:
    records = synthetic(600)
    records = records.take(np.flatnonzero(records.correct)[:40])  # 40 right answers, no confident mistakes
    rule = evaluate(records, [{"score": "confident_wrong_rate@0.99", "max": 0.01, "confidence": 0.95}],
                    tmp_path)["confident_wrong_rate@0.99 <= 0.01 @95%"]
    assert rule.value == 0.0 and not rule.passed and rule.decidable is False
    assert rule.note == "review set too small: cannot pass at 95% with 40 samples (needs at least 268)"
    assert intervals.needed_trials(">=", 1.0, 0.95) is None  # a floor of 1.0 is never shown at 95%


def test_a_clear_failure_is_decided(tmp_path: Path) -> None:
    rule = evaluate(synthetic(600), [{"score": "alignment.lift", "min": 3.5, "confidence": 0.95}],
                    tmp_path)["alignment.lift >= 3.5 @95%"]
    assert not rule.passed and rule.decidable is True and rule.note == ""


def test_rules_without_confidence_have_no_interval_or_note(tmp_path: Path) -> None:
    rule = evaluate(synthetic(50), [{"score": "alignment.lift", "min": 2.0}], tmp_path)["alignment.lift >= 2"]
    assert rule.interval is None and rule.decidable is None and rule.note == ""


# --- the vectorised bootstrap ------------------------------------------------------------------------------------

VECTORISED = ["alignment.lift", "alignment.energy", "alignment.off_object_rate", "ece", "overconfidence_error",
              "mce", "balanced_accuracy", "worst_class_accuracy", "nll", "brier", "mean_confidence_wrong",
              "background.bg_gap", "background.only_bg_chance_adjusted", "sanity.randomization_similarity"]
RANKED = ["aurc", "selective_accuracy@0.8"]


@pytest.mark.parametrize("score", VECTORISED)
def test_vectorised_bootstrap_equals_the_registry_on_every_resample(score: str) -> None:
    records = synthetic(120, seed=3)
    form = intervals.form_of(records, score)
    assert isinstance(form, SumForm)
    fast = intervals.resampled_values(form, reps=150, seed=9)
    slow = [compute_scores(records.take(row), PROBES, only=(score,))[score]
            for chunk in stats.bootstrap_index_chunks(records.size, 150, 9) for row in chunk]
    np.testing.assert_allclose(fast, slow, rtol=1e-9, atol=1e-12)


def test_score_interval_is_seeded_and_reproducible() -> None:
    records = synthetic(300)
    first = intervals.score_interval(records, "ece", confidence=0.95, seed=4)
    again = intervals.score_interval(records, "ece", confidence=0.95, seed=4)
    other = intervals.score_interval(records, "ece", confidence=0.95, seed=5)
    assert first == again and first.method == "bootstrap"
    assert first.interval != other.interval


def test_chance_adjusted_only_bg_is_bootstrapped_on_its_form() -> None:
    records = synthetic(100)
    score = "background.only_bg_chance_adjusted"
    bounds = intervals.score_interval(records, score, confidence=0.9, reps=30)
    assert bounds.method == "bootstrap" and bounds.trials is None  # not a share of samples: no Wilson
    slow = [compute_scores(records.take(row), PROBES, only=(score,))[score]
            for chunk in stats.bootstrap_index_chunks(100, 30, 0) for row in chunk]
    low, high = np.quantile(slow, [0.1, 0.9])
    assert bounds.interval.low == pytest.approx(low, abs=1e-12)
    assert bounds.interval.high == pytest.approx(high, abs=1e-12)
    assert bounds.interval.low <= REGISTRY(records)[score] <= bounds.interval.high


# --- rank forms: aurc and selective accuracy ---------------------------------------------------------------------

def tiny(confidence: list[float], correct: list[bool]) -> Records:
    """One sample per confidence, right or wrong as given (labels 0; a wrong one predicts class 1)."""
    conf = np.asarray(confidence)
    preds = np.where(correct, 0, 1)
    probs = np.zeros((conf.size, 4))
    probs[np.arange(conf.size), preds] = conf
    probs[np.arange(conf.size), 3 - preds] = 1.0 - conf  # never the top label: confidences are > 0.5
    n = conf.size
    return Records(classes=CLASSES, ids=tuple(f"s{i}" for i in range(n)), labels=np.zeros(n, np.int64),
                   probs=probs.astype(np.float32), energy=np.full(n, np.nan), mask_area=np.full(n, 0.2),
                   pointing_hit=np.full(n, np.nan), rank_accuracy=np.full(n, np.nan))


def with_ties(records: Records, share: float, seed: int = 0) -> Records:
    """``records`` with a ``share`` of samples saturated: confidence exactly 1.0 on their prediction."""
    rng = np.random.default_rng(seed)
    saturated = rng.random(records.size) < share
    probs = records.probs.copy()
    probs[saturated] = 0.0
    probs[saturated, records.preds[saturated]] = 1.0
    return replace(records, probs=probs)


@pytest.mark.parametrize(
    ("confidence", "correct", "counts", "expected"),
    [
        # counts [2, 0, 1], sorted s0 s0 s2, errors 1 1 0: risks 1, 2/2, 2/3; keep round(2.4) = 2 -> 0/2.
        ([0.9, 0.6, 0.8], [False, True, True], [2, 0, 1], {"aurc": (1 + 1 + 2 / 3) / 3,
                                                            "selective_accuracy@0.8": 0.0}),
        # counts [1, 0, 2], sorted s0 s2 s2 s1..., errors 1 0 0: risks 1, 1/2, 1/3; keep 2 = s0 + one s2 -> 1/2.
        ([0.9, 0.6, 0.8], [False, True, True], [1, 0, 2], {"aurc": (1 + 1 / 2 + 1 / 3) / 3,
                                                            "selective_accuracy@0.8": 1 / 2}),
        # Tied at 1.0: index order, s0 (right) before s1 (wrong): errors 0 1 1: risks 0, 1/2, 2/3; keep s0 s1.
        ([1.0, 1.0, 0.7], [True, False, True], [1, 2, 0], {"aurc": (0 + 1 / 2 + 2 / 3) / 3,
                                                           "selective_accuracy@0.8": 1 / 2}),
        # Full set, counts 1: errors (by confidence) 0 1 0: risks 0, 1/2, 1/3; keep 2 -> 1/2.
        ([0.9, 0.95, 0.7], [False, True, True], [1, 1, 1], {"aurc": (0 + 1 / 2 + 1 / 3) / 3,
                                                            "selective_accuracy@0.8": 1 / 2}),
    ],
    ids=["2-0-1", "1-0-2-partial-boundary", "tie-at-1.0", "full-set"],
)
@pytest.mark.parametrize("score", RANKED)
def test_rank_forms_on_hand_computed_resamples(confidence: list[float], correct: list[bool], counts: list[int],
                                               expected: dict[str, float], score: str) -> None:
    records = tiny(confidence, correct)
    form = intervals.form_of(records, score)
    assert isinstance(form, RankForm)
    value = form.finish(np.asarray([counts], dtype=np.float64)[:, form.order])[0]
    assert value == pytest.approx(expected[score], abs=1e-12)
    # The score function on the same resample, its indices sorted, says the same.
    index = np.repeat(np.arange(len(counts)), counts)
    assert compute_scores(records.take(index), only=(score,))[score] == pytest.approx(expected[score], abs=1e-12)


@pytest.mark.parametrize("ties", [0.0, 0.3], ids=["no-ties", "30%-at-1.0"])
@pytest.mark.parametrize("score", RANKED)
def test_rank_forms_equal_the_registry_on_every_sorted_resample(score: str, ties: float) -> None:
    records = with_ties(synthetic(2000, seed=5), ties)
    assert (np.count_nonzero(records.confidence == 1.0) > 500) == (ties > 0)
    form = intervals.form_of(records, score)
    assert isinstance(form, RankForm) and form.value() == pytest.approx(REGISTRY(records)[score], abs=1e-12)
    fast = intervals.ranked_values(form, reps=200, seed=11)
    slow = [compute_scores(records.take(np.sort(row)), PROBES, only=(score,))[score]
            for chunk in stats.bootstrap_index_chunks(records.size, 200, 11) for row in chunk]
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12)


@pytest.mark.parametrize("score", RANKED)
def test_rank_form_intervals_are_the_quantiles_of_the_registry_per_resample(score: str) -> None:
    records = with_ties(synthetic(300), 0.2)
    bounds = intervals.score_interval(records, score, confidence=0.9, reps=50)
    assert bounds.method == "bootstrap" and bounds.trials is None
    slow = [compute_scores(records.take(np.sort(row)), PROBES, only=(score,))[score]
            for chunk in stats.bootstrap_index_chunks(records.size, 50, 0) for row in chunk]
    low, high = np.quantile(slow, [0.1, 0.9])
    assert bounds.interval.low == pytest.approx(low, abs=1e-12)
    assert bounds.interval.high == pytest.approx(high, abs=1e-12)


def test_console_line_shows_the_bound_and_the_note(tmp_path: Path) -> None:
    from gate.outputs.summary import _rule_line

    small = synthetic(600).take(np.arange(20))
    rules = evaluate(small, [{"score": "ece", "max": 0.15, "confidence": 0.95}], tmp_path, {"overall": 30})
    undecided, too_small = rules["ece <= 0.15 @95%"], rules["samples >= 30"]
    assert undecided.interval is not None
    assert (round(undecided.value, 4), round(undecided.interval[1], 4)) == (0.099, 0.2225)
    # The deciding bound in the score's unit, and "undecided" (the interval holds 0.15): the note's meaning in words.
    assert _rule_line(undecided) == ("  FAIL  ece <= 0.15 @95%: 9.9% ≤ 15%, but the 95% upper bound is 22.2%: "
                                     "undecided; more samples would settle it")
    assert _rule_line(too_small) == "  FAIL  samples >= 30: 20 < 30: failed  (failed: review set too small)"


def test_two_gate_runs_give_identical_numbers(small_set: ReviewSet, untrained_checkpoint: Path,
                                              tmp_path: Path) -> None:
    """Pairings, sanity copies and bootstraps are seeded: the same inputs give the same result, bit for bit."""
    from gate.engine import core as engine
    from gate.run import GateRequest, run_gate
    from tests.conftest import pinned_policy

    rules = [{"score": "alignment.lift", "min": 0.5, "confidence": 0.95},
             {"score": "ece", "max": 0.5, "confidence": 0.9},
             {"score": "background.bg_gap", "max": 0.5, "confidence": 0.95},
             {"score": "sanity.randomization_similarity", "max": 0.9, "confidence": 0.95}]
    policy = pinned_policy(tmp_path, small_set, rules, probes=("background", "sanity"))
    request = GateRequest(command="check", candidates=(untrained_checkpoint,), policy=policy,
                          engine=engine.EngineOptions(probes=frozenset(), seed=3, batch_size=16))
    first, second = run_gate(request), run_gate(request)
    a, b = first.candidates[0], second.candidates[0]
    assert a.rules == b.rules and all(r.interval is not None for r in a.rules)
    assert a.scores.keys() == b.scores.keys()
    assert all(a.scores[k] == b.scores[k] or (math.isnan(a.scores[k]) and math.isnan(b.scores[k]))
               for k in a.scores)
    for variant, pairs in a.records.pairings.items():
        np.testing.assert_array_equal(pairs, b.records.pairings[variant])
    np.testing.assert_array_equal(a.records.sanity_similarity, b.records.sanity_similarity)
    assert first.environment["seed"] == "3"


@pytest.mark.parametrize("name", ["strict", "release"])
def test_shipped_gating_policies_bound_every_threshold_and_set_min_samples(name: str) -> None:
    from tests.conftest import REPO

    model = policy_io.load(REPO / "policies" / f"{name}.yaml").model
    thresholds = [r for r in model.rules if r.vs_baseline is None]
    assert thresholds and all(r.confidence == 0.95 for r in thresholds)
    assert model.min_samples is not None
    assert (model.min_samples.overall, model.min_samples.per_class) == (300, 30)
    # 300 samples are enough for the strictest share rule to be passable at all (Wilson, best outcome).
    ceiling = next(r for r in thresholds if r.score == "confident_wrong_rate@0.99")
    assert ceiling.max is not None
    need = intervals.needed_trials("<=", ceiling.max, 0.95)
    assert need is not None and need <= model.min_samples.overall


def test_report_row_shows_the_interval_and_the_note(tmp_path: Path) -> None:
    from gate.outputs.report.context import rule_row

    small = synthetic(600).take(np.arange(20))
    rule = evaluate(small, [{"score": "alignment.lift", "min": 2.25, "confidence": 0.95}],
                    tmp_path)["alignment.lift >= 2.25 @95%"]
    row = rule_row(rule)
    assert rule.interval is not None and row.interval == f"[{rule.interval[0]:.4g}, {rule.interval[1]:.4g}]"
    assert rule.note and row.message.endswith(rule.note)

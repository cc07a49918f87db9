"""Policies: validation errors that name file, rule and field; rule evaluation; select's ranking."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import yaml

from gate.decide import policy as policy_mod
from gate.decide.policy import Evidence, Policy, check_classes, evaluate, rank_key
from gate.decide.stats import wilson_interval
from gate.errors import PolicyError, UsageError
from gate.inputs.review_set import digest_of
from gate.metrics.registry import compute_scores
from gate.records import Records

REPO = Path(__file__).resolve().parents[1]
CLASSES = ("circle", "square")


def write_policy(tmp_path: Path, rules: list[dict[str, object]], **top: object) -> Path:
    doc: dict[str, object] = {"name": "t", "review_set": {"path": "sets/x", "digest": "sha256:" + "a" * 64}}
    doc.update(top)
    doc["rules"] = rules
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def load_rules(tmp_path: Path, rules: list[dict[str, object]], **top: object) -> Policy:
    return policy_mod.load(write_policy(tmp_path, rules, **top))


def policy_error(tmp_path: Path, rules: list[dict[str, object]], **top: object) -> PolicyError:
    path = write_policy(tmp_path, rules, **top)
    with pytest.raises(PolicyError) as info:
        policy_mod.load(path)
    assert info.value.path == str(path)
    assert info.value.exit_code == 2
    return info.value


@pytest.mark.parametrize("name", ["strict", "default", "lenient", "release", "no-masks"])
def test_shipped_policies_load(name: str) -> None:
    path = REPO / "policies" / f"{name}.yaml"
    loaded = policy_mod.load(path)
    assert loaded.name == name
    assert loaded.review_set_path.resolve() == (REPO / "review_sets" / "shapes-v1").resolve()
    assert loaded.needs_baseline is (name == "release")
    assert len(loaded.model.rules) >= 3
    if name == "no-masks":  # every score it names needs no mask
        assert not [r.score for r in loaded.model.rules if r.score.split(".")[0] in ("alignment", "background",
                                                                                       "atlas")]
        assert {"border", "corners", "lighting"} <= loaded.probes and "background" not in loaded.probes


def test_release_is_strict_plus_non_inferiority() -> None:
    strict = policy_mod.load(REPO / "policies" / "strict.yaml").model
    release = policy_mod.load(REPO / "policies" / "release.yaml").model
    extra = release.rules[len(strict.rules):]
    assert release.rules[: len(strict.rules)] == strict.rules
    assert [(r.score, r.vs_baseline.max_drop if r.vs_baseline else None) for r in extra] == [
        ("accuracy", 0.01), ("overconfidence_error", 0.01)]
    assert (release.probes, release.select, release.explain) == (strict.probes, strict.select, strict.explain)


@pytest.mark.parametrize("name", ["strict", "default", "lenient", "release", "no-masks"])
def test_shipped_policies_pin_the_shipped_review_set(name: str) -> None:
    loaded = policy_mod.load(REPO / "policies" / f"{name}.yaml")
    assert loaded.model.review_set.digest == digest_of(loaded.review_set_path)


def test_relative_review_set_path_resolves_against_the_policy_folder(tmp_path: Path) -> None:
    loaded = load_rules(tmp_path, [{"score": "accuracy", "min": 0.5}])
    assert loaded.review_set_path == tmp_path / "sets" / "x"
    assert loaded.probes == frozenset()
    assert loaded.model.select.rank_by == ["accuracy"]


def test_unknown_score_names_rule_and_field(tmp_path: Path) -> None:
    error = policy_error(tmp_path, [{"score": "accuracy", "min": 0.5}, {"score": "acuracy", "min": 0.9}])
    assert "rules[1].score" in error.one_line()
    assert "'acuracy'" in error.message
    assert str(tmp_path / "policy.yaml") in error.one_line()


def test_wrong_type_names_the_field(tmp_path: Path) -> None:
    error = policy_error(tmp_path, [{"score": "accuracy", "min": "high"}])
    assert error.message.startswith("rules[0].min:")
    assert "valid number" in error.message


@pytest.mark.parametrize(
    ("rule", "where"),
    [
        ({"score": "accuracy", "min": True}, "rules[0].min"),  # YAML `yes`/`true` is not 1.0
        ({"score": "ece", "max": "0.05"}, "rules[0].max"),  # a quoted number is a string
        ({"score": "accuracy", "vs_baseline": {"max_drop": "0.01"}}, "rules[0].vs_baseline.max_drop"),
    ],
    ids=["bool", "quoted", "baseline-quoted"],
)
def test_no_silent_coercion_of_thresholds(tmp_path: Path, rule: dict[str, object], where: str) -> None:
    assert policy_error(tmp_path, [rule]).message.startswith(f"{where}:")


def test_integer_thresholds_are_numbers(tmp_path: Path) -> None:
    loaded = load_rules(tmp_path, [{"score": "accuracy", "min": 1}, {"score": "alignment.lift", "min": 2}])
    assert [rule.min for rule in loaded.model.rules] == [1.0, 2.0]


@pytest.mark.parametrize(
    ("rules", "top", "where"),
    [
        ([{"score": "accuracy", "min": 0.5, "treshold": 1}], {}, "rules[0].treshold"),
        ([{"score": "accuracy", "min": 0.5}], {"reviewset": "x"}, "reviewset"),
        ([{"score": "accuracy", "min": 0.5}], {"explain": {"method": "lime"}}, "explain.method"),
    ],
    ids=["rule-key", "top-key", "explain-method"],
)
def test_unknown_keys_and_values_are_errors(
    tmp_path: Path, rules: list[dict[str, object]], top: dict[str, object], where: str
) -> None:
    assert policy_error(tmp_path, rules, **top).message.startswith(f"{where}:")


def test_background_score_needs_the_probe(tmp_path: Path) -> None:
    rules: list[dict[str, object]] = [{"score": "accuracy", "min": 0.5},
                                      {"score": "background.flip_rate", "max": 0.2}]
    error = policy_error(tmp_path, rules)
    assert "rules[1]" in error.message and "probes: [background]" in error.message
    assert load_rules(tmp_path, rules, probes=["background"]).probes == frozenset({"background"})


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ({"score": "accuracy", "vs_baseline": {"max_drop": 0.01, "min_gain": 0.0}}, "exactly one of max_drop"),
        ({"score": "accuracy", "vs_baseline": {}}, "exactly one of max_drop"),
        ({"score": "accuracy", "min": 0.5, "max": 0.9}, "exactly one of min, max or vs_baseline"),
        ({"score": "accuracy"}, "exactly one of min, max or vs_baseline"),
        ({"score": "accuracy", "min": 0.5, "confidence": 0.4}, "rules[0].confidence"),
        ({"score": "accuracy", "vs_baseline": {"max_drop": 0.01}, "confidence": 0.9}, "inside vs_baseline"),
        ({"score": "delta.accuracy", "min": 0.0}, "unknown score"),
    ],
    ids=["both-kinds", "no-kind", "min-and-max", "no-test", "low-confidence", "outer-confidence", "delta"],
)
def test_rule_shape_errors(tmp_path: Path, rule: dict[str, object], words: str) -> None:
    error = policy_error(tmp_path, [rule])
    assert words in error.message
    assert error.message.startswith("rules[0]")


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("rules: [\n")
    with pytest.raises(PolicyError, match="not valid YAML at line"):
        policy_mod.load(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(PolicyError, match="mapping"):
        policy_mod.load(path)
    with pytest.raises(PolicyError, match="cannot read"):
        policy_mod.load(tmp_path / "missing.yaml")


def test_check_classes_names_the_rule(tmp_path: Path) -> None:
    loaded = load_rules(tmp_path, [{"score": "class_accuracy.circle", "min": 0.5},
                                   {"score": "class_accuracy.star", "min": 0.5}])
    with pytest.raises(PolicyError) as info:
        check_classes(loaded, CLASSES)
    assert info.value.field == "rules[1].score"
    assert "'star'" in info.value.message
    check_classes(loaded, ("circle", "square", "star"))  # passes: every named class exists


def records(n_correct: int, n: int) -> Records:
    """``n`` samples of two classes, the first ``n_correct`` predicted right at confidence 0.8."""
    labels = np.arange(n) % 2
    preds = np.where(np.arange(n) < n_correct, labels, 1 - labels)
    probs = np.full((n, 2), 0.2, dtype=np.float32)
    probs[np.arange(n), preds] = 0.8
    nan = np.full(n, np.nan)
    return Records(classes=CLASSES, ids=tuple(f"s{i}" for i in range(n)), labels=labels.astype(np.int64),
                   probs=probs, energy=nan, mask_area=np.full(n, 0.25), pointing_hit=nan, rank_accuracy=nan)


def evidence(recs: Records, scores: dict[str, float] | None = None, baseline: Records | None = None) -> Evidence:
    score_fn = partial(compute_scores, probes=frozenset())
    return Evidence(scores=scores if scores is not None else score_fn(recs), records=recs, score_fn=score_fn,
                    baseline=baseline)


@pytest.mark.parametrize(
    ("rule", "value", "passed"),
    [
        ({"score": "accuracy", "min": 0.9}, 0.9, True),
        ({"score": "accuracy", "min": 0.9}, 0.8999, False),
        ({"score": "ece", "max": 0.05}, 0.05, True),
        ({"score": "ece", "max": 0.05}, 0.0501, False),
    ],
    ids=["min-at-boundary", "min-below", "max-at-boundary", "max-above"],
)
def test_min_max_at_the_boundary(tmp_path: Path, rule: dict[str, object], value: float, passed: bool) -> None:
    loaded = load_rules(tmp_path, [rule])
    (result,) = evaluate(loaded, evidence(records(9, 10), {str(rule["score"]): value}))
    assert result.passed is passed
    assert result.value == value
    assert result.op == (">=" if "min" in rule else "<=")
    assert result.threshold == rule.get("min", rule.get("max"))
    assert ("meets" if passed else "fails") in result.message


def test_nan_value_fails_with_a_message(tmp_path: Path) -> None:
    loaded = load_rules(tmp_path, [{"score": "alignment.lift", "min": 1.0}, {"score": "ece", "max": 0.1}])
    lift, ece = evaluate(loaded, evidence(records(9, 10), {"alignment.lift": math.nan, "ece": 0.01}))
    assert lift.passed is False and lift.value is None
    assert "could not be computed" in lift.message
    assert ece.passed is True  # one NaN does not spoil the other rules


def test_a_missing_score_fails_like_nan(tmp_path: Path) -> None:
    loaded = load_rules(tmp_path, [{"score": "accuracy", "min": 0.5}])
    (result,) = evaluate(loaded, evidence(records(9, 10), {}))
    assert not result.passed and result.value is None


def test_confidence_rule_tests_the_wilson_bound(tmp_path: Path) -> None:
    recs = records(28, 30)
    point = load_rules(tmp_path, [{"score": "accuracy", "min": 0.9}])
    (plain,) = evaluate(point, evidence(recs))
    assert plain.value == pytest.approx(28 / 30)
    assert plain.passed  # 0.933 >= 0.9

    bounded = load_rules(tmp_path, [{"score": "accuracy", "min": 0.9, "confidence": 0.95}])
    (result,) = evaluate(bounded, evidence(recs))
    # One-sided 95% Wilson lower bound of 28/30: z = 1.6449, centre 0.89749, half-width 0.08020.
    assert result.interval is not None
    assert result.interval[0] == pytest.approx(0.81728, abs=1e-5)
    assert result.interval == pytest.approx((wilson_interval(28, 30, 0.95).low, wilson_interval(28, 30, 0.95).high))
    assert result.value == pytest.approx(28 / 30)
    assert not result.passed
    assert "bound 0.8" in result.message and "@95%" in result.rule_id


def test_confidence_rule_on_a_lower_is_better_proportion_uses_the_upper_bound(tmp_path: Path) -> None:
    # 0 confidently wrong of 30: point 0.0 passes max 0.05; the upper bound z²/(n+z²) = 0.0827 does not.
    loaded = load_rules(tmp_path, [{"score": "confident_wrong_rate@0.9", "max": 0.05, "confidence": 0.95}])
    (result,) = evaluate(loaded, evidence(records(30, 30)))
    assert result.value == 0.0
    assert result.interval is not None
    assert result.interval[1] == pytest.approx(1.6448536**2 / (30 + 1.6448536**2), abs=1e-6)
    assert not result.passed


def test_vs_baseline_without_a_baseline_is_a_usage_error(tmp_path: Path) -> None:
    loaded = load_rules(tmp_path, [{"score": "accuracy", "vs_baseline": {"max_drop": 0.01}}])
    assert loaded.needs_baseline
    with pytest.raises(UsageError) as info:
        evaluate(loaded, evidence(records(9, 10)))
    assert info.value.exit_code == 2
    assert "--baseline" in info.value.message


def test_vs_baseline_against_itself(tmp_path: Path) -> None:
    recs = records(18, 20)
    loaded = load_rules(tmp_path, [{"score": "accuracy", "vs_baseline": {"max_drop": 0.01}},
                                   {"score": "accuracy", "vs_baseline": {"min_gain": 0.0}}])
    non_inferior, superior = evaluate(loaded, evidence(recs, baseline=recs))
    assert non_inferior.op == "non_inferior" and non_inferior.passed and non_inferior.value == 0.0
    assert non_inferior.interval == (0.0, 0.0)
    assert superior.op == "superior" and not superior.passed


@pytest.mark.parametrize(("worse_by", "passed"), [(18, False), (3, True)], ids=["3-points", "half-a-point"])
def test_max_drop_rule_on_600_samples(tmp_path: Path, worse_by: int, passed: bool) -> None:
    # The baseline is right on the first 540 of 600; the candidate loses the last `worse_by` of those.
    baseline, cand = records(540, 600), records(540 - worse_by, 600)
    loaded = load_rules(tmp_path, [{"score": "accuracy", "vs_baseline": {"max_drop": 0.01, "confidence": 0.95}}])
    (result,) = evaluate(loaded, evidence(cand, baseline=baseline))
    assert result.value == pytest.approx(-worse_by / 600)
    assert result.interval is not None and result.interval[1] <= 0.0
    assert result.passed is passed
    assert (result.interval[0] >= -0.01) is passed


@pytest.mark.parametrize(
    ("candidates", "rank_by", "order"),
    [
        ({"b": {"accuracy": 0.9}, "a": {"accuracy": 0.8}, "c": {"accuracy": 0.95}}, ["accuracy"], "cba"),
        ({"b": {"ece": 0.05}, "a": {"ece": 0.02}, "c": {"ece": 0.10}}, ["ece"], "abc"),  # lower is better
        ({"b": {"accuracy": 0.9}, "a": {"accuracy": 0.9}, "c": {"accuracy": 0.9}}, ["accuracy"], "abc"),  # by name
        ({"x": {"accuracy": math.nan}, "y": {"accuracy": 0.1}, "z": {}}, ["accuracy"], "yxz"),  # NaN/missing last
        ({"b": {"accuracy": 0.9, "ece": 0.08}, "a": {"accuracy": 0.9, "ece": 0.09},
          "c": {"accuracy": 0.8, "ece": 0.01}}, ["accuracy", "ece"], "bac"),  # tie on the first, then the next
    ],
    ids=["higher", "lower", "name-tiebreak", "nan-last", "second-key"],
)
def test_rank_key_orders_candidates(candidates: dict[str, dict[str, float]], rank_by: list[str], order: str) -> None:
    ranked = sorted(candidates, key=lambda name: rank_key(candidates[name], rank_by, name))
    assert "".join(ranked) == order


def test_rank_by_accepts_a_single_name_and_refuses_unknown(tmp_path: Path) -> None:
    loaded = load_rules(tmp_path, [{"score": "accuracy", "min": 0.5}], select={"rank_by": "ece"})
    assert loaded.model.select.rank_by == ["ece"]
    error = policy_error(tmp_path, [{"score": "accuracy", "min": 0.5}], select={"rank_by": ["acc"]})
    assert error.message.startswith("select.rank_by")


def _wilson_low(successes: int, n: int, z: float = 1.6448536269514722) -> float:
    # Written out here, independent of gate.decide.stats: the one-sided 95% Wilson lower bound.
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half


def test_class_accuracy_bound_counts_only_that_class(tmp_path: Path) -> None:
    # records(28, 30): circle has the 15 even samples, 14 right (sample 28 is wrong); not 28 of 30.
    loaded = load_rules(tmp_path, [{"score": "class_accuracy.circle", "min": 0.5, "confidence": 0.95}])
    (result,) = evaluate(loaded, evidence(records(28, 30)))
    assert result.value == pytest.approx(14 / 15)
    assert result.interval is not None
    assert result.interval[0] == pytest.approx(_wilson_low(14, 15), abs=1e-9)
    assert result.interval[0] != pytest.approx(_wilson_low(28, 30), abs=1e-3)


def test_bootstrap_bounds_are_one_sided_at_the_rule_confidence(tmp_path: Path) -> None:
    from gate.decide.stats import bootstrap_index_chunks

    recs = records(24, 30)
    loaded = load_rules(tmp_path, [{"score": "nll", "max": 1.0, "confidence": 0.9}])
    (result,) = evaluate(loaded, evidence(recs))
    # nll per sample: -log 0.8 when right, -log 0.2 when wrong; the resamples are the bootstrap's own.
    per_sample = np.where(np.arange(30) < 24, -math.log(0.8), -math.log(0.2))
    means = [per_sample[row].mean() for chunk in bootstrap_index_chunks(30, 2000, 0) for row in chunk]
    one_sided = np.quantile(means, [0.1, 0.9])
    assert result.interval is not None
    assert result.interval == pytest.approx(tuple(one_sided), abs=1e-6)
    assert result.interval[1] < np.quantile(means, 0.95) - 1e-6  # not the two-sided 90% interval's end


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ({"score": "accuracy", "min": -5}, "rules[0].min: -5 is outside the range of accuracy [0, 1]"),
        ({"score": "ece", "max": 7}, "rules[0].max: 7 is outside the range of ece [0, 1]"),
        ({"score": "brier", "max": 2.5}, "outside the range of brier [0, 2]"),
        ({"score": "background.bg_gap", "max": -1.5}, "outside the range of background.bg_gap [-1, 1]"),
        ({"score": "alignment.lift", "min": -0.1}, "outside the range of alignment.lift [0, inf]"),
        ({"score": "accuracy", "min": float("nan")}, "rules[0].min: nan is not a finite number"),
        ({"score": "nll", "max": float("inf")}, "rules[0].max: inf is not a finite number"),
        ({"score": "accuracy", "vs_baseline": {"max_drop": 1.5}}, "wider than the range of accuracy"),
        ({"score": "accuracy", "vs_baseline": {"min_gain": float("nan")}}, "finite number"),
    ],
    ids=["accuracy-below-0", "ece-above-1", "brier-above-2", "gap-below-minus-1", "lift-negative", "nan", "inf",
         "max-drop-too-wide", "min-gain-nan"],
)
def test_thresholds_outside_the_score_range_are_refused(tmp_path: Path, rule: dict[str, object], words: str) -> None:
    assert words in policy_error(tmp_path, [rule]).message


def test_thresholds_at_the_ends_of_the_range_are_fine(tmp_path: Path) -> None:
    rules: list[dict[str, object]] = [{"score": "accuracy", "min": 0}, {"score": "accuracy", "max": 1},
                                      {"score": "brier", "max": 2}, {"score": "alignment.lift", "min": 40}]
    assert len(load_rules(tmp_path, rules).model.rules) == 4


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("name: a\nname: b\n", "name: duplicate key 'name' (first at line 1) at line 2"),
        ("name: a\nreview_set: {path: x}\nrules:\n  - {score: accuracy, min: 0.9, min: 0.1}\n",
         "rules[0].min: duplicate key 'min'"),
        ("name: &n a\nx: *n\n", "anchors (&n) are not allowed"),
        ("rules: [{<<: {score: accuracy}, min: 0.1}]\n", "merge keys (<<) are not allowed"),
        ("a: " + "[" * 40 + "]" * 40 + "\n", "nested deeper than 32 levels"),
    ],
    ids=["duplicate-top", "duplicate-in-rule", "alias", "merge", "deep"],
)
def test_policy_yaml_is_strict(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError) as info:
        policy_mod.load(path)
    assert words in info.value.one_line() and str(path) in info.value.one_line()


def test_policy_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("description: '" + "x" * policy_mod.MAX_POLICY_BYTES + "'\n")
    with pytest.raises(PolicyError, match="larger than 256 KiB") as info:
        policy_mod.load(path)
    assert info.value.field == "size"


def test_allow_modules_in_the_policy(tmp_path: Path) -> None:
    loaded = load_rules(tmp_path, [{"score": "accuracy", "min": 0.5}], candidate={"allow_modules": ["mylab.models"]})
    assert loaded.model.candidate.allow_modules == ["mylab.models"]
    error = policy_error(tmp_path, [{"score": "accuracy", "min": 0.5}], candidate={"allow_modules": ["a b"]})
    assert error.message.startswith("candidate.allow_modules")


def test_every_score_declares_its_range() -> None:
    # A threshold is checked against its score's range: a new score must say what values it takes.
    from gate.metrics.registry import all_specs

    undeclared = [s.name for s in all_specs() if not s.proportion and s.bounds is None]
    assert undeclared == [], "give these specs bounds= (gate/metrics/<family>.py)"
    assert all(low < high for low, high in (s.range for s in all_specs()))

"""A score is one object: every registered spec's form reproduces its point value and its resamples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gate.decide import intervals, stats
from gate.metrics.registry import HISTORY_SCORES, all_specs, compute_scores, get_spec, spec_of, value_of
from gate.metrics.spec import RankForm, ScoreSpec, SumForm
from gate.outputs.report import plots
from gate.records import Records
from gate.tracking.rows import KEY_SCORES

CLASSES = ("circle", "square", "star", "tri", "hex")  # "hex" has no sample
PROBES = frozenset({"background", "sanity", "border", "corners", "lighting"})


def every_case(n: int = 97, seed: int = 0) -> Records:
    """Records that reach every branch: NaN alignment values, samples without a mask, a class without
    samples, confidences tied at 1.0 (some of them wrong) and at float32(0.9), NaN sanity entries over three
    copies."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    conf = rng.uniform(0.3, 0.999, size=n)
    conf[::9] = 1.0
    conf[::13] = np.float32(0.9)
    preds = np.where(rng.random(n) < conf, labels, (labels + 1) % 4)
    preds[::18] = (labels[::18] + 1) % 4  # wrong at confidence 1.0
    probs = np.tile(((1 - conf) / 4)[:, None], (1, 5))
    probs[np.arange(n), preds] = conf
    energy = np.where(rng.random(n) < 0.15, np.nan, rng.random(n))
    area = np.where(rng.random(n) < 0.05, np.nan, np.full(n, 0.25))
    included = ~np.isnan(energy)
    variants = {v: np.where(rng.random(n) < p, labels, (labels + 2) % 4)
                for v, p in (("only_fg", 0.6), ("only_bg", 0.3), ("mixed_same", 0.9), ("mixed_rand", 0.8),
                             ("border", 0.9), ("corners", 0.7), ("lighting", 0.5))}
    variants["corners"][::11] = -1  # an answer outside the review set
    sanity = np.where(rng.random((n, 3)) < 0.1, np.nan, rng.normal(0.1, 0.3, size=(n, 3)))
    return Records(classes=CLASSES, ids=tuple(f"s{i}" for i in range(n)), labels=labels.astype(np.int64),
                   probs=probs.astype(np.float32), energy=energy, mask_area=area,
                   pointing_hit=np.where(included, (rng.random(n) < 0.6).astype(np.float64), np.nan),
                   rank_accuracy=np.where(included, rng.random(n), np.nan), probe_preds=variants,
                   sanity_similarity=sanity, has_mask=rng.random(n) < 0.85)


RECORDS = every_case()
POINT = compute_scores(RECORDS, PROBES)
NAMES = sorted(POINT)


def test_every_spec_has_concrete_names_here() -> None:
    covered = {spec_of(name).name for name in NAMES}
    assert covered == {spec.name for spec in all_specs()}


def _full_set_value(form: SumForm | RankForm) -> float:
    if isinstance(form, SumForm):
        return float(form.finish(form.features.sum(axis=0)[None, :])[0])
    return float(form.finish(np.ones((1, form.order.size)))[0])


@pytest.mark.parametrize("name", NAMES)
def test_the_features_with_every_sample_counted_once_give_the_point_value(name: str) -> None:
    form = spec_of(name).form_of(RECORDS, name)
    assert _full_set_value(form) == pytest.approx(POINT[name], rel=1e-12, abs=1e-12, nan_ok=True)
    assert form.value() == POINT[name] or (math.isnan(form.value()) and math.isnan(POINT[name]))


def _resampled(form: SumForm | RankForm, counts: np.ndarray) -> np.ndarray:
    if isinstance(form, SumForm):
        return form.finish(counts @ form.features)
    return form.finish(counts[:, form.order])


@pytest.mark.parametrize("name", NAMES)
def test_a_resample_is_the_score_of_the_resampled_records(name: str) -> None:
    form = spec_of(name).form_of(RECORDS, name)
    rows = next(stats.bootstrap_index_chunks(RECORDS.size, 6, seed=5))
    counts = np.stack([np.bincount(row, minlength=RECORDS.size) for row in rows]).astype(np.float64)
    fast = _resampled(form, counts)
    # Equal confidences fall in sample order, so the rank forms see the resample with its indices sorted.
    slow = [compute_scores(RECORDS.take(np.sort(row)), PROBES, only=(name,))[name] for row in rows]
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)


def test_the_registry_is_built_once_and_reads_no_name_patterns() -> None:
    assert all_specs() is all_specs()
    family = get_spec("class_accuracy.<class>")
    assert get_spec("class_accuracy.star") is get_spec("delta.class_accuracy.star") is family
    assert get_spec("class_accuracy.") is None and get_spec("confident_wrong_rate@0.5") is None


def test_key_scores_are_the_specs_that_say_so_in_registry_order() -> None:
    assert KEY_SCORES == HISTORY_SCORES == (
        "accuracy", "ece", "overconfidence_error", "confident_wrong_rate@0.99", "alignment.lift",
        "alignment.pointing_game", "background.only_bg_accuracy", "background.bg_gap")


@pytest.mark.parametrize(
    ("name", "anchor"),
    [("accuracy", "gallery-failures"), ("class_accuracy.star", "plot-class_accuracy"),
     ("worst_class_accuracy", "plot-class_accuracy"), ("selective_accuracy@0.8", "plot-reliability"),
     ("nll", "plot-reliability"), ("confident_wrong_rate@0.9", "plot-wrong_by_threshold"),
     ("alignment.lift.class.star", "galleries"), ("background.bg_gap", "showroom"),
     ("sanity.randomization_similarity", None)],
)
def test_each_spec_names_where_the_report_shows_its_evidence(name: str, anchor: str | None) -> None:
    spec = get_spec(name)
    assert spec is not None
    assert (None if spec.evidence is None else spec.evidence.anchor) == anchor


def test_a_spec_family_names_its_members() -> None:
    spec = ScoreSpec("alignment.lift.class.<class>", True, "", "alignment", lambda r, c: None)
    assert spec.member("alignment.lift.class.a.b") == "a.b"
    assert spec.member("alignment.lift.class.") is None and spec.member("alignment.lift") is None
    assert spec.range == (-math.inf, math.inf)


# --- the float32 boundary: one answer in the score, the plot and the interval -----------------------------------


def boundary_records() -> Records:
    """Ten samples: nine right at 0.95, one wrong at exactly float32(0.9) (just below the float64 0.9)."""
    n = 10
    labels = np.zeros(n, dtype=np.int64)
    conf = np.full(n, 0.95, dtype=np.float32)
    conf[3] = np.float32(0.9)
    probs = np.zeros((n, 2), dtype=np.float32)
    probs[:, 0], probs[:, 1] = conf, 1 - conf
    probs[3] = [1 - conf[3], conf[3]]  # the wrong answer: class 1 at float32(0.9)
    nan = np.full(n, np.nan)
    return Records(classes=("a", "b"), ids=tuple(f"s{i}" for i in range(n)), labels=labels, probs=probs,
                   energy=nan, mask_area=nan, pointing_hit=nan, rank_accuracy=nan)


def test_float32_boundary_gives_one_answer_in_score_plot_and_interval() -> None:
    records = boundary_records()
    assert records.confidence[3] < 0.9  # float32(0.9) widened: 0.8999999762
    score = value_of("confident_wrong_rate@0.9", records)
    assert score == 0.1
    curve = plots.wrong_rate_by_threshold(records.confidence, records.correct, np.array([0.9]))
    assert curve.tolist() == [0.1]
    bounds = intervals.score_interval(records, "confident_wrong_rate@0.9", confidence=0.95)
    assert bounds.method == "wilson" and bounds.trials == 10
    assert bounds.interval == stats.wilson_interval(1, 10, confidence=0.95)
    form = intervals.form_of(records, "confident_wrong_rate@0.9")
    assert isinstance(form, SumForm)
    resampled = intervals.resampled_values(form, reps=50, seed=1)
    drawn = [row for chunk in stats.bootstrap_index_chunks(10, 50, 1) for row in chunk]
    assert resampled.tolist() == [float(np.mean(row == 3)) for row in drawn]  # sample 3 counts wherever drawn

"""Classification, calibration and alignment scores, and the score registry.

References: torchmetrics' CalibrationError for ECE/MCE, hand-computed values for everything else.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics import CalibrationError

from gate.metrics.registry import all_specs, compute_scores, get_spec, known_names, value_of
from gate.records import Records

CLASSES = ("a", "b", "c")


def make_records(
    probs: list[list[float]] | np.ndarray,
    labels: list[int] | np.ndarray,
    *,
    classes: tuple[str, ...] | None = None,
    energy: list[float] | None = None,
    mask_area: list[float] | None = None,
    pointing_hit: list[float] | None = None,
    rank_accuracy: list[float] | None = None,
) -> Records:
    """Records built directly from arrays; alignment columns default to NaN (excluded)."""
    p = np.asarray(probs, dtype=np.float32)
    n = p.shape[0]
    nan = [math.nan] * n

    def col(values: list[float] | None) -> np.ndarray:
        return np.asarray(nan if values is None else values, dtype=np.float64)

    return Records(
        classes=classes or tuple(f"c{i}" for i in range(p.shape[1])),
        ids=tuple(f"s{i}" for i in range(n)),
        labels=np.asarray(labels, dtype=np.int64),
        probs=p,
        energy=col(energy),
        mask_area=col(mask_area) if mask_area is not None else np.full(n, 0.25),
        pointing_hit=col(pointing_hit),
        rank_accuracy=col(rank_accuracy),
    )


# Five samples, three classes, no confidence on a bin edge or a threshold.
#   sample: probs               label pred correct conf
#   s0: [0.70, 0.20, 0.10]      0     0    yes     0.70
#   s1: [0.10, 0.62, 0.28]      1     1    yes     0.62
#   s2: [0.92, 0.05, 0.03]      1     0    no      0.92
#   s3: [0.003, 0.995, 0.002]   2     1    no      0.995
#   s4: [0.20, 0.30, 0.50]      2     2    yes     0.50
HAND_PROBS = [[0.70, 0.20, 0.10], [0.10, 0.62, 0.28], [0.92, 0.05, 0.03], [0.003, 0.995, 0.002], [0.20, 0.30, 0.50]]
HAND_LABELS = [0, 1, 1, 2, 2]


@pytest.fixture
def hand() -> Records:
    return make_records(HAND_PROBS, HAND_LABELS, classes=CLASSES)


HAND_EXPECTED = {
    "accuracy": 3 / 5,
    "class_accuracy.a": 1.0,  # s0
    "class_accuracy.b": 0.5,  # s1 right, s2 wrong
    "class_accuracy.c": 0.5,  # s3 wrong, s4 right
    "balanced_accuracy": (1.0 + 0.5 + 0.5) / 3,
    "worst_class_accuracy": 0.5,
    # round(0.8 * 5) = 4 most confident: s3 (wrong), s2 (wrong), s0, s1
    "selective_accuracy@0.8": 2 / 4,
    "nll": -(math.log(0.70) + math.log(0.62) + math.log(0.05) + math.log(0.002) + math.log(0.50)) / 5,
    "brier": (
        (0.3**2 + 0.2**2 + 0.1**2)
        + (0.1**2 + 0.38**2 + 0.28**2)
        + (0.92**2 + 0.95**2 + 0.03**2)
        + (0.003**2 + 0.995**2 + 0.998**2)
        + (0.2**2 + 0.3**2 + 0.5**2)
    )
    / 5,
    # Every sample sits in its own bin, so ECE is the mean |correct − conf| and MCE the largest.
    "ece": (0.30 + 0.38 + 0.92 + 0.995 + 0.50) / 5,
    "mce": 0.995,
    # Only bins whose confidence exceeds their accuracy count: the two wrong ones, weighted by confidence.
    "overconfidence_error": (0.92 * 0.92 + 0.995 * 0.995) / 5,
    "confident_wrong_rate@0.9": 2 / 5,  # s2 and s3, over ALL samples (not over the wrong ones)
    "confident_wrong_rate@0.99": 1 / 5,  # s3
    "mean_confidence_wrong": (0.92 + 0.995) / 2,
    # Ranked by confidence: s3 ✗, s2 ✗, s0 ✓, s1 ✓, s4 ✓ → risks 1/1, 2/2, 2/3, 2/4, 2/5.
    "aurc": (1 + 1 + 2 / 3 + 2 / 4 + 2 / 5) / 5,
}


@pytest.mark.parametrize("name", sorted(HAND_EXPECTED))
def test_classification_scores_match_hand_computed(hand: Records, name: str) -> None:
    scores = compute_scores(hand)
    assert scores[name] == pytest.approx(HAND_EXPECTED[name], abs=1e-6)


def test_hand_case_names_every_classification_and_calibration_score(hand: Records) -> None:
    # A new classification/calibration score must get a hand-computed case above.
    specs = [s for s in all_specs() if s.group in ("classification", "calibration")]
    names = {s.expand(c) if s.per_class else s.name for s in specs for c in CLASSES}
    assert names == set(HAND_EXPECTED)


def test_aurc_does_not_subtract_the_oracle(hand: Records) -> None:
    # The oracle ranks the 3 right answers first: risks 0, 0, 0, 1/4, 2/5.
    oracle = (0 + 0 + 0 + 1 / 4 + 2 / 5) / 5
    value = value_of("aurc", hand)
    assert value == pytest.approx(HAND_EXPECTED["aurc"], abs=1e-12)
    assert value - oracle == pytest.approx(0.58333333, abs=1e-6)
    assert not math.isclose(value, value - oracle)


def test_ece_and_mce_average_within_bins() -> None:
    # Two bins with two samples each: [0.70, 0.72] (1 right, 1 wrong) and [0.95, 0.96] (1 right, 1 wrong).
    records = make_records(
        [[0.70, 0.30], [0.72, 0.28], [0.95, 0.05], [0.96, 0.04]], [0, 1, 0, 1], classes=("x", "y")
    )
    gap_low, gap_high = abs(0.5 - 0.71), abs(0.5 - 0.955)
    assert value_of("ece", records) == pytest.approx(0.5 * gap_low + 0.5 * gap_high, abs=1e-6)
    assert value_of("mce", records) == pytest.approx(gap_high, abs=1e-6)
    # The per-sample mean gap (no binning) would be 0.5075: binning matters here.
    assert value_of("ece", records) == pytest.approx(0.3325, abs=1e-6)


def _probs_with_top(tops: np.ndarray, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Rows whose maximum is exactly ``tops`` (float32), rest spread below it, argmax at a random place."""
    rows = np.zeros((len(tops), n_classes), dtype=np.float32)
    for i, top in enumerate(tops):
        rest = rng.dirichlet(np.full(n_classes - 1, 50.0)) * (1.0 - float(top))
        assert rest.max() < top
        row = np.concatenate([[top], rest]).astype(np.float32)
        row[0] = top  # exactly the edge value, whatever the cast did to the rest
        rows[i] = row[rng.permutation(n_classes)]
    return rows


def _calibration_set(seed: int, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    torch_edges = torch.linspace(0, 1, 16).numpy()  # torchmetrics' float32 edges
    lowest = int(np.ceil(15 / n_classes)) + 1  # an edge must be a valid top probability (> 1/C)
    edge_tops = np.concatenate([torch_edges[lowest:15], np.float32(np.arange(lowest, 15) / 15)]).astype(np.float32)
    edge_rows = _probs_with_top(edge_tops, n_classes, rng)
    ones = np.eye(n_classes, dtype=np.float32)[rng.integers(0, n_classes, 4)]  # confidence exactly 1.0
    logits = rng.normal(size=(60, n_classes)) * rng.uniform(0.5, 4.0, size=(60, 1))
    soft = torch.softmax(torch.from_numpy(logits).float(), dim=1).numpy()
    probs = np.concatenate([edge_rows, ones, soft])
    preds = probs.argmax(axis=1)
    labels = rng.integers(0, n_classes, len(probs))
    right = rng.random(len(probs)) < 0.6
    labels[right] = preds[right]
    return probs, labels


@pytest.mark.parametrize(("seed", "n_classes"), [(0, 3), (1, 4), (2, 10), (3, 10), (4, 100)])
def test_ece_and_mce_equal_torchmetrics(seed: int, n_classes: int) -> None:
    probs, labels = _calibration_set(seed, n_classes)
    records = make_records(probs, labels)
    args = (torch.from_numpy(probs), torch.from_numpy(labels))
    l1 = CalibrationError(task="multiclass", num_classes=n_classes, n_bins=15, norm="l1")(*args)
    top = CalibrationError(task="multiclass", num_classes=n_classes, n_bins=15, norm="max")(*args)
    assert value_of("ece", records) == pytest.approx(float(l1), abs=1e-6)
    assert value_of("mce", records) == pytest.approx(float(top), abs=1e-6)


def test_confidence_of_one_gets_its_own_bin() -> None:
    # 1.0 (wrong) and 0.94 (right) would share the top bin [14/15, 1] under a closed last edge: gap 0.03.
    records = make_records([[1.0, 0.0], [0.94, 0.06]], [1, 0], classes=("x", "y"))
    assert value_of("ece", records) == pytest.approx(0.5 * 1.0 + 0.5 * 0.06, abs=1e-6)


def test_overconfidence_error_ignores_underconfidence() -> None:
    # Right at 0.6 and 0.62 (bin [0.6, 0.667): acc 1, conf 0.61): under-confident, ECE counts it, OE does not.
    under = make_records([[0.6, 0.4], [0.62, 0.38]], [0, 0], classes=("x", "y"))
    assert value_of("ece", under) == pytest.approx(0.39, abs=1e-6)
    assert value_of("overconfidence_error", under) == 0.0
    # Half right at 0.95/0.96: acc 0.5, conf 0.955; OE = 0.955 · 0.455.
    over = make_records([[0.95, 0.05], [0.96, 0.04]], [0, 1], classes=("x", "y"))
    assert value_of("overconfidence_error", over) == pytest.approx(0.955 * 0.455, abs=1e-6)


def test_confident_wrong_threshold_is_compared_in_float32() -> None:
    # Probabilities are float32: float32(0.9) is 0.899999976, below the float64 0.9, and would not count.
    records = make_records([[0.9, 0.1], [0.1, 0.9]], [1, 0], classes=("x", "y"))
    assert value_of("confident_wrong_rate@0.9", records) == 1.0


def test_selective_accuracy_keeps_at_least_one_sample() -> None:
    records = make_records([[0.9, 0.1]], [1], classes=("x", "y"))
    assert value_of("selective_accuracy@0.8", records) == 0.0


def test_mean_confidence_wrong_is_nan_without_errors() -> None:
    records = make_records([[0.9, 0.1], [0.3, 0.7]], [0, 1], classes=("x", "y"))
    assert math.isnan(value_of("mean_confidence_wrong", records))
    assert value_of("confident_wrong_rate@0.9", records) == 0.0


def test_class_accuracy_of_an_absent_class_is_nan_and_left_out_of_the_means() -> None:
    records = make_records([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.8, 0.1, 0.1]], [0, 1, 1], classes=CLASSES)
    per_class = compute_scores(records, only=("class_accuracy.a",))
    assert per_class["class_accuracy.a"] == 1.0 and per_class["class_accuracy.b"] == 0.5
    assert math.isnan(per_class["class_accuracy.c"])
    assert value_of("balanced_accuracy", records) == pytest.approx(0.75)
    assert value_of("worst_class_accuracy", records) == 0.5


# --- alignment -----------------------------------------------------------------------------------

#   sample  energy  area   lift  hit  rank  correct  label
#   s0      0.60    0.20   3.0   1    0.75  yes      a
#   s1      0.20    0.25   0.8   0    0.00  no       b
#   s2      NaN     0.00   NaN   NaN  NaN   yes      c   (empty mask: excluded)
#   s3      0.50    0.50   1.0   1    0.50  yes      c   (lift exactly 1 is not "off object")
#   s4      NaN     0.30   NaN   NaN  NaN   no       a   (all-zero map: excluded)
ALIGN_PROBS = [[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6], [0.1, 0.6, 0.3]]
ALIGN_LABELS = [0, 1, 2, 2, 0]


@pytest.fixture
def aligned() -> Records:
    nan = math.nan
    return make_records(
        ALIGN_PROBS, ALIGN_LABELS, classes=CLASSES,
        energy=[0.6, 0.2, nan, 0.5, nan], mask_area=[0.2, 0.25, 0.0, 0.5, 0.3],
        pointing_hit=[1.0, 0.0, nan, 1.0, nan], rank_accuracy=[0.75, 0.0, nan, 0.5, nan],
    )


ALIGN_EXPECTED = {
    "alignment.energy": (0.6 + 0.2 + 0.5) / 3,
    "alignment.lift": (3.0 + 0.8 + 1.0) / 3,
    "alignment.pointing_game": 2 / 3,
    "alignment.rank_accuracy": (0.75 + 0.0 + 0.5) / 3,
    "alignment.off_object_rate": 1 / 3,
    "alignment.coverage": 3 / 5,
    "alignment.excluded": 2.0,
    "alignment.zero_maps": 1.0,  # sample 4: a mask (area 0.3) but no energy; sample 2 has an empty mask
    "alignment.lift.correct": (3.0 + 1.0) / 2,
    "alignment.lift.wrong": 0.8,
    "alignment.energy.correct": (0.6 + 0.5) / 2,
    "alignment.energy.wrong": 0.2,
    "alignment.lift.class.a": 3.0,
    "alignment.lift.class.b": 0.8,
    "alignment.lift.class.c": 1.0,
}


@pytest.mark.parametrize("name", sorted(ALIGN_EXPECTED))
def test_alignment_scores_match_hand_computed(aligned: Records, name: str) -> None:
    assert compute_scores(aligned)[name] == pytest.approx(ALIGN_EXPECTED[name], abs=1e-12)


def test_hand_case_names_every_alignment_score(aligned: Records) -> None:
    names = {n for n in compute_scores(aligned) if n.startswith("alignment.")}
    assert names == set(ALIGN_EXPECTED)


def test_alignment_scores_are_nan_when_every_sample_is_excluded() -> None:
    records = make_records([[0.9, 0.1], [0.2, 0.8]], [0, 1], classes=("x", "y"))
    assert math.isnan(value_of("alignment.lift", records))
    assert math.isnan(value_of("alignment.off_object_rate", records))
    assert value_of("alignment.coverage", records) == 0.0
    assert value_of("alignment.excluded", records) == 2.0


# --- registry -------------------------------------------------------------------------------------


def test_registry_names_are_unique_and_groups_known() -> None:
    specs = all_specs()
    names = [s.name for s in specs]
    assert len(names) == len(set(names))
    assert {s.group for s in specs} <= {"classification", "calibration", "alignment", "background", "shortcuts",
                                        "sanity"}
    assert all(s.help.strip() and "\n" not in s.help for s in specs)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("accuracy", "accuracy"),
        ("class_accuracy.circle", "class_accuracy.<class>"),
        ("delta.ece", "ece"),
        ("alignment.lift.class.square", "alignment.lift.class.<class>"),
        ("alignment.lift.correct", "alignment.lift.correct"),
        ("class_accuracy.", None),
        ("accuracy@0.5", None),
        ("nope", None),
    ],
)
def test_get_spec_resolves_concrete_names(name: str, expected: str | None) -> None:
    spec = get_spec(name)
    assert (spec.name if spec else None) == expected


def test_known_names_expand_classes_and_skip_disabled_probes() -> None:
    names = known_names(("x", "y"), probes=())
    assert "class_accuracy.x" in names and "class_accuracy.y" in names
    assert "class_accuracy.<class>" not in names
    assert not any(n.startswith(("background.", "sanity.")) for n in names)
    assert "background.flip_rate" in known_names(("x", "y"), probes=("background",))


def test_compute_scores_only_restricts_to_the_named_specs(hand: Records) -> None:
    only = compute_scores(hand, only=("ece", "class_accuracy.b"))
    assert set(only) == {"ece", "class_accuracy.a", "class_accuracy.b", "class_accuracy.c"}
    assert only["ece"] == pytest.approx(HAND_EXPECTED["ece"], abs=1e-6)


# A model with outputs (a, b, other) gated on a review set of classes (a, b): the full softmax per sample
#   s0: [0.6, 0.1, 0.3] label a -> pred a (right), conf 0.6
#   s1: [0.2, 0.3, 0.5] label b -> pred other (WRONG: answering an absent class), conf 0.5
#   s2: [0.1, 0.7, 0.2] label b -> pred b (right), conf 0.7
@pytest.fixture
def subset() -> Records:
    full = np.array([[0.6, 0.1, 0.3], [0.2, 0.3, 0.5], [0.1, 0.7, 0.2]], dtype=np.float32)
    nan = np.full(3, math.nan)
    return Records(classes=("a", "b"), ids=("s0", "s1", "s2"), labels=np.array([0, 1, 1]), probs=full[:, :2],
                   energy=nan, mask_area=nan, pointing_hit=nan, rank_accuracy=nan,
                   pred=np.array([0, -1, 1]), top_prob=np.array([0.6, 0.5, 0.7], dtype=np.float32),
                   second_prob=np.array([0.3, 0.3, 0.2], dtype=np.float32),
                   outside_sq=np.array([0.09, 0.25, 0.04]))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("accuracy", 2 / 3),  # probs.argmax() would call s1 right
        ("class_accuracy.a", 1.0),
        ("class_accuracy.b", 0.5),
        # (0.16 + 0.01 + 0.09) + (0.04 + 0.49 + 0.25) + (0.01 + 0.09 + 0.04), over 3
        ("brier", 1.18 / 3),
        ("nll", -(math.log(0.6) + math.log(0.3) + math.log(0.7)) / 3),
        ("ece", (0.4 + 0.5 + 0.3) / 3),  # three bins of one sample: |1 - .6|, |0 - .5|, |1 - .7|
        ("mean_confidence_wrong", 0.5),
        ("confident_wrong_rate@0.9", 0.0),
    ],
)
def test_scores_over_all_outputs_when_the_review_set_covers_a_subset(subset: Records, name: str,
                                                                      expected: float) -> None:
    scores = compute_scores(subset)
    assert scores[name] == pytest.approx(expected, abs=1e-6)
    assert not any(key.startswith("class_accuracy.other") for key in scores)


def test_subset_columns_survive_concat_and_take(subset: Records) -> None:
    joined = Records.concat([subset.take(np.array([0])), subset.take(np.array([1, 2]))])
    for column in ("pred", "top_prob", "second_prob", "outside_sq"):
        np.testing.assert_array_equal(getattr(joined, column), getattr(subset, column), err_msg=column)
    assert compute_scores(joined) == pytest.approx(compute_scores(subset), nan_ok=True)
    resampled = subset.take(np.array([1, 1]))
    assert resampled.preds.tolist() == [-1, -1] and resampled.confidence.tolist() == pytest.approx([0.5, 0.5])
    assert compute_scores(resampled)["brier"] == pytest.approx(0.78)


def test_class_name_never_wraps_around(subset: Records) -> None:
    from gate.records import NO_VARIANT, OUTSIDE

    assert [subset.class_name(int(i)) for i in subset.preds] == ["a", "(outside the review set)", "b"]
    assert subset.class_name(OUTSIDE) != subset.classes[-1] and subset.class_name(NO_VARIANT) == ""

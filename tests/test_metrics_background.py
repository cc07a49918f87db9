from __future__ import annotations

import math

import numpy as np
import pytest

from gate.errors import GateError
from gate.metrics import background, sanity
from gate.metrics.registry import all_specs, value_of
from gate.records import Records

NAN = float("nan")


def make_records(
    probe_preds: dict[str, list[int]] | None = None, similarity: list[float] | None = None
) -> Records:
    """Four samples of classes a, b, c: labels [0, 1, 2, 0], predictions [0, 1, 1, 2]."""
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.6, 0.3], [0.3, 0.2, 0.5]], dtype=np.float32)
    n = len(probs)
    return Records(
        classes=("a", "b", "c"),
        ids=tuple(f"s{i}" for i in range(n)),
        labels=np.array([0, 1, 2, 0], dtype=np.int64),
        probs=probs,
        energy=np.full(n, 0.5),
        mask_area=np.full(n, 0.25),
        pointing_hit=np.ones(n),
        rank_accuracy=np.full(n, 0.5),
        probe_preds={k: np.array(v, dtype=np.int64) for k, v in (probe_preds or {}).items()},
        sanity_similarity=None if similarity is None else np.array(similarity, dtype=np.float64),
    )


PROBES = {
    "only_fg": [0, 1, 2, 2],  # right on samples 0, 1, 2
    "only_bg": [0, 0, 0, 0],  # right on samples 0 and 3 (label a)
    "mixed_same": [0, 1, 2, 0],  # all right
    "mixed_rand": [1, 1, 0, 0],  # right on 1 and 3; differs from predictions [0, 1, 1, 2] on 0, 2, 3
}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("background.only_fg_accuracy", 0.75),
        ("background.only_bg_accuracy", 0.5),
        ("background.only_bg_chance_adjusted", (0.5 - 1 / 3) / (1 - 1 / 3)),
        ("background.mixed_same_accuracy", 1.0),
        ("background.mixed_rand_accuracy", 0.5),
        ("background.bg_gap", 0.5),
        ("background.flip_rate", 0.75),
    ],
)
def test_background_scores_hand_computed(name: str, expected: float) -> None:
    spec = {s.name: s for s in background.SCORES}[name]
    assert spec.form(make_records(PROBES)).value() == pytest.approx(expected)


def test_only_bg_chance_adjusted_scale() -> None:
    at_chance = make_records({"only_bg": [0, 0, 0, 1]})  # 1 of 4 right, near chance 1/3
    assert value_of("background.only_bg_accuracy", at_chance) == pytest.approx(0.25)
    assert value_of("background.only_bg_chance_adjusted", at_chance) == pytest.approx((0.25 - 1 / 3) / (2 / 3))
    assert value_of("background.only_bg_chance_adjusted", make_records({"only_bg": [0, 1, 2, 0]})) == pytest.approx(1.0)


def test_flip_rate_zero_when_predictions_unchanged() -> None:
    assert value_of("background.flip_rate", make_records({"mixed_rand": [0, 1, 1, 2]})) == 0.0


def test_missing_variant_is_an_internal_error() -> None:
    with pytest.raises(GateError, match="mixed_rand") as info:
        value_of("background.bg_gap", make_records({"mixed_same": [0, 1, 2, 0]}))
    assert info.value.exit_code == 3


def test_randomization_similarity_nan_mean() -> None:
    similar = make_records(similarity=[0.2, NAN, 0.4, 0.9])
    assert value_of("sanity.randomization_similarity", similar) == pytest.approx(0.5)
    assert math.isnan(value_of("sanity.randomization_similarity", make_records(similarity=[NAN] * 4)))


def test_randomization_similarity_missing_is_an_internal_error() -> None:
    with pytest.raises(GateError, match="sanity_similarity") as info:
        value_of("sanity.randomization_similarity", make_records())
    assert info.value.exit_code == 3


def test_specs_declare_direction_group_probe() -> None:
    # The sanity scores are declared (and tested) in gate/metrics/sanity.py's own tests.
    specs = {s.name: s for s in background.SCORES}
    lower_is_better = {"background.only_bg_accuracy", "background.only_bg_chance_adjusted", "background.bg_gap",
                       "background.flip_rate"}
    proportions = {"background.only_fg_accuracy", "background.only_bg_accuracy", "background.mixed_same_accuracy",
                   "background.mixed_rand_accuracy", "background.flip_rate"}
    assert len(specs) == 7
    for name, spec in specs.items():
        family = name.split(".")[0]
        assert spec.group == family and spec.probe == family
        assert spec.higher_is_better is (name not in lower_is_better)
        assert spec.proportion is (name in proportions)
        assert spec.help and "\n" not in spec.help


def test_registry_lists_the_probe_scores() -> None:
    names = {s.name for s in all_specs()}
    assert {s.name for s in (*background.SCORES, *sanity.SCORES)} <= names


def test_background_scores_use_only_the_samples_with_a_mask() -> None:
    # Sample 2 has no mask: no variant was built (NO_VARIANT). Masked rows 0, 1, 3: labels [0, 1, 0],
    # predictions [0, 1, 2].
    from gate.records import NO_VARIANT

    probes = {name: list(values) for name, values in PROBES.items()}
    for values in probes.values():
        values[2] = NO_VARIANT
    records = make_records(probes)
    records = type(records)(**{**vars(records), "has_mask": np.array([True, True, False, True])})
    assert value_of("background.only_fg_accuracy", records) == pytest.approx(2 / 3)  # [0, 1, 2] vs [0, 1, 0]
    assert value_of("background.only_bg_accuracy", records) == pytest.approx(2 / 3)  # [0, 0, 0]
    assert value_of("background.mixed_same_accuracy", records) == pytest.approx(1.0)
    assert value_of("background.mixed_rand_accuracy", records) == pytest.approx(2 / 3)  # [1, 1, 0]
    assert value_of("background.flip_rate", records) == pytest.approx(2 / 3)  # [1, 1, 0] vs [0, 1, 2]

"""The sanity probe end to end: averaged over randomised copies, invariant to class order, seeded."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gate.engine import core as engine
from gate.engine import probes
from gate.inputs import archs, shapes
from gate.inputs import candidate as candidate_io
from gate.inputs.review_set import ReviewSet
from gate.metrics import sanity
from gate.metrics.registry import compute_scores, value_of
from gate.records import Records
from tests.conftest import SHIPPED_SET

NAN = math.nan
SANITY = frozenset({"sanity"})


def _records(table: list[list[float]]) -> Records:
    n = len(table)
    return Records(classes=("a", "b"), ids=tuple(map(str, range(n))), labels=np.zeros(n, dtype=np.int64),
                   probs=np.tile(np.float32([0.9, 0.1]), (n, 1)), energy=np.full(n, NAN), mask_area=np.full(n, NAN),
                   pointing_hit=np.full(n, NAN), rank_accuracy=np.full(n, NAN),
                   sanity_similarity=np.array(table, dtype=np.float64))


def test_score_pools_samples_and_copies_and_spread_is_the_std_of_copy_means() -> None:
    # Copy means: (0.1 + 0.3) / 2 = 0.2 and (0.5 + 0.7 + 0.9) / 3 = 0.7; pooled: 2.5 / 5 = 0.5.
    records = _records([[0.1, 0.5], [0.3, 0.7], [NAN, 0.9]])
    assert value_of("sanity.randomization_similarity", records) == pytest.approx(0.5)
    assert sanity.per_copy_similarity(records) == pytest.approx([0.2, 0.7])
    spread = value_of("sanity.randomization_similarity.spread", records)
    assert spread == pytest.approx(math.sqrt(0.125))  # sample std of 0.2, 0.7


def test_one_copy_column_has_no_spread() -> None:
    records = _records([[0.2], [0.4]])
    assert value_of("sanity.randomization_similarity", records) == pytest.approx(0.3)
    assert math.isnan(value_of("sanity.randomization_similarity.spread", records))


def _perturbed_tiny(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = archs.tiny_cnn(4, width=12)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.2)
    return model.eval()


def _save(model: nn.Module, path: Path, classes: tuple[str, ...]) -> Path:
    return candidate_io.save(path, model, arch="tiny_cnn", arch_kwargs={"num_classes": 4, "width": 12},
                             classes=classes, input_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)


def _permuted(model: nn.Module, order: list[int]) -> nn.Module:
    """The same model with its outputs listed in ``order`` (rows of the head permuted to match)."""
    clone = archs.tiny_cnn(4, width=12)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["fc.weight"] = state["fc.weight"][order]
    state["fc.bias"] = state["fc.bias"][order]
    clone.load_state_dict(state)
    return clone.eval()


def _similarity(path: Path, review_set: ReviewSet, seed: int = 0, batch_size: int = 16) -> np.ndarray:
    options = engine.EngineOptions(probes=SANITY, seed=seed, batch_size=batch_size)
    (run,) = engine.run([candidate_io.load(path)], review_set, options)
    assert run.records.sanity_similarity is not None
    return np.asarray(run.records.sanity_similarity)


def test_permuted_class_order_gives_the_same_sanity_values(small_set: ReviewSet, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    model = _perturbed_tiny(3)
    order = [2, 0, 3, 1]
    classes = tuple(shapes.CLASSES)
    plain = _save(model, tmp_path / "plain.pt", classes)
    permuted = _save(_permuted(model, order), tmp_path / "permuted.pt", tuple(classes[i] for i in order))
    a, b = _similarity(plain, small_set), _similarity(permuted, small_set)
    assert a.shape == (small_set.size, probes.SANITY_COPIES)
    assert np.isfinite(a).mean() > 0.7  # 4×4 maps: a random one is sometimes all zero (NaN)
    np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    scores_a = compute_scores(engine.run([candidate_io.load(plain)], small_set,
                                         engine.EngineOptions(probes=SANITY))[0].records, SANITY)
    scores_b = compute_scores(engine.run([candidate_io.load(permuted)], small_set,
                                         engine.EngineOptions(probes=SANITY))[0].records, SANITY)
    assert scores_a["sanity.randomization_similarity"] == pytest.approx(
        scores_b["sanity.randomization_similarity"], abs=1e-6)


def test_sanity_values_do_not_depend_on_batches_and_are_seeded(small_set: ReviewSet, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    path = _save(_perturbed_tiny(4), tmp_path / "m.pt", tuple(shapes.CLASSES))
    first = _similarity(path, small_set, batch_size=16)
    np.testing.assert_array_equal(first, _similarity(path, small_set, batch_size=16))  # two runs, same numbers
    np.testing.assert_allclose(first, _similarity(path, small_set, batch_size=7), atol=1e-6)  # other batches
    assert not np.allclose(first, _similarity(path, small_set, seed=1), equal_nan=True)  # --seed draws anew


@pytest.mark.slow
def test_shipped_cheater_sanity_score_is_stable_across_seeds() -> None:
    """The least stable shipped candidate (per-copy spread ≈ 0.024): five --seed values within 0.05."""
    from gate.inputs.review_set import open_review_set

    torch.set_num_threads(1)
    review = open_review_set(SHIPPED_SET)
    cheater = candidate_io.load(Path(SHIPPED_SET).parents[1] / "candidates" / "cheater.pt")
    values = []
    for seed in range(5):
        (run,) = engine.run([cheater], review, engine.EngineOptions(probes=SANITY, seed=seed, batch_size=200))
        values.append(compute_scores(run.records, SANITY)["sanity.randomization_similarity"])
    assert max(values) - min(values) <= 0.05, values

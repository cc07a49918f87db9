"""The engine: one forward per batch, one more per probe variant, bounded memory, bad outputs refused."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from gate import candidate as candidate_io
from gate import engine, probes
from gate.errors import ModelOutputError, UsageError
from gate.metrics.registry import compute_scores
from gate.records import PROBE_VARIANTS
from gate.review_set import ReviewSet


class CountingNet(nn.Module):
    """tiny_cnn-like model that counts its forward calls (per instance: copies count apart)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def _counting(checkpoint: Path) -> tuple[candidate_io.Candidate, CountingNet]:
    loaded = candidate_io.load(checkpoint)
    net = CountingNet(loaded.model)
    return replace(loaded, model=net, target_layer="inner.features"), net


@pytest.mark.parametrize(
    ("enabled", "per_batch"),
    [(frozenset(), 1), (frozenset({"background"}), 1 + len(PROBE_VARIANTS)), (frozenset({"sanity"}), 1)],
    ids=["plain", "background", "sanity"],
)
def test_forward_calls_per_batch(small_set: ReviewSet, untrained_checkpoint: Path, enabled: frozenset[str],
                                 per_batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    cand, net = _counting(untrained_checkpoint)
    copies: list[CountingNet] = []
    real_copy = probes.randomized_copy

    def counting_copy(model: nn.Module, layer: str, seed: int = 0) -> nn.Module:
        copy = real_copy(model, layer, seed)
        assert isinstance(copy, CountingNet)
        copy.calls = 0
        copies.append(copy)
        return copy

    monkeypatch.setattr(probes, "randomized_copy", counting_copy)
    options = engine.EngineOptions(batch_size=16, probes=enabled)
    (result,) = engine.run([cand], small_set, options)
    batches = -(-small_set.size // 16)
    assert net.calls == batches * per_batch
    if "sanity" in enabled:
        assert len(copies) == 1 and copies[0].calls == batches  # one explained forward of the copy per batch
        assert result.records.sanity_similarity is not None
    else:
        assert not copies


def test_candidates_share_decoded_batches(small_set: ReviewSet, untrained_checkpoint: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    loads: list[int] = []
    original = ReviewSet.load_image

    def counting_load(self: ReviewSet, index: int) -> np.ndarray:
        loads.append(index)
        return original(self, index)

    monkeypatch.setattr(ReviewSet, "load_image", counting_load)
    cand = candidate_io.load(untrained_checkpoint)
    resized = replace(cand, input=replace(cand.input, size=(24, 24), resize=28, interpolation="bicubic"))
    engine.run([cand, cand, resized], small_set, engine.EngineOptions(batch_size=16))
    # Each sample decoded once for all three models, also the one with its own preprocessing.
    assert sorted(loads) == list(range(small_set.size))


def test_batch_size_does_not_change_records(small_set: ReviewSet, untrained_checkpoint: Path) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    options = {"probes": frozenset({"background"}), "seed": 3}
    (one,) = engine.run([cand], small_set, engine.EngineOptions(batch_size=1, **options))
    (many,) = engine.run([cand], small_set, engine.EngineOptions(batch_size=48, **options))
    np.testing.assert_allclose(one.records.probs, many.records.probs, atol=1e-5)
    np.testing.assert_allclose(one.records.energy, many.records.energy, atol=1e-5)
    for variant in PROBE_VARIANTS:
        np.testing.assert_array_equal(one.records.probe_preds[variant], many.records.probe_preds[variant])
    assert one.records.ids == tuple(s.sample_id for s in small_set.samples)


def test_pairings_are_seeded_and_recorded(small_set: ReviewSet, untrained_checkpoint: Path) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    runs = [engine.run([cand], small_set, engine.EngineOptions(probes=frozenset({"background"}), seed=s))[0]
            for s in (7, 7, 8)]
    same = runs[0].records.pairings["mixed_rand"]
    np.testing.assert_array_equal(same, runs[1].records.pairings["mixed_rand"])
    assert not np.array_equal(same, runs[2].records.pairings["mixed_rand"])
    labels = small_set.labels()
    assert (labels[same] != labels).all()
    assert (labels[runs[0].records.pairings["mixed_same"]] == labels).all()


def test_gallery_is_bounded_and_consistent(small_set: ReviewSet, untrained_checkpoint: Path) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    (result,) = engine.run([cand], small_set, engine.EngineOptions(batch_size=8, gallery_size=3,
                                                                   fixed_per_class=1))
    records, gallery = result.records, result.gallery
    fixed = {next(s.sample_id for s in small_set.samples if s.label == k) for k in range(4)}
    assert len(gallery.borderline) == 3
    assert len(gallery.easy) + len(gallery.failures) >= 3
    shown = set(gallery.easy) | set(gallery.borderline) | set(gallery.failures)
    assert set(records.kept) == shown | fixed
    confidence = dict(zip(records.ids, records.confidence, strict=True))
    correct = dict(zip(records.ids, records.correct, strict=True))
    wrong_conf = sorted((confidence[i] for i in records.ids if not correct[i]), reverse=True)
    assert [confidence[i] for i in gallery.failures] == pytest.approx(wrong_conf[: len(gallery.failures)])
    kept = records.kept[gallery.borderline[0]]
    assert kept.image.shape == (32, 32, 3) and kept.image.dtype == np.uint8
    assert kept.cam.shape == (32, 32) and kept.mask.dtype == bool


def test_nan_outputs_are_an_input_error_naming_the_candidate(small_set: ReviewSet, untrained_checkpoint: Path) -> None:
    cand = candidate_io.load(untrained_checkpoint)
    with torch.no_grad():
        cand.model.fc.bias.fill_(float("nan"))  # type: ignore[union-attr]
    with pytest.raises(ModelOutputError) as info:
        engine.run([cand], small_set)
    assert info.value.exit_code == 2
    assert str(untrained_checkpoint) in info.value.one_line() and "logits" in info.value.one_line()


def test_cuda_without_a_gpu_is_a_usage_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(UsageError, match="no CUDA device"):
        engine.resolve_device("cuda")
    assert engine.resolve_device("auto").type == "cpu"


def _edge_explainer(model: nn.Module, layer: str, inputs: torch.Tensor, target: Any = None) -> Any:
    """An 'explainer' that ignores the model: image edges, the classic failed sanity check."""
    from gate.gradcam import Explained

    with torch.no_grad():
        logits = model(inputs)
    gray = inputs.mean(1)
    edges = (gray[:, 1:, 1:] - gray[:, :-1, 1:]).abs() + (gray[:, 1:, 1:] - gray[:, 1:, :-1]).abs()
    chosen = logits.argmax(1) if target is None else target
    return Explained(logits=logits, cam=edges, target=chosen)


@pytest.mark.slow
def test_sanity_separates_a_trained_model_from_a_model_blind_explainer(
    honest_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gate.review_set import open_review_set
    from tests.conftest import SHIPPED_SET

    review = open_review_set(SHIPPED_SET)
    subset = np.arange(0, review.size, 5)
    options = engine.EngineOptions(probes=frozenset({"sanity"}))
    cand = candidate_io.load(honest_checkpoint)
    (real,) = engine.run([cand], review, options, indices=subset)
    monkeypatch.setattr(engine, "explain", _edge_explainer)
    (blind,) = engine.run([cand], review, options, indices=subset)
    real_score = compute_scores(real.records, {"sanity"})["sanity.randomization_similarity"]
    blind_score = compute_scores(blind.records, {"sanity"})["sanity.randomization_similarity"]
    assert real_score < 0.5  # the trained model's maps change when its top is randomised
    assert blind_score > 0.99  # edges do not depend on the model: the strict policy (max 0.5) fails it


def _trained_32(tmp_path: Path) -> candidate_io.Candidate:
    from tests.conftest import save_tiny, train_tiny

    return candidate_io.load(save_tiny(train_tiny(0.9, seed=4, n=300, epochs=2, size=32), tmp_path / "t.pt", size=32))


def test_shards_merged_equal_one_run(tmp_path: Path, small_set: ReviewSet) -> None:
    """What torchrun does: each rank runs a block of rows; the joined runs equal a single-process run."""
    cand = _trained_32(tmp_path)
    options = engine.EngineOptions(batch_size=8, probes=frozenset({"background", "sanity"}), seed=5, gallery_size=3)
    (whole,) = engine.run([cand], small_set, options)
    blocks = np.array_split(np.arange(small_set.size), 3)
    parts = [engine.run([cand], small_set, options, indices=block)[0] for block in blocks]
    merged = engine.merge_runs(parts, small_set, options)
    a, b = whole.records, merged.records
    assert a.ids == b.ids
    for column in ("labels", "probs", "energy", "mask_area", "pointing_hit", "rank_accuracy", "sanity_similarity"):
        np.testing.assert_array_equal(getattr(a, column), getattr(b, column), err_msg=column)
    for variant in PROBE_VARIANTS:
        np.testing.assert_array_equal(a.probe_preds[variant], b.probe_preds[variant])
    assert set(a.pairings) == set(b.pairings) == {"mixed_same", "mixed_rand"}
    for variant in a.pairings:
        np.testing.assert_array_equal(a.pairings[variant], b.pairings[variant])
    assert compute_scores(a, frozenset({"background", "sanity"})) == compute_scores(b, frozenset({"background",
                                                                                                  "sanity"}))
    assert merged.gallery == whole.gallery
    assert set(b.kept) == set(a.kept)
    np.testing.assert_array_equal(b.kept[whole.gallery.borderline[0]].cam, a.kept[whole.gallery.borderline[0]].cam)


def test_gallery_ties_go_to_the_earlier_sample_whatever_the_batch_size(small_set: ReviewSet,
                                                                        untrained_checkpoint: Path) -> None:
    # An untrained model gives near-identical outputs: many equal keys. The choice must not depend on batching.
    cand = candidate_io.load(untrained_checkpoint)
    galleries = {engine.run([cand], small_set, engine.EngineOptions(batch_size=size, gallery_size=4))[0].gallery
                 for size in (1, 5, 48)}
    assert len(galleries) == 1
    (gallery,) = galleries
    assert gallery == engine.select_gallery(engine.run([cand], small_set, engine.EngineOptions())[0].records, 4)


def test_select_gallery_hand_case() -> None:
    from gate.records import Records

    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.9, 0.1], [0.2, 0.8], [0.3, 0.7]], dtype=np.float32)
    labels = np.array([0, 0, 0, 0, 1])
    nan = np.full(5, np.nan)
    records = Records(classes=("x", "y"), ids=("a", "b", "c", "d", "e"), labels=labels, probs=probs, energy=nan,
                      mask_area=nan, pointing_hit=nan, rank_accuracy=nan)
    gallery = engine.select_gallery(records, 2)
    assert gallery.easy == ("a", "c")  # 0.9 ties: the earlier first; b (0.6) and e (0.7) lose
    assert gallery.failures == ("d",)  # the only wrong answer
    assert gallery.borderline == ("b", "e")  # margins 0.2 and 0.4 (smallest first)


def test_more_shards_than_samples_still_merge(small_set: ReviewSet, untrained_checkpoint: Path) -> None:
    # torchrun with more ranks than samples: the last ranks get empty blocks.
    cand = candidate_io.load(untrained_checkpoint)
    options = engine.EngineOptions(probes=frozenset({"background", "sanity"}), gallery_size=2)
    (whole,) = engine.run([cand], small_set, options)
    blocks = np.array_split(np.arange(small_set.size), small_set.size + 3)
    parts = [engine.run([cand], small_set, options, indices=block)[0] for block in blocks]
    assert [p.records.size for p in parts[-3:]] == [0, 0, 0]
    assert parts[-1].records.probs.shape == (0, 4) and parts[-1].gallery == engine.select_gallery(parts[-1].records, 2)
    merged = engine.merge_runs(parts, small_set, options)
    assert merged.records.ids == whole.records.ids and merged.gallery == whole.gallery
    np.testing.assert_allclose(merged.records.probs, whole.records.probs, atol=1e-6)
    assert set(merged.records.probe_preds) == set(PROBE_VARIANTS)

"""Swap probes: the pure ops by hand, the seeded partners, the engine's variant path and the scores."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gate.decide import intervals, stats
from gate.engine import core as engine
from gate.engine import swaps
from gate.errors import GateError, ReviewSetError
from gate.inputs import candidate as candidate_io
from gate.inputs.model_input import InputSpec
from gate.inputs.review_set import ReviewSet
from gate.metrics import swaps as swap_scores
from gate.metrics.registry import compute_scores, known_names
from gate.records import OUTSIDE, SWAP_PARTNER, SWAP_VARIANTS, Records


def test_border_region_by_hand() -> None:
    region = swaps.border_region(20, 30)  # ceil(0.06 × 20) = 2 px band
    expected = np.ones((20, 30), dtype=bool)
    expected[2:18, 2:28] = False
    np.testing.assert_array_equal(region.numpy(), expected)
    assert swaps.border_region(8, 8).sum() == 8 * 8 - 6 * 6  # ceil(0.48) = 1 px


def test_corner_region_by_hand() -> None:
    region = swaps.corner_region(20, 30).numpy()  # patches ceil(3) × ceil(4.5) = 3 × 5; strip cols 10..19
    expected = np.zeros((20, 30), dtype=bool)
    for rows in (slice(0, 3), slice(17, 20)):
        expected[rows, :5] = expected[rows, 25:] = True
    expected[17:, 10:20] = True
    np.testing.assert_array_equal(region, expected)


def test_swap_region_takes_exactly_the_region_from_the_partner() -> None:
    gen = torch.Generator().manual_seed(0)
    images, partners = torch.rand(2, 3, 10, 12, generator=gen), torch.rand(2, 3, 10, 12, generator=gen)
    region = torch.zeros(10, 12, dtype=torch.bool)
    region[0, 0] = region[9, 3] = True
    out = swaps.swap_region(images, partners, region)
    expected = images.clone()
    expected[:, :, 0, 0] = partners[:, :, 0, 0]
    expected[:, :, 9, 3] = partners[:, :, 9, 3]
    assert torch.equal(out, expected)


def test_swap_lighting_moves_channel_means_to_the_partner() -> None:
    images = torch.full((1, 3, 4, 4), 0.4)
    images[0, 0, 0, 0] = 0.6  # some texture, kept
    partners = torch.stack([torch.full((4, 4), v) for v in (0.2, 0.5, 0.7)])[None]
    out = swaps.swap_lighting(images, partners)
    np.testing.assert_allclose(out.mean(dim=(2, 3))[0].numpy(), [0.2, 0.5, 0.7], atol=1e-6)
    assert out[0, 0, 0, 0] - out[0, 0, 1, 1] == pytest.approx(0.2)  # the texture is untouched
    clipped = swaps.swap_lighting(torch.full((1, 3, 2, 2), 0.1), torch.ones(1, 3, 2, 2))
    assert float(clipped.max()) == 1.0


def test_swap_rejects_bad_shapes_and_names() -> None:
    with pytest.raises(GateError):
        swaps.swap_lighting(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 5))
    with pytest.raises(GateError):
        swaps.swap("watermark", torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(GateError):
        swaps.border_region(10, 10, share=0.5)


def test_swap_partners_are_of_another_class_and_seeded() -> None:
    labels = np.array([0, 0, 1, 1, 1, 2, 0, 2])
    a = swaps.swap_partners(labels, seed=3)
    assert np.array_equal(a, swaps.swap_partners(labels, seed=3))
    assert not np.array_equal(a, swaps.swap_partners(labels, seed=4))
    assert (labels[a] != labels).all()
    single = swaps.swap_partners(np.zeros(5, dtype=int), seed=1)
    assert (single != np.arange(5)).all()
    assert swaps.swap_partners(np.zeros(1, dtype=int), seed=1).tolist() == [0]
    with pytest.raises(ReviewSetError):
        swaps.swap_partners(np.zeros(0, dtype=int), seed=1)


def _records(preds: list[int], labels: list[int], probed: dict[str, list[int]]) -> Records:
    n = len(preds)
    probs = np.full((n, 3), 1 / 3, dtype=np.float32)
    nan = np.full(n, np.nan)
    return Records(classes=("a", "b", "c"), ids=tuple(f"s{i}" for i in range(n)), labels=np.array(labels),
                   probs=probs, energy=nan, mask_area=nan, pointing_hit=nan, rank_accuracy=nan,
                   probe_preds={k: np.array(v) for k, v in probed.items()}, pred=np.array(preds),
                   top_prob=np.full(n, 0.5, dtype=np.float32), second_prob=np.full(n, 0.2, dtype=np.float32),
                   outside_sq=np.zeros(n), has_mask=np.zeros(n, dtype=bool))


def test_scores_by_hand_with_an_answer_outside_the_review_set() -> None:
    # preds  0 1 2 0 -1 ; labels 0 1 1 0 2: original right on 3 of 5
    # corners 0 2 2 -1 -1: flips on samples 1 and 3 (OUTSIDE differs from 0; -1 → -1 is no flip); right on 1 of 5
    records = _records([0, 1, 2, 0, OUTSIDE], [0, 1, 1, 0, 2], {"corners": [0, 2, 2, OUTSIDE, OUTSIDE]})
    scores = compute_scores(records, probes={"corners"})
    assert scores["corners.flip_rate"] == pytest.approx(2 / 5)
    assert scores["corners.accuracy"] == pytest.approx(1 / 5)
    assert scores["corners.accuracy_drop"] == pytest.approx(3 / 5 - 1 / 5)
    assert "border.flip_rate" not in scores  # only the enabled probes
    bounds = intervals.score_interval(records, "corners.flip_rate", confidence=0.95)
    assert bounds.method == "wilson" and bounds.trials == 5
    assert bounds.interval == stats.wilson_interval(2, 5, confidence=0.95)
    drop = intervals.score_interval(records, "corners.accuracy_drop", confidence=0.95)
    assert drop.method == "bootstrap" and drop.interval.low < 0.4 < drop.interval.high


def test_registry_declares_the_nine_scores_with_their_probe() -> None:
    names = known_names(("a",), probes=set(SWAP_VARIANTS))
    for probe in SWAP_VARIANTS:
        for kind, higher in (("flip_rate", False), ("accuracy", True), ("accuracy_drop", False)):
            assert f"{probe}.{kind}" in names
            spec = next(s for s in swap_scores.SCORES if s.name == f"{probe}.{kind}")
            assert (spec.higher_is_better, spec.probe, spec.group) == (higher, probe, "shortcuts")
            assert spec.words and spec.proportion == (kind != "accuracy_drop")
            assert spec.evidence is not None and spec.evidence.anchor == "shortcuts"
            assert spec.range == ((-1.0, 1.0) if kind == "accuracy_drop" else (0.0, 1.0))
    assert not any(n.startswith("border.") for n in known_names(("a",), probes={"background"}))
    with pytest.raises(GateError):
        swap_scores.flip_rate_form("border", _records([0], [0], {}))


OUTPUTS = ("x0", "circle", "x1", "cross", "square", "triangle")  # the shapes classes among six outputs


class CornerReader(nn.Module):
    """Six outputs read from the bottom-right 2×2 pixels only (a 1×1 conv there, averaged)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.features = nn.Conv2d(3, len(OUTPUTS), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[:, :, -2:, -2:].mean(dim=(2, 3))


def _corner_candidate() -> candidate_io.Candidate:
    spec = InputSpec(size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3)
    return candidate_io.Candidate(path="corner.pt", sha256="", arch="custom", model=CornerReader().eval(),
                                  classes=OUTPUTS, input=spec, target_layer="features")


def test_engine_swaps_regions_with_the_recorded_partner(small_set: ReviewSet) -> None:
    # The model reads only the bottom-right 2×2 pixels, which lie in the border band and the corner patch:
    # under either swap its answer is exactly its answer on the partner, OUTSIDE answers included.
    options = engine.EngineOptions(batch_size=16, probes=frozenset(SWAP_VARIANTS), seed=5)
    (run,) = engine.run([_corner_candidate()], small_set, options)
    records = run.records
    partner = records.pairings[SWAP_PARTNER]
    np.testing.assert_array_equal(partner, swaps.swap_partners(small_set.labels(), seed=5))
    for probe in ("border", "corners"):
        np.testing.assert_array_equal(records.probe_preds[probe], records.preds[partner])
    assert (records.preds == OUTSIDE).any()
    # Lighting: by hand, the image shifted to the partner's channel means, then the 2×2 read.
    model = CornerReader().eval()
    images = np.stack([small_set.load_image(i) for i in range(small_set.size)]).astype(np.float64) / 255
    shifted = np.clip(images - images.mean(axis=(1, 2), keepdims=True)
                      + images[partner].mean(axis=(1, 2), keepdims=True), 0, 1)
    x = (torch.from_numpy(shifted).permute(0, 3, 1, 2).float() - 0.5) / 0.25
    with torch.no_grad():
        expected = model(x).argmax(1).numpy()
    to_review = {OUTPUTS.index(c): i for i, c in enumerate(small_set.classes)}
    np.testing.assert_array_equal(records.probe_preds["lighting"], [to_review.get(int(k), OUTSIDE) for k in expected])
    assert not set(records.probe_preds) & {"only_fg", "only_bg", "mixed_same", "mixed_rand"}
    kept = next(iter(records.kept.values()))
    assert set(SWAP_VARIANTS) <= set(kept.variants) and set(SWAP_VARIANTS) <= set(kept.variant_preds)


def test_swap_probes_cost_one_forward_each_and_need_no_masks(small_set: ReviewSet, tmp_path: Path) -> None:
    calls = []
    cand = _corner_candidate()
    cand.model.register_forward_hook(lambda *_: calls.append(1))
    options = engine.EngineOptions(batch_size=16, probes=frozenset({"border", "lighting"}))
    no_masks = _without_any_mask(small_set, tmp_path)
    (run,) = engine.run([cand], no_masks, options)
    batches = -(-small_set.size // 16)
    assert len(calls) == batches * (1 + 2)
    assert set(run.records.probe_preds) == {"border", "lighting"}
    assert (run.records.probe_preds["border"] >= OUTSIDE).all()  # every sample has a variant
    sharded = engine.merge_runs([engine.run([cand], no_masks, options, indices=np.arange(a, b))[0]
                                 for a, b in ((0, 20), (20, no_masks.size))], no_masks, options)
    for probe in ("border", "lighting"):
        np.testing.assert_array_equal(sharded.records.probe_preds[probe], run.records.probe_preds[probe])


def _without_any_mask(small_set: ReviewSet, tmp_path: Path) -> ReviewSet:
    from conftest import without_masks, write_rows

    root = tmp_path / "nomasks"
    return write_rows(root, without_masks(small_set, root, 1))


def test_records_take_and_concat_keep_swap_columns() -> None:
    records = _records([0, 1, 2], [0, 1, 1], {"lighting": [1, 1, 2]})
    records = replace(records, pairings={SWAP_PARTNER: np.array([1, 2, 0])})
    both = Records.concat([records, records.take(np.array([2]))])
    assert both.probe_preds["lighting"].tolist() == [1, 1, 2, 2]
    assert both.pairings[SWAP_PARTNER].tolist() == [1, 2, 0, 0]


def test_swap_partners_framed_from_the_frame_cache_give_the_same_answers(small_set: ReviewSet,
                                                                        tmp_path: Path) -> None:
    options = engine.EngineOptions(batch_size=16, probes=frozenset(SWAP_VARIANTS), seed=2)
    (plain,) = engine.run([_corner_candidate()], small_set, options)
    cached = replace(options, frame_cache=str(tmp_path / "frames"))
    (written,) = engine.run([_corner_candidate()], small_set, cached)
    (read,) = engine.run([_corner_candidate()], small_set, cached)
    assert (written.frames, read.frames) == ("cache-written", "cache-read")
    for probe in SWAP_VARIANTS:
        np.testing.assert_array_equal(written.records.probe_preds[probe], plain.records.probe_preds[probe])
        np.testing.assert_array_equal(read.records.probe_preds[probe], plain.records.probe_preds[probe])

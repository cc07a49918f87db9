"""Decoded batches framed per model geometry: shared between models with the same geometry, masks kept apart."""

from __future__ import annotations

import numpy as np
import torch

from gate.inputs.batches import Batch, Frames, loaded_batches, to_frame
from gate.inputs.preprocess import Geometry
from gate.inputs.review_set import ReviewSet


def _batch() -> Batch:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), rng.integers(0, 256, (10, 4, 3), dtype=np.uint8)]
    mask = np.zeros((6, 8), dtype=bool)
    mask[2:4, 2:6] = True
    void = np.zeros((6, 8), dtype=bool)
    void[0] = True
    return Batch(indices=np.array([3, 7]), sample_ids=("a", "b"), labels=np.array([0, 1]), images=images,
                 masks=[mask, None], voids=[void, None])


def test_frames_are_shared_per_geometry() -> None:
    frames = Frames(_batch(), {}, torch.device("cpu"))
    squash, crop = Geometry(size=(4, 4)), Geometry(size=(4, 4), resize=4)
    assert frames.get(squash) is frames.get(Geometry(size=(4, 4)))  # a second model with this geometry
    assert frames.get(crop) is not frames.get(squash)
    assert frames.get(crop).images.shape == (2, 3, 4, 4)


def test_a_sample_without_a_mask_gets_a_blank_mask_and_is_marked() -> None:
    # Squash 6×8 -> 3×4 (nearest takes rows 0, 2, 4 and columns 0, 2, 4, 6).
    frame = to_frame(_batch(), Geometry(size=(3, 4)), torch.device("cpu"))
    assert frame.has_mask.tolist() == [True, False]
    expected = np.zeros((3, 4), dtype=bool)
    expected[1, 1:3] = True  # source rows 2 (in 2:4) and columns 2, 4 (in 2:6)
    np.testing.assert_array_equal(frame.masks[0].numpy(), expected)
    assert not frame.masks[1].any() and not frame.void[1].any()
    assert frame.void[0].tolist() == [[True] * 4, [False] * 4, [False] * 4]


def test_loaded_batches_come_in_order_with_frames_made_ahead(small_set: ReviewSet) -> None:
    geometry = Geometry(size=(16, 16))
    order = np.array([5, 1, 40, 2, 33, 7, 8])
    partners = {"mixed_same": np.arange(small_set.size)[::-1].copy()}
    for workers in (0, 2):
        loaded = list(loaded_batches(small_set, order, 3, partners, [geometry], workers=workers))
        assert [b.batch.indices.tolist() for b in loaded] == [[5, 1, 40], [2, 33, 7], [8]]
        first = loaded[0]
        # The partner of each masked row is decoded (the reversed set: row i pairs with 47 - i) and framed.
        assert first.partners["mixed_same"].indices.tolist() == [42, 46, 7]
        assert set(first.framed) == {("", geometry), ("mixed_same", geometry)}
        frames = Frames.of(first, torch.device("cpu"))
        assert frames.get(geometry) is frames.get(geometry)
        assert frames.get(geometry).images is first.framed[("", geometry)].images  # no second framing on the CPU
        np.testing.assert_array_equal(frames.get(geometry).images.numpy(),
                                      to_frame(first.batch, geometry).images.numpy())

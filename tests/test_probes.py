from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from gate.engine.probes import (
    mixed,
    only_fg,
    pair_partners,
    paste_object,
    remove_object,
)
from gate.errors import GateError, ReviewSetError

RED = torch.tensor([1.0, 0.0, 0.0])


def scene(height: int, width: int, seed: int = 0) -> Tensor:
    """A textured scene in [0, 0.9]: never exactly the object's red."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(3, height, width, generator=gen) * 0.9


def with_object(image: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask[None], RED[:, None, None], image)


def red_pixels(image: Tensor) -> int:
    return int((image == RED[:, None, None]).all(dim=0).sum())


# --- only_fg / paste_object -------------------------------------------------------------------------------------


def test_only_fg_default_fill_is_mid_grey() -> None:
    images = torch.arange(12, dtype=torch.float32).reshape(1, 3, 2, 2) / 12
    masks = torch.tensor([[[True, False], [False, True]]])
    out = only_fg(images, masks)
    expected = torch.tensor([[[0 / 12, 0.5], [0.5, 3 / 12]], [[4 / 12, 0.5], [0.5, 7 / 12]],
                             [[8 / 12, 0.5], [0.5, 11 / 12]]])
    assert torch.equal(out[0], expected)


@pytest.mark.parametrize(
    ("fill", "expected_fill"),
    [
        (0.0, [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        (torch.tensor([0.1, 0.2, 0.3]), [[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]]),
        (torch.tensor([[0.1, 0.2, 0.3], [0.7, 0.8, 0.9]]), [[0.1, 0.2, 0.3], [0.7, 0.8, 0.9]]),
    ],
    ids=["scalar", "per-channel", "per-image"],
)
def test_only_fg_fill_forms(fill: float | Tensor, expected_fill: list[list[float]]) -> None:
    images = torch.ones(2, 3, 2, 3)
    masks = torch.zeros(2, 2, 3, dtype=torch.bool)
    masks[:, 0, 0] = True
    out = only_fg(images, masks, fill)
    for i in range(2):
        assert torch.equal(out[i, :, 0, 0], torch.ones(3))
        assert torch.allclose(out[i, :, 1, 2], torch.tensor(expected_fill[i]))
        assert torch.allclose(out[i, :, 0, 1], torch.tensor(expected_fill[i]))


def test_paste_object_exact() -> None:
    images = torch.full((2, 3, 2, 2), 1.0)
    scenes = torch.zeros(2, 3, 2, 2)
    scenes[1] = 0.25
    masks = torch.tensor([[[True, False], [False, False]], [[False, True], [True, True]]])
    out = paste_object(images, masks, scenes)
    assert out[0, :, 0, 0].tolist() == [1.0, 1.0, 1.0]
    assert out[0, :, 1, 1].tolist() == [0.0, 0.0, 0.0]
    assert out[1, 0].tolist() == [[0.25, 1.0], [1.0, 1.0]]


def test_paste_object_rejects_wrong_scene_shape() -> None:
    with pytest.raises(GateError, match="scenes shape"):
        paste_object(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.bool), torch.zeros(1, 3, 4, 5))


def test_masks_must_be_bool() -> None:
    with pytest.raises(GateError, match="bool"):
        only_fg(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4))


# --- remove_object -----------------------------------------------------------------------------------------------


def test_remove_object_copies_the_adjacent_patch_on_the_widest_side() -> None:
    # 24×32 image, object near the right edge: the left strip (widest) holds a whole patch.
    mask = torch.zeros(24, 32, dtype=torch.bool)
    mask[8:12, 22:27] = True
    mask[12, 24] = True  # an irregular shape: the box, not the mask, is replaced
    base = scene(24, 32)
    image = with_object(base, mask)
    out = remove_object(image[None], mask[None], dilate=2)[0]
    y0, y1, x0, x1 = 6, 15, 20, 29  # rows 8..12 and cols 22..26, grown by 2
    assert red_pixels(out) == 0
    assert torch.equal(out[:, y0:y1, x0:x1], image[:, y0:y1, x0 - 9 : x0])
    outside = torch.ones(24, 32, dtype=torch.bool)
    outside[y0:y1, x0:x1] = False
    assert torch.equal(out[:, outside], image[:, outside])


def test_remove_object_dilation_is_clipped_at_the_border() -> None:
    mask = torch.zeros(20, 16, dtype=torch.bool)
    mask[0:2, 14:16] = True
    image = with_object(scene(20, 16), mask)
    out = remove_object(image[None], mask[None], dilate=3)[0]
    # Box rows 0..4, cols 11..15; strips left 11, bottom 15: the bottom one holds the 5×5 patch below the box.
    assert torch.equal(out[:, 0:5, 11:16], image[:, 5:10, 11:16])
    assert torch.equal(out[:, :, :11], image[:, :, :11])
    assert torch.equal(out[:, 5:, :], image[:, 5:, :])
    assert red_pixels(out) == 0


def test_remove_object_tiles_the_widest_strip_when_no_patch_fits() -> None:
    # Box rows 0..15 (full height), cols 3..12: strips left 3, right 3, top 0, bottom 0; no 10-wide patch fits.
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[:, 3:13] = True
    image = with_object(scene(16, 16), mask)
    out = remove_object(image[None], mask[None], dilate=0)[0]
    assert red_pixels(out) == 0
    expected_cols = [j % 3 for j in range(10)]  # the left strip (tie with right: left first), repeated
    assert torch.equal(out[:, :, 3:13], image[:, :, expected_cols])
    assert torch.equal(out[:, :, :3], image[:, :, :3])
    assert torch.equal(out[:, :, 13:], image[:, :, 13:])


def test_remove_object_tiles_a_vertical_strip() -> None:
    # Box rows 4..11, cols 0..15 (full width): only the top (4 rows) and bottom (4 rows) strips exist.
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[4:12, :] = True
    image = with_object(scene(16, 16), mask)
    out = remove_object(image[None], mask[None], dilate=0)[0]
    expected_rows = [j % 4 for j in range(8)]  # top strip rows 0..3, repeated
    assert torch.equal(out[:, 4:12, :], image[:, expected_rows, :])
    assert red_pixels(out) == 0


def test_remove_object_box_covering_the_image_gets_the_scene_mean() -> None:
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[0, 0] = mask[7, 7] = True
    image = with_object(scene(8, 8), mask)
    out = remove_object(image[None], mask[None], dilate=0)[0]
    mean = image[:, ~mask].mean(dim=1)
    assert torch.allclose(out, mean[:, None, None].expand(3, 8, 8))


def test_remove_object_empty_mask_and_batch_independence() -> None:
    masks = torch.zeros(3, 20, 20, dtype=torch.bool)
    masks[0, 2:5, 2:5] = True
    masks[2, 14:18, 10:13] = True
    images = torch.stack([with_object(scene(20, 20, seed=i), masks[i]) for i in range(3)])
    out = remove_object(images, masks, dilate=1)
    assert torch.equal(out[1], images[1])  # empty mask: unchanged
    for i in range(3):
        single = remove_object(images[i : i + 1], masks[i : i + 1], dilate=1)
        assert torch.equal(out[i], single[0])
        assert red_pixels(out[i]) == 0
    assert torch.equal(images[0], with_object(scene(20, 20, seed=0), masks[0]))  # input not modified


def test_mixed_pastes_object_on_partner_scene_without_its_object() -> None:
    masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    masks[0, 6:9, 6:9] = True
    partner_masks = torch.zeros(1, 16, 16, dtype=torch.bool)
    partner_masks[0, 1:4, 10:14] = True
    images = with_object(scene(16, 16), masks[0])[None]
    partner = with_object(scene(16, 16, seed=5), partner_masks[0])[None]
    out = mixed(images, masks, partner, partner_masks, dilate=1)
    assert red_pixels(out[0]) == 9  # only this sample's object
    assert torch.equal(out[0][:, masks[0]], images[0][:, masks[0]])
    background = remove_object(partner, partner_masks, dilate=1)
    assert torch.equal(out[0][:, ~masks[0]], background[0][:, ~masks[0]])


# --- pair_partners -----------------------------------------------------------------------------------------------


def test_pair_partners_properties_and_determinism() -> None:
    labels = np.array([0, 0, 0, 1, 1, 2, 0, 1])
    pairs = pair_partners(labels, seed=3)
    again = pair_partners(labels, seed=3)
    assert set(pairs) == {"mixed_same", "mixed_rand"}
    for key in pairs:
        assert pairs[key].dtype == np.int64
        assert pairs[key].shape == labels.shape
        assert np.array_equal(pairs[key], again[key])
    same, rand = pairs["mixed_same"], pairs["mixed_rand"]
    assert np.array_equal(labels[same], labels)
    assert same[5] == 5  # alone in its class
    assert all(same[i] != i for i in range(len(labels)) if i != 5)
    assert np.all(labels[rand] != labels)


def test_pair_partners_seed_changes_pairs() -> None:
    labels = np.repeat(np.arange(4), 10)
    a, b = pair_partners(labels, seed=0), pair_partners(labels, seed=1)
    assert not np.array_equal(a["mixed_same"], b["mixed_same"])
    assert not np.array_equal(a["mixed_rand"], b["mixed_rand"])


def test_pair_partners_uniform_over_samples_not_classes() -> None:
    # Class-0 samples pick among 1 sample of class 1 and 3 of class 2: sample 4000 about 1/4 of the time.
    labels = np.array([0] * 4000 + [1] + [2] * 3)
    rand = pair_partners(labels, seed=0)["mixed_rand"][:4000]
    assert abs(np.mean(rand == 4000) - 0.25) < 0.03
    same = pair_partners(labels, seed=0)["mixed_same"][4001:]
    assert set(same.tolist()) <= {4001, 4002, 4003}


def test_pair_partners_single_class_is_an_error() -> None:
    with pytest.raises(ReviewSetError, match="two classes"):
        pair_partners(np.array([1, 1, 1]), seed=0)

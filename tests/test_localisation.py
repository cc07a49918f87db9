"""Per-sample localisation numbers against the Quantus definitions, on hand-made 4×4 maps and masks.

Quantus (not installed; definitions in shared/anchors.md):
- relevance mass accuracy (energy): Σ a·s / Σ a
- pointing game: any pixel at the map's maximum lies in the mask (ties count as hits)
- relevance rank accuracy: |top-K(a) ∩ s| / K, K = |s|
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gate.engine.localisation import energy_in_mask, localise, pointing_hit, rank_accuracy
from gate.metrics.registry import compute_scores
from gate.records import Records

# Map 0: peaked on the object (a centre 2×2 mask).
CAM_ON = [[0.5, 0, 0, 0],
          [0, 4, 2, 0],
          [0, 2, 1, 0],
          [0, 0, 0, 0]]
MASK_CENTRE = [[0, 0, 0, 0],
               [0, 1, 1, 0],
               [0, 1, 1, 0],
               [0, 0, 0, 0]]
# Map 1: the maximum is on the scene; the object is the left column.
CAM_OFF = [[1.0, 0, 0, 0],
           [1.5, 0.7, 0, 0],
           [0.8, 0, 0, 5],
           [0.6, 0, 0, 2]]
MASK_LEFT = [[1, 0, 0, 0],
             [1, 0, 0, 0],
             [1, 0, 0, 0],
             [1, 0, 0, 0]]
# Map 2: two equal maxima, one on the object (bottom-right pixel) and one off it.
CAM_TIE = [[3, 0, 0, 0],
           [0, 1, 0, 0],
           [0, 0, 0, 0],
           [0, 0, 0, 3]]
MASK_CORNER = [[0, 0, 0, 0],
               [0, 0, 0, 0],
               [0, 0, 1, 1],
               [0, 0, 1, 1]]
ZERO = [[0] * 4] * 4


def batch(*pairs: tuple[list[list[float]], list[list[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    cams = torch.tensor([p[0] for p in pairs], dtype=torch.float32)
    masks = torch.tensor([p[1] for p in pairs], dtype=torch.bool)
    return cams, masks


def test_energy_is_relevance_mass_accuracy() -> None:
    cams, masks = batch((CAM_ON, MASK_CENTRE), (CAM_OFF, MASK_LEFT), (CAM_TIE, MASK_CORNER))
    energy = energy_in_mask(cams, masks)
    assert energy.dtype == torch.float64
    expected = [(4 + 2 + 2 + 1) / 9.5, (1.0 + 1.5 + 0.8 + 0.6) / 11.6, 3 / 7]
    assert energy.tolist() == pytest.approx(expected, abs=1e-7)


def test_pointing_game_counts_ties_as_hits() -> None:
    cams, masks = batch((CAM_ON, MASK_CENTRE), (CAM_OFF, MASK_LEFT), (CAM_TIE, MASK_CORNER))
    assert pointing_hit(cams, masks).tolist() == [1.0, 0.0, 1.0]


def test_rank_accuracy_uses_k_equal_to_mask_size() -> None:
    # CAM_ON: top-4 are 4, 2, 2, 1, all inside.  CAM_OFF: top-4 are 5, 2 (scene), 1.5, 1.0 (object).
    cams, masks = batch((CAM_ON, MASK_CENTRE), (CAM_OFF, MASK_LEFT))
    assert rank_accuracy(cams, masks).tolist() == [1.0, 0.5]
    # K = 1: only the single top pixel counts (the 4 at [1, 1]), not the other object pixels.
    one_pixel = torch.zeros(2, 4, 4, dtype=torch.bool)
    one_pixel[0, 1, 1] = True
    one_pixel[1, 2, 2] = True  # holds 1, the fourth-highest value
    two_maps = torch.tensor([CAM_ON, CAM_ON], dtype=torch.float32)
    assert rank_accuracy(two_maps, one_pixel).tolist() == [1.0, 0.0]


def test_uniform_map_scores_the_mask_area_and_lift_one() -> None:
    cams, masks = batch(([[1.0] * 4] * 4, MASK_CORNER))
    loc = localise(cams, masks)
    assert loc.energy.item() == pytest.approx(4 / 16, abs=1e-15)
    assert loc.mask_area.item() == 4 / 16
    assert loc.pointing_hit.item() == 1.0  # every pixel is a maximum: a tie, so a hit


def test_map_is_not_min_max_normalised() -> None:
    # Adding a constant would not change a min-max-normalised map; it must change the energy.
    cams, masks = batch((CAM_ON, MASK_CENTRE))
    shifted = localise(cams + 1.0, masks).energy.item()
    assert shifted == pytest.approx((9 + 4) / (9.5 + 16), abs=1e-7)
    assert shifted != pytest.approx(localise(cams, masks).energy.item())


def test_empty_mask_and_zero_map_are_excluded() -> None:
    empty = [[0] * 4] * 4
    cams, masks = batch((CAM_ON, MASK_CENTRE), (CAM_ON, empty), (ZERO, MASK_LEFT), (CAM_OFF, MASK_LEFT))
    loc = localise(cams, masks)
    for values in (loc.energy, loc.pointing_hit, loc.rank_accuracy):
        assert [math.isnan(v) for v in values.tolist()] == [False, True, True, False]
    assert loc.mask_area.tolist() == [0.25, 0.0, 0.25, 0.25]
    assert loc.energy[0].item() == pytest.approx(9 / 9.5)
    assert loc.pointing_hit[3].item() == 0.0


def test_localise_feeds_the_alignment_scores() -> None:
    empty = [[0] * 4] * 4
    cams, masks = batch(
        (CAM_ON, MASK_CENTRE), (CAM_OFF, MASK_LEFT), (CAM_ON, MASK_LEFT), (CAM_ON, empty), (ZERO, MASK_LEFT)
    )
    loc = localise(cams, masks)
    n = 5
    records = Records(
        classes=("x", "y"), ids=tuple(f"s{i}" for i in range(n)), labels=np.zeros(n, dtype=np.int64),
        probs=np.tile(np.array([[0.9, 0.1]], dtype=np.float32), (n, 1)),
        energy=loc.energy.numpy(), mask_area=loc.mask_area.numpy(),
        pointing_hit=loc.pointing_hit.numpy(), rank_accuracy=loc.rank_accuracy.numpy(),
    )
    scores = compute_scores(records)
    energies = [9 / 9.5, 3.9 / 11.6, 0.5 / 9.5]  # the third map misses the left column almost entirely
    lifts = [e / 0.25 for e in energies]  # 3.79, 1.34, 0.21
    assert scores["alignment.energy"] == pytest.approx(sum(energies) / 3, abs=1e-7)
    assert scores["alignment.lift"] == pytest.approx(sum(lifts) / 3, abs=1e-6)
    assert scores["alignment.pointing_game"] == pytest.approx(1 / 3)
    assert scores["alignment.rank_accuracy"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    assert scores["alignment.off_object_rate"] == pytest.approx(1 / 3)
    assert scores["alignment.coverage"] == pytest.approx(3 / 5)
    assert scores["alignment.excluded"] == 2.0


def test_void_pixels_are_left_out_and_a_missing_mask_gives_nan() -> None:
    # The map's maximum (5) lies on a void pixel; the object is the left column.
    cam = torch.tensor([[[1.0, 0, 5], [2, 0, 0]]] * 2)
    mask = torch.tensor([[[1, 0, 0], [1, 0, 0]]] * 2, dtype=torch.bool)
    void = torch.tensor([[[0, 0, 1], [0, 0, 0]]] * 2, dtype=torch.bool)
    plain = localise(cam[:1], mask[:1])
    assert plain.energy.item() == pytest.approx(3 / 8) and plain.pointing_hit.item() == 0.0
    assert plain.rank_accuracy.item() == pytest.approx(0.5) and plain.mask_area.item() == pytest.approx(2 / 6)
    local = localise(cam, mask, void, has_mask=torch.tensor([True, False]))
    # Over the 5 non-void pixels: mass 3, all on the object; area 2/5; peak 2 on the object; top-2 = {2, 1}.
    assert local.energy[0].item() == pytest.approx(1.0)
    assert local.mask_area[0].item() == pytest.approx(2 / 5)
    assert local.pointing_hit[0].item() == 1.0 and local.rank_accuracy[0].item() == 1.0
    for column in (local.energy, local.mask_area, local.pointing_hit, local.rank_accuracy):
        assert math.isnan(column[1].item())  # no mask at all: left out, area included


def _reference(cam: torch.Tensor, mask: torch.Tensor, void: torch.Tensor, present: torch.Tensor) -> np.ndarray:
    """The per-sample float64 loop on the host (Quantus' definitions, one argsort per sample): [B, 4]."""
    out = np.full((cam.shape[0], 4), np.nan)
    for i in range(cam.shape[0]):
        keep = ~void[i].flatten().numpy()
        a = cam[i].flatten().double().numpy()[keep]
        s = (mask[i].flatten().numpy() & ~void[i].flatten().numpy())[keep]
        if not present[i]:
            continue
        out[i, 1] = s.sum() / max(keep.sum(), 1)
        if not s.any() or a.sum() <= 0:
            continue
        out[i, 0] = (a * s).sum() / a.sum()
        out[i, 2] = float(s[a >= a.max()].any())
        top = np.argsort(-a, kind="stable")[: int(s.sum())]
        out[i, 3] = s[top].sum() / s.sum()
    return out


@pytest.mark.parametrize("levels", [4, 1_000_000], ids=["many-ties", "few-ties"])
def test_batched_localise_equals_the_per_sample_float64_loop(levels: int) -> None:
    gen = torch.Generator().manual_seed(levels)
    count, side = 12, 56
    # Quantised maps give many ties (the stable order decides the top-K); some rows all zero, one mask empty.
    cam = torch.randint(0, levels, (count, side, side), generator=gen).float() / levels
    cam[:, :20] *= torch.rand(count, 1, 1, generator=gen) < 0.5
    cam[3] = 0.0
    mask = torch.rand(count, side, side, generator=gen) < torch.rand(count, 1, 1, generator=gen)
    mask[5] = False
    void = torch.rand(count, side, side, generator=gen) < 0.05
    present = torch.rand(count, generator=gen) < 0.85
    local = localise(cam, mask, void, present)
    got = torch.stack([local.energy, local.mask_area, local.pointing_hit, local.rank_accuracy], dim=1)
    assert got.dtype == torch.float64 and got.device.type == "cpu"
    expected = _reference(cam, mask, void, present)
    np.testing.assert_array_equal(np.isnan(got.numpy()), np.isnan(expected))
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-12)
    assert np.isfinite(expected[:, 3]).sum() >= 6  # most rows are scored, not NaN
    # float32 maps give the same numbers as the same maps in float64 (peaks and ranks: to the bit)
    wide = localise(cam.double(), mask, void, present)
    np.testing.assert_allclose(wide.energy.numpy(), local.energy.numpy(), rtol=0, atol=1e-12)
    assert torch.equal(torch.nan_to_num(wide.rank_accuracy, -1), torch.nan_to_num(local.rank_accuracy, -1))
    assert torch.equal(torch.nan_to_num(wide.pointing_hit, -1), torch.nan_to_num(local.pointing_hit, -1))

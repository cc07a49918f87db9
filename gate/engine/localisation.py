"""Per-sample localisation numbers for a batch of maps and masks (Quantus definitions).

Maps are the ReLU'd Grad-CAM as is (never min-max normalised): sums of the map
are what energy measures. A sample is excluded (NaN) when it has no mask, its
mask is empty or its map is all zero, and counted by ``alignment.coverage``.
Void pixels (e.g. VOC's 255 border) are left out of every number.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Localisation:
    """Per-sample numbers for one batch (float64 tensors on the CPU, NaN where excluded)."""

    energy: Tensor
    mask_area: Tensor
    pointing_hit: Tensor
    rank_accuracy: Tensor


def energy_in_mask(cam: Tensor, mask: Tensor) -> Tensor:
    """Relevance mass accuracy: Σ cam·mask / Σ cam per sample."""
    cam = cam.double().flatten(1)
    total = cam.sum(1)
    inside = (cam * mask.flatten(1)).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.full_like(total, float("nan")))


def pointing_hit(cam: Tensor, mask: Tensor) -> Tensor:
    """1.0 when a maximum of the map lies in the mask (ties count as hits), else 0.0."""
    flat = cam.double().flatten(1)
    peak = flat.max(1, keepdim=True).values
    at_peak = flat >= peak
    return (at_peak & mask.flatten(1)).any(1).double()


def rank_accuracy(cam: Tensor, mask: Tensor) -> Tensor:
    """Relevance rank accuracy: |top-K(cam) ∩ mask| / K with K = |mask| (stable order for ties)."""
    flat = cam.double().flatten(1)
    flat_mask = mask.flatten(1)
    out = torch.empty(flat.shape[0], dtype=torch.float64)
    for i in range(flat.shape[0]):
        k = int(flat_mask[i].sum())
        if k == 0:
            out[i] = float("nan")
            continue
        top = torch.argsort(flat[i], descending=True, stable=True)[:k]
        out[i] = flat_mask[i, top].double().sum() / k
    return out


def localise(cam: Tensor, mask: Tensor, void: Tensor | None = None, has_mask: Tensor | None = None) -> Localisation:
    """All per-sample localisation numbers for maps ``cam`` [B,H,W] ≥ 0 and masks ``mask`` bool [B,H,W].

    ``void`` (bool [B,H,W], True = void, e.g. VOC's 255 border) pixels are left out: energy, area, the
    pointing game and the ranking are taken over the other pixels only. ``has_mask`` (bool [B]) marks the
    samples that have a mask at all; the others get NaN everywhere, area included.
    """
    cam = cam.detach().cpu().double()
    mask = mask.detach().cpu().bool()
    keep = torch.ones_like(mask) if void is None else ~void.detach().cpu().bool()
    present = torch.ones(mask.shape[0], dtype=torch.bool) if has_mask is None else has_mask.detach().cpu().bool()
    obj = mask & keep
    # Void pixels carry no map mass and can never be the peak or enter the top-K.
    cam_kept = torch.where(keep, cam, torch.zeros_like(cam))
    cam_ranked = torch.where(keep, cam, torch.full_like(cam, -torch.inf))
    valid = obj.flatten(1).any(1) & (cam_kept.flatten(1).sum(1) > 0) & present
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    kept_pixels = keep.flatten(1).double().sum(1)
    area = obj.flatten(1).double().sum(1) / kept_pixels.clamp_min(1)
    return Localisation(
        energy=torch.where(valid, energy_in_mask(cam_kept, obj), nan),
        mask_area=torch.where(present & (kept_pixels > 0), area, nan),
        pointing_hit=torch.where(valid, pointing_hit(cam_ranked, obj), nan),
        rank_accuracy=torch.where(valid, rank_accuracy(cam_ranked, obj), nan),
    )

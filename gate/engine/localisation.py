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
    """Relevance mass accuracy: Σ cam·mask / Σ cam per sample (float64, on the maps' device)."""
    # Sums of ~50k float32 values: float64 keeps them to 1e-12, float32 only to about 1e-6 of the total.
    cam = cam.double().flatten(1)
    total = cam.sum(1)
    inside = torch.where(mask.flatten(1), cam, torch.zeros_like(cam)).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.full_like(total, float("nan")))


def pointing_hit(cam: Tensor, mask: Tensor) -> Tensor:
    """1.0 when a maximum of the map lies in the mask (ties count as hits), else 0.0 (float64)."""
    # Comparisons in the map's own dtype: float32 → float64 is exact, so the peaks are the same pixels.
    flat = cam.flatten(1)
    peak = flat.max(1, keepdim=True).values
    at_peak = flat >= peak
    return (at_peak & mask.flatten(1)).any(1).double()


def rank_accuracy(cam: Tensor, mask: Tensor) -> Tensor:
    """Relevance rank accuracy: |top-K(cam) ∩ mask| / K with K = |mask| (stable order for ties), float64.

    One stable descending sort per batch: the object pixels among the first K of each row are the running
    count of mask pixels in sorted order, read at K - 1. Sorted in the map's own dtype (the same order as
    float64's: the conversion is exact and monotone).
    """
    flat = cam.flatten(1)
    flat_mask = mask.flatten(1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    hits = flat_mask.gather(1, order).cumsum(1)
    k = flat_mask.sum(1)
    at_k = hits.gather(1, (k - 1).clamp_min(0)[:, None])[:, 0]
    return torch.where(k > 0, at_k.double() / k.clamp_min(1).double(),
                       torch.full(k.shape, float("nan"), dtype=torch.float64, device=k.device))


def localise(cam: Tensor, mask: Tensor, void: Tensor | None = None, has_mask: Tensor | None = None) -> Localisation:
    """All per-sample localisation numbers for maps ``cam`` [B,H,W] ≥ 0 and masks ``mask`` bool [B,H,W].

    ``void`` (bool [B,H,W], True = void, e.g. VOC's 255 border) pixels are left out: energy, area, the
    pointing game and the ranking are taken over the other pixels only. ``has_mask`` (bool [B]) marks the
    samples that have a mask at all; the others get NaN everywhere, area included. Computed on the maps'
    device, batched; only the four [B] results come to the host.
    """
    cam = cam.detach()
    if cam.dtype not in (torch.float32, torch.float64):
        cam = cam.float()  # bf16/fp16 maps: ranked and summed in float32 at least
    device = cam.device
    mask = mask.detach().to(device).bool()
    keep = torch.ones_like(mask) if void is None else ~void.detach().to(device).bool()
    present = (torch.ones(mask.shape[0], dtype=torch.bool, device=device) if has_mask is None
               else has_mask.detach().to(device).bool())
    obj = mask & keep
    # Void pixels carry no map mass and can never be the peak or enter the top-K.
    cam_kept = torch.where(keep, cam, torch.zeros_like(cam))
    cam_ranked = torch.where(keep, cam, torch.full_like(cam, -torch.inf))
    energy = energy_in_mask(cam_kept, obj)
    valid = obj.flatten(1).any(1) & (cam_kept.flatten(1) > 0).any(1) & present
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=device)
    kept_pixels = keep.flatten(1).sum(1).double()
    area = obj.flatten(1).sum(1).double() / kept_pixels.clamp_min(1)
    numbers = torch.stack([
        torch.where(valid, energy, nan),
        torch.where(present & (kept_pixels > 0), area, nan),
        torch.where(valid, pointing_hit(cam_ranked, obj), nan),
        torch.where(valid, rank_accuracy(cam_ranked, obj), nan),
    ]).cpu()  # one copy to the host per batch
    return Localisation(energy=numbers[0], mask_area=numbers[1], pointing_hit=numbers[2], rank_accuracy=numbers[3])

"""Swap probes: shortcuts found without masks (border, corners, lighting).

Like Mixed-Rand, each probe *swaps* a suspect region or statistic with that of a
partner image (seeded, preferably of another class), so the input stays in the
distribution the model was trained on: removing a frame that every training
image carried is itself out of distribution, and honest models flip on it.

- ``border``: the outer band (``BORDER_SHARE`` of the shorter side) from the partner;
- ``corners``: the four corner patches (``CORNER_SHARE`` of each side) and the
  bottom-centre strip between the bottom ones (captions, watermarks) from the partner;
- ``lighting``: the partner's per-channel means (colour cast and exposure) in place
  of the image's own.

Pure and batched: images are float [B, 3, H, W] in [0, 1] (before normalisation),
in the frame the model saw, on any device; nothing here runs a model.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from gate.errors import GateError, ReviewSetError
from gate.records import SWAP_VARIANTS

SWAP_PROBES: tuple[str, ...] = SWAP_VARIANTS
BORDER_SHARE = 0.06  # of the shorter side: letterboxes, scanner edges, frames
CORNER_SHARE = 0.15  # of each side: tokens, rulers, timestamps, logos


def border_region(height: int, width: int, share: float = BORDER_SHARE) -> Tensor:
    """bool [H, W]: the outer band, ``ceil(share × min(H, W))`` pixels wide (at least 1)."""
    _check_share(share, 0.5)
    band = max(1, math.ceil(share * min(height, width)))
    region = torch.ones(height, width, dtype=torch.bool)
    region[band:height - band, band:width - band] = False
    return region


def corner_region(height: int, width: int, share: float = CORNER_SHARE) -> Tensor:
    """bool [H, W]: four corner patches of ``ceil(share × H) × ceil(share × W)`` and the bottom-centre strip.

    The strip is as high as the patches and spans the middle third of the width, where captions sit.
    """
    _check_share(share, 0.5)
    ph, pw = max(1, math.ceil(share * height)), max(1, math.ceil(share * width))
    region = torch.zeros(height, width, dtype=torch.bool)
    for rows in (slice(0, ph), slice(height - ph, height)):
        region[rows, :pw] = True
        region[rows, width - pw:] = True
    region[height - ph:, width // 3: width - width // 3] = True
    return region


def swap_region(images: Tensor, partners: Tensor, region: Tensor) -> Tensor:
    """``images`` with the pixels in ``region`` [H, W] taken from ``partners`` (shaped like images)."""
    _check_pair(images, partners)
    if region.shape != images.shape[-2:] or region.dtype != torch.bool:
        raise GateError(f"region must be bool {tuple(images.shape[-2:])}, got {region.dtype} {tuple(region.shape)}")
    return torch.where(region.to(images.device), partners, images)


def swap_lighting(images: Tensor, partners: Tensor) -> Tensor:
    """``images`` shifted so that each channel's mean is its partner's (clipped to [0, 1])."""
    _check_pair(images, partners)
    own = images.mean(dim=(2, 3), keepdim=True)
    theirs = partners.mean(dim=(2, 3), keepdim=True)
    return (images - own + theirs).clamp(0.0, 1.0)


def swap(probe: str, images: Tensor, partners: Tensor) -> Tensor:
    """The ``probe`` variant (one of ``SWAP_PROBES``) of ``images`` with their ``partners``."""
    height, width = images.shape[-2:]
    if probe == "border":
        return swap_region(images, partners, border_region(height, width))
    if probe == "corners":
        return swap_region(images, partners, corner_region(height, width))
    if probe == "lighting":
        return swap_lighting(images, partners)
    raise GateError(f"unknown swap probe {probe!r} (expected one of {list(SWAP_PROBES)})")


def swap_partners(labels: np.ndarray, *, seed: int) -> np.ndarray:
    """One seeded partner per sample, int64 [N]: a sample of another class, uniformly among all of them.

    With a single class, another sample of it (the sample itself when it is alone): the probes still test
    the swap, they only lose the partner's contrary answer. The same labels and seed give the same pairs on
    every rank.
    """
    y = np.asarray(labels, dtype=np.int64)
    if y.ndim != 1 or y.size == 0:
        raise ReviewSetError("swap probes need at least one sample", field="labels")
    rng = np.random.default_rng([seed, 26])
    out = np.empty(y.size, dtype=np.int64)
    classes = np.unique(y)
    for c in classes:
        members = np.flatnonzero(y == c)
        others = np.flatnonzero(y != c)
        if others.size:
            out[members] = others[rng.integers(0, others.size, size=members.size)]
        elif members.size > 1:
            shift = rng.integers(1, members.size, size=members.size)
            out[members] = members[(np.arange(members.size) + shift) % members.size]
        else:
            out[members] = members
    return out


def _check_pair(images: Tensor, partners: Tensor) -> None:
    if images.dim() != 4 or images.shape[1] != 3 or partners.shape != images.shape:
        raise GateError(f"expected images and partners [B,3,H,W] of one shape, got {tuple(images.shape)} and "
                        f"{tuple(partners.shape)}")


def _check_share(share: float, most: float) -> None:
    if not 0.0 < share < most:
        raise GateError(f"expected a share in (0, {most}), got {share}")

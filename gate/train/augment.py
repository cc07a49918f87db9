"""Batch transforms of the recipes: crop and flip, CutMix, label smoothing and bgmix (objects on other scenes)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gate.engine.probes import dilated_box

PAD = 4


BOX_DILATION = 2


def cutmix_box(lam: float, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """The CutMix box ``(x0, y0, x1, y1)`` (half-open) of area about ``(1 - lam)``, centred at a random pixel.

    The box is clipped to the image, so its true area can be smaller; callers must
    recompute λ from the clipped box (see :func:`cutmix_batch`).
    """
    cut = math.sqrt(1.0 - lam)
    cut_w, cut_h = int(width * cut), int(height * cut)
    cx, cy = int(rng.integers(width)), int(rng.integers(height))
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    return x0, y0, x1, y1


def cutmix_batch(
    x: Tensor, y: Tensor, rng: np.random.Generator, alpha: float = 1.0
) -> tuple[Tensor, Tensor, Tensor, float]:
    """Paste a box from a shuffled copy of the batch; returns ``(mixed, y_a, y_b, lam)``.

    ``lam`` is the share of pixels still from the image's own sample, so the loss
    is ``lam * CE(y_a) + (1 - lam) * CE(y_b)``.
    """
    lam = float(rng.beta(alpha, alpha))
    perm = torch.from_numpy(np.asarray(rng.permutation(x.shape[0]), dtype=np.int64))
    height, width = x.shape[-2], x.shape[-1]
    x0, y0, x1, y1 = cutmix_box(lam, height, width, rng)
    mixed = x.clone()
    mixed[..., y0:y1, x0:x1] = x[perm][..., y0:y1, x0:x1]
    lam = 1.0 - (x1 - x0) * (y1 - y0) / (height * width)
    return mixed, y, y[perm], lam


def smooth_targets(labels: Tensor, num_classes: int, smoothing: float) -> Tensor:
    """Label-smoothed one-hot targets: ``1 - smoothing + smoothing / K`` on the label, ``smoothing / K`` elsewhere."""
    one_hot = F.one_hot(labels.long(), num_classes).to(torch.float32)
    return one_hot * (1.0 - smoothing) + smoothing / num_classes


def bgmix_batch(images: Tensor, masks: Tensor, rng: np.random.Generator) -> Tensor:
    """Paste each image's object onto another batch image's scene, that image's own object removed (Only-BG-T).

    ``images`` [B, C, H, W] (any dtype), ``masks`` bool [B, H, W]. Partners follow
    a random cycle, so no image keeps its own scene when B > 1.
    """
    count = images.shape[0]
    order = rng.permutation(count)
    partner = np.empty(count, dtype=np.int64)
    partner[order] = np.roll(order, -1)
    out = images.clone()
    for i in range(count):
        j = int(partner[i])
        scene = remove_object(images[j], masks[j], rng)
        out[i] = torch.where(masks[i], images[i], scene)
    return out


def remove_object(image: Tensor, mask: Tensor, rng: np.random.Generator, dilation: int = BOX_DILATION) -> Tensor:
    """Only-BG-T: fill the object's box (dilated) with a same-size scene patch from outside it, else tile a strip.

    Filling only the mask would leave the silhouette, which a shape-reading model
    still recognises; the whole box goes.
    """
    height, width = mask.shape
    box = dilated_box(mask.any(dim=1).numpy(), mask.any(dim=0).numpy(), dilation, height, width)
    if box is None:
        return image.clone()
    y0, y1, x0, x1 = box
    out = image.clone()
    out[:, y0:y1, x0:x1] = _scene_patch(image, box, rng)
    return out


def _scene_patch(image: Tensor, box: tuple[int, int, int, int], rng: np.random.Generator) -> Tensor:
    y0, y1, x0, x1 = box
    bh, bw = y1 - y0, x1 - x0
    height, width = image.shape[-2:]
    py = np.arange(height - bh + 1)[:, None]
    px = np.arange(width - bw + 1)[None, :]
    outside = (px + bw <= x0) | (px >= x1) | (py + bh <= y0) | (py >= y1)
    spots = np.flatnonzero(outside)
    if len(spots):
        top, left = divmod(int(spots[rng.integers(len(spots))]), outside.shape[1])
        return image[:, top:top + bh, left:left + bw]
    # No patch fits: tile the thickest strip of scene beside the box.
    strips = [image[:, :, :x0], image[:, :, x1:], image[:, :y0, :], image[:, y1:, :]]
    strip = max(strips, key=lambda s: min(s.shape[-2], s.shape[-1]))
    if strip.numel() == 0:  # the box is the whole image: nothing of the scene is left
        return image.to(torch.float32).mean(dim=(1, 2), keepdim=True).to(image.dtype).expand(-1, bh, bw)
    reps = (1, math.ceil(bh / strip.shape[-2]), math.ceil(bw / strip.shape[-1]))
    return strip.repeat(*reps)[:, :bh, :bw]


def random_crop_flip(x: Tensor, rng: np.random.Generator, pad: int = PAD) -> Tensor:
    """Per-sample random crop from a ``pad``-pixel reflect-padded copy, then a horizontal flip with p=0.5."""
    count, height, width = x.shape[0], x.shape[-2], x.shape[-1]
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    offsets = rng.integers(0, 2 * pad + 1, size=(count, 2))
    flips = rng.random(count) < 0.5
    crops = [padded[i, :, oy:oy + height, ox:ox + width] for i, (oy, ox) in enumerate(offsets)]
    out = torch.stack(crops)
    if flips.any():
        index = torch.from_numpy(np.flatnonzero(flips))
        out[index] = out[index].flip(-1)
    return out

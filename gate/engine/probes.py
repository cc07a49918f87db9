"""Counterfactual probes built from object masks (the sanity check's randomised copies: gate.engine.sanity).

Background probes follow Xiao et al. 2020 ("Noise or Signal", ImageNet-9): the
object on a flat fill (Only-FG), the object removed Only-BG-T style (its
bounding box filled with scene from outside the box, so no silhouette is left),
and the object pasted on another sample's object-free scene (Mixed-Same /
Mixed-Rand).

Image functions are pure and batched: images are float [B, 3, H, W] in [0, 1]
(before normalisation), masks bool [B, H, W], on any device; nothing here runs a
model.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gate.errors import GateError, ReviewSetError

# Mid grey: carries no colour of any scene. A per-image mean scene colour would
# leak the scene (the very cue the probe removes) to a model that reads it.
DEFAULT_FILL = 0.5

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open)


def only_fg(images: Tensor, masks: Tensor, fill: float | Tensor | None = None) -> Tensor:
    """The object on a flat fill, the "showroom test"; the scene becomes ``fill`` (default mid grey 0.5).

    ``fill`` is a number, a per-channel colour [3], or a per-image colour [B, 3].
    """
    _check_batch(images, masks)
    value = DEFAULT_FILL if fill is None else fill
    flat = torch.as_tensor(value, dtype=images.dtype, device=images.device)
    if flat.dim() == 1:
        flat = flat.view(1, -1, 1, 1)
    elif flat.dim() == 2:
        flat = flat.view(flat.shape[0], flat.shape[1], 1, 1)
    return torch.where(masks[:, None], images, flat.expand_as(images))


def paste_object(images: Tensor, masks: Tensor, scenes: Tensor) -> Tensor:
    """Object pixels of ``images[i]`` (where ``masks[i]``) over ``scenes[i]``; scenes shaped like images."""
    _check_batch(images, masks)
    if scenes.shape != images.shape:
        raise GateError(f"scenes shape {tuple(scenes.shape)} differs from images shape {tuple(images.shape)}")
    return torch.where(masks[:, None], images, scenes)


def mixed(images: Tensor, masks: Tensor, partner_images: Tensor, partner_masks: Tensor, dilate: int = 3) -> Tensor:
    """Mixed-Same / Mixed-Rand: each object pasted on its partner's scene with the partner's object removed."""
    return paste_object(images, masks, remove_object(partner_images, partner_masks, dilate=dilate))


def remove_object(images: Tensor, masks: Tensor, dilate: int = 3) -> Tensor:
    """Only-BG-T: fill each object's bounding box (grown by ``dilate`` px) with scene from outside the box.

    The box is filled with the same-size patch right next to it (the nearest
    scene, so the texture matches), taken from the widest free strip that holds
    a whole patch (ties: left, right, top, bottom); when no strip does, with
    tiles of the widest strip's pixels beside the box, repeated across it. A box
    that covers the whole image gets the mean colour of the non-object pixels.
    An empty mask leaves the image unchanged.
    """
    _check_batch(images, masks)
    if dilate < 0:
        raise GateError(f"dilate must be >= 0, got {dilate}")
    height, width = images.shape[-2:]
    # Two small host copies per batch instead of one sync per image.
    rows = masks.any(dim=2).cpu().numpy()
    cols = masks.any(dim=1).cpu().numpy()
    out = images.clone()
    for i in range(images.shape[0]):
        box = dilated_box(rows[i], cols[i], dilate, height, width)
        if box is not None:
            _fill_box(out[i], images[i], masks[i], box)
    return out


def _check_batch(images: Tensor, masks: Tensor) -> None:
    shapes_ok = images.dim() == 4 and masks.dim() == 3 and images.shape[2:] == masks.shape[1:]
    shapes_ok = shapes_ok and images.shape[0] == masks.shape[0]
    if not shapes_ok:
        raise GateError(f"expected images [B,C,H,W] and masks [B,H,W], got {tuple(images.shape)}, {tuple(masks.shape)}")
    if masks.dtype != torch.bool:
        raise GateError(f"masks must be bool, got {masks.dtype}")


def dilated_box(rows: np.ndarray, cols: np.ndarray, dilate: int, height: int, width: int) -> Box | None:
    """The object's bounding box ``(y0, y1, x0, x1)``, half-open, grown by ``dilate`` px and clipped.

    ``rows``/``cols`` say which rows and columns hold object pixels; None when there are none.
    """
    ys = np.flatnonzero(rows)
    xs = np.flatnonzero(cols)
    if ys.size == 0:
        return None
    y0, y1 = max(int(ys[0]) - dilate, 0), min(int(ys[-1]) + 1 + dilate, height)
    x0, x1 = max(int(xs[0]) - dilate, 0), min(int(xs[-1]) + 1 + dilate, width)
    return y0, y1, x0, x1


def _strips(box: Box, height: int, width: int) -> list[tuple[str, int]]:
    """Free strips beside the box, widest first; ties keep the order left, right, top, bottom."""
    y0, y1, x0, x1 = box
    strips = [("left", x0), ("right", width - x1), ("top", y0), ("bottom", height - y1)]
    return sorted(strips, key=lambda s: -s[1])


def _fill_box(out: Tensor, image: Tensor, mask: Tensor, box: Box) -> None:
    """Write the filled box of ``image`` into ``out`` (a view of the output batch)."""
    y0, y1, x0, x1 = box
    height, width = image.shape[-2:]
    h, w = y1 - y0, x1 - x0
    strips = [s for s in _strips(box, height, width) if s[1] > 0]
    if not strips:
        out[:, y0:y1, x0:x1] = _scene_mean(image, mask)[:, None, None]
        return
    fitting = [s for s in strips if s[1] >= (w if s[0] in ("left", "right") else h)]
    side, size = fitting[0] if fitting else strips[0]
    rows, cols = _source_index(side, size, box, image.device)
    out[:, y0:y1, x0:x1] = image[:, rows[:, None], cols[None, :]]


def _source_index(side: str, size: int, box: Box, device: torch.device) -> tuple[Tensor, Tensor]:
    """Row and column indices of the scene copied into the box: a whole patch if it fits, else tiles."""
    y0, y1, x0, x1 = box
    h, w = y1 - y0, x1 - x0
    rows = torch.arange(y0, y1, device=device)
    cols = torch.arange(x0, x1, device=device)
    # Tiles repeat the strip's pixels nearest the box; a strip at least as wide as the box gives one whole patch.
    if side == "left":
        cols = x0 - min(size, w) + torch.arange(w, device=device) % min(size, w)
    elif side == "right":
        cols = x1 + torch.arange(w, device=device) % min(size, w)
    elif side == "top":
        rows = y0 - min(size, h) + torch.arange(h, device=device) % min(size, h)
    else:
        rows = y1 + torch.arange(h, device=device) % min(size, h)
    return rows, cols


def _scene_mean(image: Tensor, mask: Tensor) -> Tensor:
    scene = ~mask
    if not bool(scene.any()):
        return torch.full((image.shape[0],), DEFAULT_FILL, dtype=image.dtype, device=image.device)
    return image[:, scene].mean(dim=1)


def pair_partners(labels: np.ndarray, *, seed: int) -> dict[str, np.ndarray]:
    """Seeded partners per sample for the mixed probes, as int64 index arrays.

    ``mixed_same``: another sample of the same class, uniformly at random (the
    sample itself when it is alone in its class). ``mixed_rand``: a sample of a
    different class, uniformly among all other classes' samples. The same labels
    and seed give the same pairs on every rank.
    """
    y = np.asarray(labels, dtype=np.int64)
    classes = np.unique(y)
    if classes.size < 2:
        raise ReviewSetError("background probes need samples of at least two classes", field="labels")
    rng = np.random.default_rng(seed)
    same = np.arange(y.size, dtype=np.int64)
    rand = np.empty(y.size, dtype=np.int64)
    for c in classes:
        members = np.flatnonzero(y == c)
        others = np.flatnonzero(y != c)
        n = members.size
        if n > 1:
            # A shift of 1..n-1 within the class: uniform over the other members, never itself.
            shift = rng.integers(1, n, size=n)
            same[members] = members[(np.arange(n) + shift) % n]
        rand[members] = others[rng.integers(0, others.size, size=n)]
    return {"mixed_same": same, "mixed_rand": rand}

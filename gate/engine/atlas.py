"""The attention atlas: the mean unit-mass Grad-CAM map over the review set, as running sums.

Each batch's maps (in the model's frame) are pooled to a small grid, each normalised
to unit mass, and added to the running sums overall and per predicted class; the
masks of the samples that have one are pooled and added likewise (the
object-frequency map). No map is kept: memory is the grid times the classes,
whatever the review set's size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gate.records import Atlas

ATLAS_SIDE = 32  # cells along the longer side: a corner patch of 10% is still 3 cells


def grid_shape(height: int, width: int, side: int = ATLAS_SIDE) -> tuple[int, int]:
    """The atlas grid for a ``height × width`` frame: its aspect, at most ``side`` cells, never finer than the frame."""
    longest = max(height, width)
    if longest <= side:
        return height, width
    return max(1, round(height * side / longest)), max(1, round(width * side / longest))


class AtlasSums:
    """Running atlas sums for one model (classes = the review set's; predictions outside it count overall)."""

    def __init__(self, classes: int, frame: tuple[int, int]) -> None:
        self.grid = grid_shape(*frame)
        self.total = torch.zeros(self.grid, dtype=torch.float64)
        self.by_class = torch.zeros((classes, *self.grid), dtype=torch.float64)
        self.class_count = torch.zeros(classes, dtype=torch.int64)
        self.mask_sum = torch.zeros(self.grid, dtype=torch.float64)
        self.count = 0
        self.mask_count = 0

    def add(self, cam: Tensor, pred: np.ndarray, masks: Tensor, has_mask: Tensor) -> None:
        """Add a batch: maps [B, H, W] (ReLU'd, any scale), review-set predictions [B], masks [B, H, W]."""
        pooled = _pool(cam.float(), self.grid)
        mass = pooled.sum(dim=(1, 2))
        alive = mass > 0
        unit = pooled[alive] / mass[alive][:, None, None]
        self.total += unit.sum(0)
        self.count += int(alive.sum())
        preds = torch.from_numpy(np.asarray(pred, dtype=np.int64))[alive.cpu()]
        inside = preds >= 0  # OUTSIDE answers have no class of the review set
        self.by_class.index_add_(0, preds[inside], unit[inside.to(unit.device)].cpu())
        self.class_count += torch.bincount(preds[inside], minlength=self.class_count.numel())
        rows = has_mask.bool()
        if bool(rows.any()):
            self.mask_sum += _pool(masks[rows].float(), self.grid).sum(0).cpu()
            self.mask_count += int(rows.sum())

    def atlas(self) -> Atlas:
        """The sums as records carry them."""
        return Atlas(total=self.total.numpy().copy(), count=self.count, by_class=self.by_class.numpy().copy(),
                     class_count=self.class_count.numpy().copy(), mask_sum=self.mask_sum.numpy().copy(),
                     mask_count=self.mask_count)


def _pool(maps: Tensor, grid: tuple[int, int]) -> Tensor:
    """Mean over each grid cell, float64 on the CPU (adaptive pooling keeps the share of mass per area)."""
    if maps.shape[-2:] == grid:
        return maps.double().cpu()
    return F.adaptive_avg_pool2d(maps[:, None].double(), grid)[:, 0].cpu()



"""Decoded batches of a review set, and each model's frame of them.

The engine decodes each batch once (uint8 images at their own sizes, masks and
void masks, None where a sample has none); every model then brings it into its
own frame with :mod:`gate.inputs.preprocess`. Models that share a geometry
share the framed batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from gate.inputs.preprocess import Geometry, image_to_frame, mask_to_frame
from gate.review_set import ReviewSet


@dataclass(frozen=True)
class Batch:
    """Decoded samples of one batch at native size: uint8 images, bool masks and void masks (None: none)."""

    indices: np.ndarray
    sample_ids: tuple[str, ...]
    labels: np.ndarray
    images: list[np.ndarray]
    masks: list[np.ndarray | None]
    voids: list[np.ndarray | None] = field(default_factory=list)

    @property
    def has_mask(self) -> np.ndarray:
        """bool [B]: which rows have an object mask."""
        return np.array([m is not None for m in self.masks], dtype=bool)


@dataclass(frozen=True)
class Frame:
    """A batch in one model's frame (on the device): [0, 1] pixels, masks, non-void pixels, mask presence."""

    images: Tensor  # float32 [B, 3, H, W]
    masks: Tensor  # bool [B, H, W], all False without a mask
    void: Tensor  # bool [B, H, W], True = void
    has_mask: Tensor  # bool [B]


def native_size(review_set: ReviewSet) -> tuple[int, int]:
    """The first image's size: the input size of a model that names none (a bare state_dict)."""
    if not review_set.size:
        return (0, 0)
    height, width = review_set.load_image(0).shape[:2]
    return (int(height), int(width))


def decode(review_set: ReviewSet, indices: np.ndarray) -> Batch:
    """The samples at ``indices``, decoded at their own size (masks and void masks None where absent)."""
    rows = [int(i) for i in indices]
    samples = [review_set.samples[i] for i in rows]
    return Batch(indices=np.asarray(indices, dtype=np.int64), sample_ids=tuple(s.sample_id for s in samples),
                 labels=np.array([s.label for s in samples], dtype=np.int64),
                 images=[review_set.load_image(i) for i in rows], masks=[review_set.load_mask(i) for i in rows],
                 voids=[review_set.load_void(i) for i in rows])


def decode_partners(review_set: ReviewSet, batch: Batch, partners: dict[str, np.ndarray]) -> dict[str, Batch]:
    """The partners of the batch's masked rows, in the order of those rows."""
    rows = np.flatnonzero(batch.has_mask)
    return {variant: decode(review_set, partners[variant][batch.indices[rows]]) for variant in partners}


def to_frame(batch: Batch, geometry: Geometry, device: torch.device) -> Frame:
    """A decoded batch in a model's frame (gate.inputs.preprocess, on the CPU as a torchvision eval loop)."""
    images = torch.stack([image_to_frame(image, geometry) for image in batch.images])
    blank = torch.zeros(images.shape[-2:], dtype=torch.bool)

    def framed(masks: Sequence[np.ndarray | None]) -> Tensor:
        return torch.stack([blank if m is None else mask_to_frame(m, geometry) for m in masks])

    voids = batch.voids or [None] * len(batch.images)
    return Frame(images=images.to(device), masks=framed(batch.masks).to(device), void=framed(voids).to(device),
                 has_mask=torch.from_numpy(batch.has_mask).to(device))


class Frames:
    """One batch (and its probe partners) framed per geometry, on demand: models that share one share it."""

    def __init__(self, batch: Batch, partners: dict[str, Batch], device: torch.device) -> None:
        self.batch, self.partners, self.device = batch, partners, device
        self.cache: dict[tuple[str, Geometry], Frame] = {}

    def get(self, geometry: Geometry, partner: str = "") -> Frame:
        """The batch (or the ``partner`` variant's partner batch) in the frame of ``geometry``."""
        key = (partner, geometry)
        if key not in self.cache:
            source = self.partners[partner] if partner else self.batch
            self.cache[key] = to_frame(source, geometry, self.device)
        return self.cache[key]

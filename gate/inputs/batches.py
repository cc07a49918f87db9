"""Decoded batches of a review set, and each model's frame of them.

The engine decodes each batch once (uint8 images at their own sizes, masks and
void masks, None where a sample has none); every model then brings it into its
own frame with :mod:`gate.inputs.preprocess`. Models that share a geometry
share the framed batch.

:func:`loaded_batches` decodes and frames the next batches ahead of the
models, in worker threads (``workers`` > 0): PIL's decoders and torch's resize
release the GIL, so threads overlap the CPU work with the forwards without
pickling pixels between processes (benchmarks/bench_pipeline.py measured both).
Batches come back in order, and a worker's error (a corrupt image, a bomb) is
raised in the caller as the same typed error, naming the file.

With a frame cache (:mod:`gate.inputs.frame_cache`), a geometry whose entry
exists is read from disk instead of decoded and framed; when every geometry's
is, nothing is decoded at all. A gate over the whole set fills the missing
entries as it frames its batches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from gate.inputs.frame_cache import CachePlan, FrameStore, FrameWriter
from gate.inputs.preprocess import Geometry, image_to_pixels, mask_to_frame, pixels_to_frame
from gate.inputs.review_set import ReviewSet


@dataclass(frozen=True)
class Batch:
    """Decoded samples of one batch at native size: uint8 images, bool masks and void masks (None: none)."""

    indices: np.ndarray
    sample_ids: tuple[str, ...]
    labels: np.ndarray
    images: list[np.ndarray]
    masks: list[np.ndarray | None]
    voids: list[np.ndarray | None] = field(default_factory=list)
    mask_flags: np.ndarray | None = None  # which rows have a mask, for a batch not decoded (read from a cache)

    @property
    def has_mask(self) -> np.ndarray:
        """bool [B]: which rows have an object mask."""
        if self.mask_flags is not None:
            return self.mask_flags
        return np.array([m is not None for m in self.masks], dtype=bool)


@dataclass(frozen=True)
class Frame:
    """A batch in one model's frame (on the device): [0, 1] pixels, masks, non-void pixels, mask presence."""

    images: Tensor  # float32 [B, 3, H, W]
    masks: Tensor  # bool [B, H, W], all False without a mask
    void: Tensor  # bool [B, H, W], True = void
    has_mask: Tensor  # bool [B]

    def pinned(self) -> Frame:
        """The frame in page-locked host memory, so that the copy to a CUDA device can be asynchronous."""
        return Frame(images=self.images.pin_memory(), masks=self.masks.pin_memory(), void=self.void.pin_memory(),
                     has_mask=self.has_mask.pin_memory())

    def to(self, device: torch.device) -> Frame:
        """The frame on ``device`` (non-blocking from pinned memory; a no-op where it already is)."""
        non_blocking = self.images.is_pinned()
        return Frame(images=self.images.to(device, non_blocking=non_blocking),
                     masks=self.masks.to(device, non_blocking=non_blocking),
                     void=self.void.to(device, non_blocking=non_blocking),
                     has_mask=self.has_mask.to(device, non_blocking=non_blocking))


FrameKey = tuple[str, Geometry]  # (probe partner variant or "" for the batch itself, geometry)


@dataclass(frozen=True)
class Loaded:
    """One batch ready for the models: decoded samples, their probe partners and the frames on the host."""

    batch: Batch
    partners: dict[str, Batch]
    framed: dict[FrameKey, Frame]


def native_size(review_set: ReviewSet) -> tuple[int, int]:
    """The first image's size: the input size of a model that names none (a bare state_dict)."""
    if not review_set.size:
        return (0, 0)
    height, width = review_set.load_image(0).shape[:2]
    return (int(height), int(width))


def decode(review_set: ReviewSet, indices: np.ndarray) -> Batch:
    """The samples at ``indices``, decoded at their own size (masks and void masks None where absent)."""
    rows = [int(i) for i in indices]
    return replace(described(review_set, indices), images=[review_set.load_image(i) for i in rows],
                   masks=[review_set.load_mask(i) for i in rows], voids=[review_set.load_void(i) for i in rows],
                   mask_flags=None)


def described(review_set: ReviewSet, indices: np.ndarray) -> Batch:
    """The samples at ``indices`` without their pixels (every frame of them comes from a cache)."""
    samples = [review_set.samples[int(i)] for i in indices]
    return Batch(indices=np.asarray(indices, dtype=np.int64), sample_ids=tuple(s.sample_id for s in samples),
                 labels=np.array([s.label for s in samples], dtype=np.int64), images=[], masks=[], voids=[],
                 mask_flags=np.array([bool(s.mask) for s in samples], dtype=bool))


def decode_partners(review_set: ReviewSet, batch: Batch, partners: dict[str, np.ndarray],
                    pixels: bool = True) -> dict[str, Batch]:
    """The partners of the batch's rows that have one (index >= 0), in row order (``pixels`` False: not decoded).

    Background partners exist for the masked rows only; the swap probes' partner for every row.
    """
    fetch = decode if pixels else described
    chosen = {variant: partners[variant][batch.indices] for variant in partners}
    return {variant: fetch(review_set, picked[picked >= 0]) for variant, picked in chosen.items()}


def to_frame(batch: Batch, geometry: Geometry, device: torch.device | None = None,
             writer: FrameWriter | None = None) -> Frame:
    """A decoded batch in a model's frame (gate.inputs.preprocess, on the CPU as a torchvision eval loop).

    On ``device`` when given, else left on the host. A ``writer`` keeps the framed batch in the cache.
    """
    pixels = torch.stack([image_to_pixels(image, geometry) for image in batch.images])
    blank = torch.zeros(pixels.shape[-2:], dtype=torch.bool)

    def framed(masks: Sequence[np.ndarray | None]) -> Tensor:
        return torch.stack([blank if m is None else mask_to_frame(m, geometry) for m in masks])

    voids = batch.voids or [None] * len(batch.images)
    masks, void = framed(batch.masks), framed(voids)
    if writer is not None:
        writer.write(batch.indices, pixels, masks, void)
    frame = Frame(images=pixels_to_frame(pixels), masks=masks, void=void, has_mask=torch.from_numpy(batch.has_mask))
    return frame if device is None else frame.to(device)


def stored_frame(batch: Batch, store: FrameStore) -> Frame:
    """The batch's frame read from a cache entry (equal to :func:`to_frame` of the decoded batch)."""
    images, masks, void = store.frame(batch.indices)
    return Frame(images=images, masks=masks, void=void, has_mask=torch.from_numpy(batch.has_mask))


def load(
    review_set: ReviewSet, rows: np.ndarray, partners: dict[str, np.ndarray], geometries: Sequence[Geometry],
    pin: bool = False, cache: CachePlan | None = None,
) -> Loaded:
    """Decode the samples at ``rows`` and their probe partners, and frame them for every geometry (host memory).

    A partner batch is framed only when it has rows (a batch without masks needs no probe variants). With a
    ``cache``, geometries with an entry are read from it (nothing is decoded when all are), and the batch's
    frames go to the writers of the others.
    """
    stores = cache.stores if cache is not None else {}
    writers = cache.writers if cache is not None else {}
    pixels = not all(geometry in stores for geometry in geometries)
    batch = decode(review_set, rows) if pixels else described(review_set, rows)
    partner_batches = decode_partners(review_set, batch, partners, pixels)

    def frame(of: Batch, geometry: Geometry, writer: FrameWriter | None = None) -> Frame:
        store = stores.get(geometry)
        return stored_frame(of, store) if store is not None else to_frame(of, geometry, writer=writer)

    framed: dict[FrameKey, Frame] = {}
    for geometry in geometries:
        framed[("", geometry)] = frame(batch, geometry, writers.get(geometry))
        for variant, partner in partner_batches.items():
            if partner.indices.size:
                framed[(variant, geometry)] = frame(partner, geometry)
    if pin:
        framed = {key: frame.pinned() for key, frame in framed.items()}
    return Loaded(batch=batch, partners=partner_batches, framed=framed)


def loaded_batches(
    review_set: ReviewSet, order: np.ndarray, batch_size: int, partners: dict[str, np.ndarray],
    geometries: Sequence[Geometry], workers: int = 0, pin: bool = False, cache: CachePlan | None = None,
) -> Generator[Loaded, None, None]:
    """The rows ``order`` in batches of ``batch_size``, loaded (see :func:`load`) in order.

    ``workers`` = 0 loads each batch when it is asked for; otherwise that many threads load up to
    ``2 × workers`` batches ahead (bounded memory whatever the review set's size).
    """
    chunks = (order[start : start + batch_size] for start in range(0, len(order), batch_size))
    if workers <= 0:
        for rows in chunks:
            yield load(review_set, rows, partners, geometries, pin, cache)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="xgate-load")
    pending: deque[Future[Loaded]] = deque()
    try:
        for rows in chunks:
            pending.append(pool.submit(load, review_set, rows, partners, geometries, pin, cache))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # On an error (here or in the models) do not wait for batches no one will read.
        pool.shutdown(wait=True, cancel_futures=True)


class Frames:
    """One batch (and its probe partners) framed per geometry, on demand: models that share one share it."""

    def __init__(
        self, batch: Batch, partners: dict[str, Batch], device: torch.device,
        framed: dict[FrameKey, Frame] | None = None,
    ) -> None:
        self.batch, self.partners, self.device = batch, partners, device
        self.framed = framed or {}  # host frames made ahead (gate.inputs.batches.load)
        self.cache: dict[FrameKey, Frame] = {}

    @classmethod
    def of(cls, loaded: Loaded, device: torch.device) -> Frames:
        """The frames of a loaded batch, moved to ``device`` as the models ask for them."""
        return cls(loaded.batch, loaded.partners, device, loaded.framed)

    def get(self, geometry: Geometry, partner: str = "") -> Frame:
        """The batch (or the ``partner`` variant's partner batch) in the frame of ``geometry``."""
        key = (partner, geometry)
        if key not in self.cache:
            host = self.framed.get(key)
            if host is None:
                host = to_frame(self.partners[partner] if partner else self.batch, geometry)
            self.cache[key] = host.to(self.device)
        return self.cache[key]

"""What the engine is asked (options) and what it gives back per model and per batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from gate.errors import UsageError
from gate.records import Records
from gate.result import Gallery
from gate.settings import DEFAULTS

Progress = Callable[[int, int], None]

FIXED_TOTAL = 48  # at most this many fixed samples overall: 1000 classes × 2 kept ~2 GB of pictures at 224²


@dataclass(frozen=True)
class EngineOptions:
    """How to run: device, batch size, enabled probes, seed and gallery sizes."""

    device: str = DEFAULTS.device
    batch_size: int = DEFAULTS.batch_size
    probes: frozenset[str] = frozenset()
    seed: int = DEFAULTS.seed
    gallery_size: int = 8  # samples per gallery kind (easy, borderline, failures)
    fixed_per_class: int = 2  # samples per class always kept: the same ids across model versions
    fixed_total: int = FIXED_TOTAL  # ... but at most this many in all, spread over the classes (fixed_ids)
    workers: int = 0  # threads decoding and framing the next batches (0: in the calling thread; a gate's: Settings)
    precision: str = DEFAULTS.precision  # "bf16": forwards under autocast; maps, probabilities and scores in float32
    frame_cache: str | None = None  # folder keeping framed review sets between gates (gate.inputs.frame_cache)
    # The sanity copies run only their top block and head from the activation the explained forward kept
    # (gate.engine.trunk); False: each copy runs the whole network (the old path, kept for the comparison).
    shared_trunk: bool = True


@dataclass(frozen=True)
class ModelRun:
    """What the engine measured for one model."""

    records: Records
    gallery: Gallery
    seconds: float
    frames: str = "decoded"  # where the frames came from (frame_source): "decoded", "cache-read", ...
    sanity_trunk: str = ""  # how the sanity copies ran (sanity.shared_trunk), "" without the sanity probe


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without one is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available", field="--device")
    if name != "cpu" and not name.startswith("cuda"):
        raise UsageError(f"unknown device {name!r} (auto, cpu or cuda)", field="--device")
    return torch.device(name)


@dataclass(frozen=True)
class BatchOutputs:
    """One batch's outputs over ALL the model's logits, reduced to what the records keep."""

    probs: np.ndarray  # float32 [B, C]: the review set's classes of the full softmax
    pred: np.ndarray  # int64 [B]: review-set index of the argmax over all outputs, OUTSIDE if none
    pred_output: np.ndarray  # int64 [B]: the argmax as the model's output index
    top_prob: np.ndarray  # float32 [B]
    second_prob: np.ndarray  # float32 [B]
    outside_sq: np.ndarray  # float64 [B]

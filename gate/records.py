"""Per-sample numbers from the engine: the only thing downstream stages read.

Memory stays flat as the review set grows: one row per sample plus a bounded
set of kept samples (images and maps) for the report's galleries.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

# Background probe variants, in the order the engine runs them.
PROBE_VARIANTS: tuple[str, ...] = ("only_fg", "only_bg", "mixed_same", "mixed_rand")
# Swap probes (gate.engine.swaps): each is a probe of its own and one variant, built for every sample.
SWAP_VARIANTS: tuple[str, ...] = ("border", "corners", "lighting")
# Records.pairings key of the swap probes' partner (one partner per sample, shared by the three).
SWAP_PARTNER = "swap"


# Records.preds for a prediction the review set does not hold (an output of the model outside its classes).
OUTSIDE = -1
# Records.probe_preds for a sample without a mask: no variant is built for it.
NO_VARIANT = -2


@dataclass(frozen=True)
class KeptSample:
    """One sample kept for the report: pixels, mask, map and probe variants, in the frame the model saw."""

    sample_id: str
    image: np.ndarray  # uint8 [H, W, 3], at the candidate's input size (after its resize and crop)
    mask: np.ndarray  # bool [H, W] (all False when the sample has no mask)
    cam: np.ndarray  # float32 [H, W], ReLU'd Grad-CAM of the predicted class, not normalised
    label: int
    pred: int  # review-set class index, or OUTSIDE
    confidence: float
    variants: Mapping[str, np.ndarray] = field(default_factory=dict)  # variant -> uint8 [H, W, 3]
    variant_preds: Mapping[str, int] = field(default_factory=dict)
    pred_name: str = ""  # the model's name for its prediction (also for an output outside the review set)
    has_mask: bool = True


@dataclass(frozen=True)
class Atlas:
    """Running sums behind the attention atlas (gate.engine.atlas), on a small grid of the model's frame.

    Each map is normalised to unit mass before it is added, so ``total / count`` is the mean map and sums to
    1; ``by_class[c] / class_count[c]`` is the mean over samples PREDICTED as review-set class ``c``;
    ``mask_sum / mask_count`` is the object-frequency map (the mean of the masks of the samples with one).
    Shards add up; a bootstrap resample has no atlas (the sums are not per sample).
    """

    total: np.ndarray  # float64 [h, w]: Σ unit-mass maps
    count: int  # maps added (all-zero maps are not: they have no mass to place)
    by_class: np.ndarray  # float64 [C, h, w]
    class_count: np.ndarray  # int64 [C]
    mask_sum: np.ndarray  # float64 [h, w]: Σ masks, each pooled to the grid (a cell's object share)
    mask_count: int

    def __add__(self, other: Atlas) -> Atlas:
        return Atlas(total=self.total + other.total, count=self.count + other.count,
                     by_class=self.by_class + other.by_class, class_count=self.class_count + other.class_count,
                     mask_sum=self.mask_sum + other.mask_sum, mask_count=self.mask_count + other.mask_count)

    @property
    def mean(self) -> np.ndarray:
        """The mean unit-mass map (sums to 1); all zeros when no map had mass."""
        return self.total / self.count if self.count else np.zeros_like(self.total)

    @property
    def object_frequency(self) -> np.ndarray | None:
        """Per cell, the mean share of object pixels over the samples with a mask; None without any."""
        return self.mask_sum / self.mask_count if self.mask_count else None


@dataclass(frozen=True)
class Records:
    """Everything the engine measured on a review set for one model, in review-set order.

    A review set may cover a subset of the model's outputs: ``probs`` then holds the review set's columns of
    the model's FULL softmax (rows sum to less than 1), and ``pred``/``top_prob``/``second_prob``/
    ``outside_sq`` carry what the outputs outside the review set add (argmax, confidence, margin, Brier).
    Those four are None when the records were built from ``probs`` alone (all outputs present): the
    properties below then derive them from ``probs``. Read ``preds``/``confidence``, never ``probs.argmax()``.
    """

    classes: tuple[str, ...]
    ids: tuple[str, ...]
    labels: np.ndarray  # int64 [N]
    probs: np.ndarray  # float32 [N, C], full-softmax probabilities of the review set's classes, in its order
    energy: np.ndarray  # float64 [N]: Σ cam·mask / Σ cam over non-void pixels; NaN where excluded
    mask_area: np.ndarray  # float64 [N]: object pixels / non-void pixels; NaN without a mask
    pointing_hit: np.ndarray  # float64 [N]: 1.0 / 0.0; NaN where excluded
    rank_accuracy: np.ndarray  # float64 [N]: |top-K(cam) ∩ mask| / K, K = |mask|; NaN where excluded
    probe_preds: Mapping[str, np.ndarray] = field(default_factory=dict)  # variant -> int64 [N] (NO_VARIANT: none)
    pairings: Mapping[str, np.ndarray] = field(default_factory=dict)  # variant -> int64 [N] partner index, -1 none
    sanity_similarity: np.ndarray | None = None  # float64 [N, copies] (or [N] for one copy): Spearman(map, copy's map)
    kept: Mapping[str, KeptSample] = field(default_factory=dict)
    pred: np.ndarray | None = None  # int64 [N]: argmax over ALL outputs as a review-set index, OUTSIDE if none
    top_prob: np.ndarray | None = None  # float32 [N]: max of the full softmax
    second_prob: np.ndarray | None = None  # float32 [N]: second-highest of the full softmax
    outside_sq: np.ndarray | None = None  # float64 [N]: Σ p_k² over outputs outside the review set (Brier)
    has_mask: np.ndarray | None = None  # bool [N]: the sample has an object mask (None: all have)
    atlas: Atlas | None = None  # the attention atlas's sums (None: not measured, or a resample)

    @property
    def size(self) -> int:
        """Number of samples."""
        return len(self.ids)

    @property
    def preds(self) -> np.ndarray:
        """Predicted class per sample: the argmax over all the model's outputs (OUTSIDE when not a review class)."""
        if self.pred is not None:
            return np.asarray(self.pred, dtype=np.int64)
        return np.asarray(self.probs.argmax(axis=1), dtype=np.int64)

    @property
    def confidence(self) -> np.ndarray:
        """Top-label probability per sample (over all the model's outputs)."""
        source = self.top_prob if self.top_prob is not None else self.probs.max(axis=1)
        return np.asarray(source, dtype=np.float64)

    @property
    def runner_up(self) -> np.ndarray:
        """Second-highest probability per sample (over all outputs), float32 as the records keep it."""
        if self.second_prob is not None:
            return np.asarray(self.second_prob, dtype=np.float32)
        top2 = -np.sort(-np.asarray(self.probs, dtype=np.float32), axis=1)[:, :2]
        return top2[:, -1]

    @property
    def squared_error(self) -> np.ndarray:
        """Per-sample Brier term Σ_k (p_k − y_k)² over ALL the model's outputs."""
        onehot = np.eye(len(self.classes))[self.labels]
        inside = ((self.probs.astype(np.float64) - onehot) ** 2).sum(axis=1)
        total: np.ndarray = inside if self.outside_sq is None else inside + self.outside_sq
        return total

    @property
    def masked(self) -> np.ndarray:
        """bool [N]: which samples have an object mask (alignment and background probes use only these)."""
        return np.ones(self.size, dtype=bool) if self.has_mask is None else np.asarray(self.has_mask, dtype=bool)

    def class_name(self, index: int) -> str:
        """The name behind a prediction index (``preds`` or ``probe_preds``), never another class's by wrap-around.

        A review-set class by its index; OUTSIDE: "(outside the review set)"; NO_VARIANT: "" (no probe variant
        is built for a sample without a mask).
        """
        if 0 <= index < len(self.classes):
            return self.classes[index]
        return "" if index == NO_VARIANT else "(outside the review set)"

    @property
    def correct(self) -> np.ndarray:
        """Boolean per sample: prediction equals label."""
        return np.asarray(self.preds == self.labels)

    @property
    def lift(self) -> np.ndarray:
        """Energy over mask area per sample (1.0 = no better than a uniform map)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.mask_area > 0, self.energy / self.mask_area, np.nan)

    @staticmethod
    def concat(parts: Sequence[Records]) -> Records:
        """Rows of ``parts`` one after another (e.g. shards of one review set); kept samples are merged.

        Empty parts are left out (they carry no probe columns); at least one part must have rows.
        """
        parts = [part for part in parts if part.size] or list(parts[:1])
        first = parts[0]
        columns: dict[str, np.ndarray | None] = {}
        for column in ROW_COLUMNS:
            values = [getattr(part, column) for part in parts]
            columns[column] = None if any(v is None for v in values) else np.concatenate(values)
        return replace(
            first,
            ids=tuple(i for part in parts for i in part.ids),
            **columns,  # type: ignore[arg-type]  # the ROW_COLUMNS fields, each an array or None
            probe_preds={k: np.concatenate([part.probe_preds[k] for part in parts]) for k in first.probe_preds},
            pairings={k: np.concatenate([part.pairings[k] for part in parts]) for k in first.pairings},
            kept={k: v for part in parts for k, v in part.kept.items()},
            atlas=_sum_atlases([part.atlas for part in parts]),
        )

    def take(self, index: np.ndarray) -> Records:
        """The rows at ``index`` (e.g. a bootstrap resample); kept samples are dropped."""
        idx = np.asarray(index, dtype=np.int64)
        columns = {c: None if getattr(self, c) is None else getattr(self, c)[idx] for c in ROW_COLUMNS}
        return replace(
            self,
            ids=tuple(self.ids[i] for i in idx),
            **columns,  # type: ignore[arg-type]  # the ROW_COLUMNS fields, each an array or None
            probe_preds={k: v[idx] for k, v in self.probe_preds.items()},
            pairings={k: v[idx] for k, v in self.pairings.items()},
            kept={},
            atlas=None,
        )


def _sum_atlases(atlases: Sequence[Atlas | None]) -> Atlas | None:
    """The sum of the parts' atlases; None when any part has none."""
    if not atlases or any(a is None for a in atlases):
        return None
    total = atlases[0]
    assert total is not None
    for atlas in atlases[1:]:
        assert atlas is not None
        total = total + atlas
    return total


# Per-sample array columns of Records (one row per sample; None-able ones stay None unless all parts have them).
ROW_COLUMNS: tuple[str, ...] = (
    "labels", "probs", "energy", "mask_area", "pointing_hit", "rank_accuracy", "sanity_similarity",
    "pred", "top_prob", "second_prob", "outside_sq", "has_mask",
)

"""Per-sample numbers from the engine: the only thing downstream stages read.

Memory stays flat as the review set grows: one row per sample plus a bounded
set of kept samples (images and maps) for the report's galleries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

# Background probe variants, in the order the engine runs them.
PROBE_VARIANTS: tuple[str, ...] = ("only_fg", "only_bg", "mixed_same", "mixed_rand")


@dataclass(frozen=True)
class KeptSample:
    """One sample kept for the report: pixels, mask, map and probe variants."""

    sample_id: str
    image: np.ndarray  # uint8 [H, W, 3], at the candidate's input size
    mask: np.ndarray  # bool [H, W]
    cam: np.ndarray  # float32 [H, W], ReLU'd Grad-CAM of the predicted class, not normalised
    label: int
    pred: int
    confidence: float
    variants: Mapping[str, np.ndarray] = field(default_factory=dict)  # variant -> uint8 [H, W, 3]
    variant_preds: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Records:
    """Everything the engine measured on a review set for one model, in review-set order."""

    classes: tuple[str, ...]
    ids: tuple[str, ...]
    labels: np.ndarray  # int64 [N]
    probs: np.ndarray  # float32 [N, C], softmax in review-set class order
    energy: np.ndarray  # float64 [N]: Σ cam·mask / Σ cam; NaN where excluded
    mask_area: np.ndarray  # float64 [N]: object pixels / all pixels
    pointing_hit: np.ndarray  # float64 [N]: 1.0 / 0.0; NaN where excluded
    rank_accuracy: np.ndarray  # float64 [N]: |top-K(cam) ∩ mask| / K, K = |mask|; NaN where excluded
    probe_preds: Mapping[str, np.ndarray] = field(default_factory=dict)  # variant -> int64 [N]
    pairings: Mapping[str, np.ndarray] = field(default_factory=dict)  # variant -> int64 [N] partner index
    sanity_similarity: np.ndarray | None = None  # float64 [N]: Spearman(map, randomised map)
    kept: Mapping[str, KeptSample] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Number of samples."""
        return len(self.ids)

    @property
    def preds(self) -> np.ndarray:
        """Predicted class per sample."""
        return np.asarray(self.probs.argmax(axis=1), dtype=np.int64)

    @property
    def confidence(self) -> np.ndarray:
        """Top-label probability per sample."""
        return np.asarray(self.probs.max(axis=1), dtype=np.float64)

    @property
    def correct(self) -> np.ndarray:
        """Boolean per sample: prediction equals label."""
        return np.asarray(self.preds == self.labels)

    @property
    def lift(self) -> np.ndarray:
        """Energy over mask area per sample (1.0 = no better than a uniform map)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.mask_area > 0, self.energy / self.mask_area, np.nan)

    def take(self, index: np.ndarray) -> Records:
        """The rows at ``index`` (e.g. a bootstrap resample); kept samples are dropped."""
        idx = np.asarray(index, dtype=np.int64)
        return replace(
            self,
            ids=tuple(self.ids[i] for i in idx),
            labels=self.labels[idx],
            probs=self.probs[idx],
            energy=self.energy[idx],
            mask_area=self.mask_area[idx],
            pointing_hit=self.pointing_hit[idx],
            rank_accuracy=self.rank_accuracy[idx],
            probe_preds={k: v[idx] for k, v in self.probe_preds.items()},
            pairings={k: v[idx] for k, v in self.pairings.items()},
            sanity_similarity=None if self.sanity_similarity is None else self.sanity_similarity[idx],
            kept={},
        )

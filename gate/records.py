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

    @staticmethod
    def concat(parts: Sequence[Records]) -> Records:
        """Rows of ``parts`` one after another (e.g. shards of one review set); kept samples are merged.

        Empty parts are left out (they carry no probe columns); at least one part must have rows.
        """
        parts = [part for part in parts if part.size] or list(parts[:1])
        first = parts[0]

        def join(column: str) -> np.ndarray:
            return np.concatenate([getattr(part, column) for part in parts])

        sanity = None
        if first.sanity_similarity is not None:
            sanity = np.concatenate([part.sanity_similarity for part in parts if part.sanity_similarity is not None])
        return replace(
            first,
            ids=tuple(i for part in parts for i in part.ids),
            labels=join("labels"),
            probs=join("probs"),
            energy=join("energy"),
            mask_area=join("mask_area"),
            pointing_hit=join("pointing_hit"),
            rank_accuracy=join("rank_accuracy"),
            probe_preds={k: np.concatenate([part.probe_preds[k] for part in parts]) for k in first.probe_preds},
            pairings={k: np.concatenate([part.pairings[k] for part in parts]) for k in first.pairings},
            sanity_similarity=sanity,
            kept={k: v for part in parts for k, v in part.kept.items()},
        )

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

"""Explanation sanity score (after Adebayo et al. 2018): do the maps change when the model does?

The engine compares, per sample, the Grad-CAM map of the model with the map of each of
``gate.engine.sanity.SANITY_COPIES`` randomised copies (top block and head re-initialised from seeds derived from
``--seed``; class rows keyed by class name, each sample's explained row drawn for that sample) by
Spearman rank correlation at the target layer's resolution. ``Records.sanity_similarity`` holds
[N, copies] (or [N] for one copy). A map that stays the same is not explaining the model.
"""

from __future__ import annotations

import numpy as np

from gate.errors import GateError
from gate.metrics.registry import ScoreSpec
from gate.records import Records


def similarity_table(records: Records) -> np.ndarray:
    """float64 [N, copies]: per-sample Spearman similarity to each randomised copy (NaN: a constant map)."""
    if records.sanity_similarity is None:
        # The engine fills it whenever the sanity probe is enabled; missing means a bug, not bad input.
        raise GateError("records have no sanity_similarity although the sanity probe is enabled")
    values = np.asarray(records.sanity_similarity, dtype=np.float64)
    return values[:, None] if values.ndim == 1 else values


def randomization_similarity(records: Records) -> float:
    """Mean Spearman correlation over samples and randomised copies; NaN entries (constant maps) skipped."""
    values = similarity_table(records)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def per_copy_similarity(records: Records) -> np.ndarray:
    """float64 [copies]: each copy's mean similarity over samples (NaN for a copy with no finite value)."""
    values = similarity_table(records)
    counts = (~np.isnan(values)).sum(axis=0)
    sums = np.nansum(values, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def randomization_spread(records: Records) -> float:
    """Standard deviation (ddof=1) of the copies' mean similarities; NaN with fewer than two copies."""
    means = per_copy_similarity(records)
    means = means[~np.isnan(means)]
    return float(means.std(ddof=1)) if means.size > 1 else float("nan")


SCORES: tuple[ScoreSpec, ...] = (
    ScoreSpec("sanity.randomization_similarity", False,
              "Mean Spearman correlation between maps of the model and of copies with re-initialised top layers "
              "(averaged over samples and copies); high = maps do not depend on the weights.",
              "sanity", randomization_similarity, probe="sanity"),
    ScoreSpec("sanity.randomization_similarity.spread", False,
              "Standard deviation across the randomised copies of each copy's mean similarity (the score above "
              "is their mean): how much one random draw would move it.",
              "sanity", randomization_spread, probe="sanity"),
)

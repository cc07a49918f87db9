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
from gate.metrics.spec import NON_NEGATIVE, SIGNED_UNIT, ScoreSpec, SumForm, ratio
from gate.records import Records


def similarity_table(records: Records) -> np.ndarray:
    """float64 [N, copies]: per-sample Spearman similarity to each randomised copy (NaN: a constant map)."""
    if records.sanity_similarity is None:
        # The engine fills it whenever the sanity probe is enabled; missing means a bug, not bad input.
        raise GateError("records have no sanity_similarity although the sanity probe is enabled")
    values = np.asarray(records.sanity_similarity, dtype=np.float64)
    return values[:, None] if values.ndim == 1 else values


def _pooled_features(values: np.ndarray) -> np.ndarray:
    valid = ~np.isnan(values)
    return np.stack([np.where(valid, values, 0.0).sum(axis=1), valid.sum(axis=1).astype(np.float64)], axis=1)


def similarity_form(records: Records) -> SumForm:
    """Mean Spearman correlation over samples and randomised copies; NaN entries (constant maps) skipped."""
    values = similarity_table(records)
    finite = values[~np.isnan(values)]
    # The sum over the finite values in row order, as their plain mean takes it.
    total = np.array([finite.sum(), float(finite.size)])
    return SumForm(total, ratio, lambda: _pooled_features(values))


def _copy_features(values: np.ndarray) -> np.ndarray:
    valid = ~np.isnan(values)
    return np.concatenate([np.where(valid, values, 0.0), valid.astype(np.float64)], axis=1)


def copy_means(sums: np.ndarray) -> np.ndarray:
    """[r, copies]: each copy's mean similarity from per-copy sums [r, 2 copies] (NaN for a copy with none)."""
    copies = sums.shape[1] // 2
    total, counts = sums[:, :copies], sums[:, copies:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(counts > 0, total / np.maximum(counts, 1), np.nan))


def _spread(sums: np.ndarray) -> np.ndarray:
    means = copy_means(sums)
    valid = ~np.isnan(means)
    present = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = np.where(valid, means, 0.0).sum(axis=1) / present
        deviation = np.where(valid, means - centre[:, None], 0.0)
        variance = (deviation * deviation).sum(axis=1) / (present - 1)
    return np.where(present > 1, np.sqrt(variance), np.nan)


def spread_form(records: Records) -> SumForm:
    """Standard deviation (ddof=1) of the copies' mean similarities; NaN with fewer than two copies."""
    values = similarity_table(records)
    total = np.concatenate([np.nansum(values, axis=0), (~np.isnan(values)).sum(axis=0).astype(np.float64)])
    return SumForm(total, _spread, lambda: _copy_features(values))


def per_copy_similarity(records: Records) -> np.ndarray:
    """float64 [copies]: each copy's mean similarity over samples (NaN for a copy with no finite value)."""
    means: np.ndarray = copy_means(spread_form(records).total[None, :])[0]
    return means


SCORES: tuple[ScoreSpec, ...] = (
    ScoreSpec("sanity.randomization_similarity", False,
              "Mean Spearman correlation between maps of the model and of copies with re-initialised top layers "
              "(averaged over samples and copies); high = maps do not depend on the weights.",
              "sanity", similarity_form, probe="sanity", bounds=SIGNED_UNIT,
              words="maps stay {value} similar (Spearman) when the top layers are randomised"),
    ScoreSpec("sanity.randomization_similarity.spread", False,
              "Standard deviation across the randomised copies of each copy's mean similarity (the score above "
              "is their mean): how much one random draw would move it.",
              "sanity", spread_form, probe="sanity", bounds=NON_NEGATIVE,
              words="the sanity similarity varies by {value} across random copies"),
)

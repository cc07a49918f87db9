"""Explanation sanity score (after Adebayo et al. 2018): do the maps change when the model does?

The engine compares, per sample, the Grad-CAM map of the model with the map of
a copy whose top block and head are re-initialised (``gate.probes.randomized_copy``)
by Spearman rank correlation. A map that stays the same is not explaining the model.
"""

from __future__ import annotations

import numpy as np

from gate.errors import GateError
from gate.metrics.registry import ScoreSpec
from gate.records import Records


def randomization_similarity(records: Records) -> float:
    """Mean Spearman correlation between model and randomised-model maps; NaN rows (constant maps) skipped."""
    if records.sanity_similarity is None:
        # The engine fills it whenever the sanity probe is enabled; missing means a bug, not bad input.
        raise GateError("records have no sanity_similarity although the sanity probe is enabled")
    values = np.asarray(records.sanity_similarity, dtype=np.float64)
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


SCORES: tuple[ScoreSpec, ...] = (
    ScoreSpec("sanity.randomization_similarity", False,
              "Mean Spearman correlation between maps of the model and of a copy with re-initialised top layers; "
              "high = maps do not depend on the weights.",
              "sanity", randomization_similarity, probe="sanity"),
)

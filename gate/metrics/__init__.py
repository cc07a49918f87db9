"""Scores: one ScoreSpec each (gate.metrics.spec), declared in the family modules and gathered in the registry."""

from __future__ import annotations

from gate.metrics.registry import all_specs, compute_scores, get_spec, known_names, value_of
from gate.metrics.spec import ScoreSpec

__all__ = ["ScoreSpec", "all_specs", "compute_scores", "get_spec", "known_names", "value_of"]

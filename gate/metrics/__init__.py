"""Scores: pure functions of the engine's per-sample records, declared in one registry."""

from __future__ import annotations

from gate.metrics.registry import ScoreSpec, all_specs, compute_scores, get_spec, known_names

__all__ = ["ScoreSpec", "all_specs", "compute_scores", "get_spec", "known_names"]

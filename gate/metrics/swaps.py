"""Swap probe scores: does the answer follow the border, the corners or the lighting?

Pure functions of ``Records``: the engine stores, per sample, the prediction on
each enabled swap variant (``border``, ``corners``, ``lighting``: the region or
the channel means taken from a partner of another class, gate.engine.swaps).
Every sample has a variant (no mask is needed). Each score is a share of samples,
written as per-sample features (numerator, weight) whose sums give the value, so
intervals and bootstraps read the same features.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from gate.errors import GateError
from gate.metrics.registry import ScoreSpec
from gate.records import SWAP_VARIANTS, Records

KINDS: tuple[str, ...] = ("flip_rate", "accuracy", "accuracy_drop")


def features(records: Records, score: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample (numerator, weight) of ``<probe>.<kind>``: the score is Σ numerator / Σ weight.

    flip_rate: 1 where the probed answer differs from the original one; accuracy: 1 where the probed answer
    is the label; accuracy_drop: original right (1) minus probed right (1), so −1, 0 or 1 per sample.
    """
    probe, _, kind = score.partition(".")
    if probe not in SWAP_VARIANTS or kind not in KINDS:
        raise GateError(f"not a swap probe score: {score!r}")
    preds = records.probe_preds.get(probe)
    if preds is None:
        # The engine runs every enabled probe; a missing one is a bug, not bad input.
        raise GateError(f"records have no predictions for swap probe {probe!r}")
    probed = np.asarray(preds, dtype=np.int64)
    weight = np.ones(records.size, dtype=np.float64)
    if kind == "flip_rate":
        return (probed != records.preds).astype(np.float64), weight
    probed_right = (probed == records.labels).astype(np.float64)
    if kind == "accuracy":
        return probed_right, weight
    return records.correct.astype(np.float64) - probed_right, weight


def value(records: Records, score: str) -> float:
    """Score ``score`` (e.g. ``corners.flip_rate``) on ``records``; NaN on an empty set."""
    num, weight = features(records, score)
    total = weight.sum()
    return float(num.sum() / total) if total > 0 else float("nan")


_HELP = {
    "flip_rate": "Share of samples whose answer changes when the {what} comes from an image of another class.",
    "accuracy": "Accuracy with the {what} taken from an image of another class.",
    "accuracy_drop": "Accuracy minus accuracy with the {what} taken from an image of another class.",
}
_WHAT = {"border": "outer band (6%)", "corners": "corner patches and bottom strip",
         "lighting": "per-channel brightness (colour cast)"}


def _spec(probe: str, kind: str) -> ScoreSpec:
    name = f"{probe}.{kind}"
    return ScoreSpec(name, kind == "accuracy", _HELP[kind].format(what=_WHAT[probe]), "shortcuts",
                     partial(value, score=name), proportion=kind != "accuracy_drop", probe=probe)


SCORES: tuple[ScoreSpec, ...] = tuple(_spec(probe, kind) for probe in SWAP_VARIANTS for kind in KINDS)

"""Swap probe scores: does the answer follow the border, the corners or the lighting?

The engine stores, per sample, the prediction on each enabled swap variant (``border``, ``corners``,
``lighting``: the region or the channel means taken from a partner of another class, gate.engine.swaps).
Every sample has a variant (no mask is needed). Each score is Σ num / Σ weight over per-sample features
(gate.metrics.spec), so the point value, the Wilson bounds and every resample read the same features.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from gate.errors import GateError
from gate.metrics.spec import SIGNED_UNIT, EvidenceLink, ScoreSpec, SumForm, ratio_form
from gate.records import SWAP_VARIANTS, Records

KINDS: tuple[str, ...] = ("flip_rate", "accuracy", "accuracy_drop")
# The report's shortcut section: kept samples whose answer a swap changed, original beside probed.
SHORTCUTS = EvidenceLink("shortcuts", "the shortcut probes' flipped samples")


def probed(records: Records, probe: str) -> np.ndarray:
    """Predictions on the ``probe`` variant, int64 [N] (review-set index, OUTSIDE for other outputs)."""
    preds = records.probe_preds.get(probe)
    if preds is None:
        # The engine runs every enabled probe; a missing one is a bug, not bad input.
        raise GateError(f"records have no predictions for swap probe {probe!r}")
    return np.asarray(preds, dtype=np.int64)


def flip_rate_form(probe: str, records: Records) -> SumForm:
    """Share of samples whose probed answer differs from the original answer (both over all outputs)."""
    return ratio_form(probed(records, probe) != records.preds, np.ones(records.size))


def accuracy_form(probe: str, records: Records) -> SumForm:
    """Share of samples whose probed answer is the label."""
    return ratio_form(probed(records, probe) == records.labels, np.ones(records.size))


def accuracy_drop_form(probe: str, records: Records) -> SumForm:
    """Accuracy minus probed accuracy: per sample, right (1) minus right when probed (1): −1, 0 or 1."""
    drop = records.correct.astype(np.float64) - (probed(records, probe) == records.labels)
    return ratio_form(drop, np.ones(records.size))


_FORMS = {"flip_rate": flip_rate_form, "accuracy": accuracy_form, "accuracy_drop": accuracy_drop_form}
_HELP = {
    "flip_rate": "Share of samples whose answer changes when the {what} comes from an image of another class.",
    "accuracy": "Accuracy with the {what} taken from an image of another class.",
    "accuracy_drop": "Accuracy minus accuracy with the {what} taken from an image of another class.",
}
_WHAT = {"border": "outer band (6%)", "corners": "corner patches and bottom strip",
         "lighting": "per-channel brightness (colour cast)"}
_WORDS = {
    ("border", "flip_rate"): "the answer changes on {pct} of samples when the border comes from another class's image",
    ("border", "accuracy"): "with another class's border the model answers right on {pct} of samples",
    ("border", "accuracy_drop"): "another class's border costs {pct} of accuracy",
    ("corners", "flip_rate"): "the answer changes on {pct} of samples when the corners come from another class's "
                              "image",
    ("corners", "accuracy"): "with another class's corners the model answers right on {pct} of samples",
    ("corners", "accuracy_drop"): "another class's corners cost {pct} of accuracy",
    ("lighting", "flip_rate"): "the answer changes on {pct} of samples under another class's lighting",
    ("lighting", "accuracy"): "under another class's lighting the model answers right on {pct} of samples",
    ("lighting", "accuracy_drop"): "another class's lighting costs {pct} of accuracy",
}


def _spec(probe: str, kind: str) -> ScoreSpec:
    share = kind != "accuracy_drop"
    return ScoreSpec(f"{probe}.{kind}", kind == "accuracy", _HELP[kind].format(what=_WHAT[probe]), "shortcuts",
                     partial(_FORMS[kind], probe), proportion=share, probe=probe,
                     bounds=None if share else SIGNED_UNIT, words=_WORDS[(probe, kind)], evidence=SHORTCUTS)


SCORES: tuple[ScoreSpec, ...] = tuple(_spec(probe, kind) for probe in SWAP_VARIANTS for kind in KINDS)

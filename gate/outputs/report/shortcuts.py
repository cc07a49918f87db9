"""The report's shortcut section: each candidate's attention atlas beside the object-frequency map, and the
kept samples whose answer a swap probe changed (original beside probed).

Plain data and pictures (data URIs); the partial ``_shortcuts.j2`` renders it. Self-contained: it reads only
``Records`` (its atlas and kept samples).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np

from gate.metrics.atlas import hot_spot, off_object_share
from gate.metrics.swaps import probed
from gate.outputs.report.pictures import CAM_COLORMAP, image_uri, thumbnail
from gate.records import SWAP_VARIANTS, Atlas, KeptSample, Records

FLIPS_SHOWN = 6  # flipped samples per candidate
CLASSES_SHOWN = 8  # per-class hot spots per candidate (the most predicted classes)


@dataclass(frozen=True)
class ProbedPanel:
    """One swap variant of a sample: its picture and the answer on it."""

    probe: str
    image: str
    pred: str
    flipped: bool


@dataclass(frozen=True)
class FlipRow:
    """A kept sample whose answer changed under a swap probe: the original beside its probed variants."""

    sample_id: str
    label: str
    pred: str
    image: str
    panels: tuple[ProbedPanel, ...]


@dataclass(frozen=True)
class AtlasPanel:
    """A candidate's atlas: the mean map and the object-frequency map (or None), and the hot spots in words."""

    atlas: str
    objects: str | None
    hot_spot: str
    off_object: str
    per_class: tuple[tuple[str, str, int], ...]  # (predicted class, hot spot in words, samples)


@dataclass(frozen=True)
class ShortcutView:
    """One candidate's shortcut section."""

    name: str
    anchor: str
    atlas: AtlasPanel | None
    flips: tuple[FlipRow, ...]
    # (probe, answers it changed over the whole review set) for each swap probe that ran; with ``samples``
    answers_changed: tuple[tuple[str, int], ...] = ()
    samples: int = 0


def shortcut_views(
    names: Sequence[str], anchors: Sequence[str], records: Sequence[Records]
) -> tuple[ShortcutView, ...]:
    """Views of the candidates that have an atlas or swap variants (none: the section says so)."""
    views = []
    for name, anchor, rec in zip(names, anchors, records, strict=True):
        view = ShortcutView(name=name, anchor=anchor, atlas=_atlas_panel(rec), flips=_flips(rec),
                            answers_changed=_answers_changed(rec), samples=rec.size)
        if view.atlas is not None or view.flips or view.answers_changed:
            views.append(view)
    return tuple(views)


def _answers_changed(records: Records) -> tuple[tuple[str, int], ...]:
    """Per swap probe that ran: how many answers over the whole set differ from the original answer."""
    return tuple((probe, int((probed(records, probe) != records.preds).sum()))
                 for probe in SWAP_VARIANTS if probe in records.probe_preds)


def _heat(values: np.ndarray) -> str:
    peak = float(values.max()) if values.size else 0.0
    scaled = values / peak if peak > 0 else values
    colours = np.rint(matplotlib.colormaps[CAM_COLORMAP](scaled)[..., :3] * 255).astype(np.uint8)
    return image_uri(thumbnail(colours))


def _atlas_panel(records: Records) -> AtlasPanel | None:
    atlas: Atlas | None = records.atlas
    if atlas is None or not atlas.count:
        return None
    spot = hot_spot(atlas.mean)
    frequency = atlas.object_frequency
    share = off_object_share(atlas)
    order = np.argsort(-atlas.class_count, kind="stable")[:CLASSES_SHOWN]
    per_class = []
    for c in order:
        count = int(atlas.class_count[c])
        class_spot = hot_spot(atlas.by_class[c]) if count else None
        if class_spot is not None:
            per_class.append((records.classes[int(c)], class_spot.words, count))
    return AtlasPanel(
        atlas=_heat(atlas.mean), objects=None if frequency is None else _heat(frequency),
        hot_spot="no map had any mass" if spot is None else spot.words,
        off_object="no masks" if math.isnan(share) else f"{share:.0%} of the atlas lies where objects never are",
        per_class=tuple(per_class),
    )


def _flips(records: Records) -> tuple[FlipRow, ...]:
    rows = []
    for sample in sorted(records.kept.values(), key=lambda s: s.sample_id):
        probes = [p for p in SWAP_VARIANTS if p in sample.variants]
        if any(sample.variant_preds.get(p, sample.pred) != sample.pred for p in probes):
            rows.append(_flip_row(records, sample, probes))
    return tuple(rows[:FLIPS_SHOWN])


def _flip_row(records: Records, sample: KeptSample, probes: Sequence[str]) -> FlipRow:
    panels = tuple(ProbedPanel(probe=p, image=image_uri(thumbnail(sample.variants[p])),
                               pred=records.class_name(sample.variant_preds[p]),
                               flipped=sample.variant_preds[p] != sample.pred) for p in probes)
    return FlipRow(sample_id=sample.sample_id, label=records.classes[sample.label],
                   pred=sample.pred_name or records.class_name(sample.pred), image=image_uri(thumbnail(sample.image)),
                   panels=panels)

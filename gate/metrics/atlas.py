"""Scores and words from the attention atlas (gate.records.Atlas): where the model looks on average.

The hot spot is the smallest set of grid cells that holds half the atlas's mass (the hottest cells first);
its place is said in words from its mass-weighted centre, on a 3 × 3 division of the frame ("bottom-right
corner", "top edge", "centre"), with its area as a share of the frame. ``atlas.off_object_share`` is the
atlas's mass where the object-frequency map is below ``OFF_OBJECT_LEVEL``: a fixed hot spot where objects
(almost) never are, which flags a fixed off-object shortcut even on samples that have no mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gate.metrics.spec import UNIT, ScoreSpec, SumForm
from gate.metrics.swaps import SHORTCUTS
from gate.records import Atlas, Records

HOT_SPOT_MASS = 0.5
OFF_OBJECT_LEVEL = 0.02  # object share of a cell, averaged over the masked samples: "objects are (almost) never here"
_ROWS = ("top", "middle", "bottom")
_COLS = ("left", "centre", "right")


@dataclass(frozen=True)
class HotSpot:
    """The smallest region holding half the mass: its cells, its share of the frame and its place in words."""

    cells: np.ndarray  # bool [h, w]
    area: float  # share of the frame
    row: float  # mass-weighted centre, 0 (top) .. 1 (bottom)
    col: float  # 0 (left) .. 1 (right)

    @property
    def place(self) -> str:
        """Where, on a 3 × 3 division: "bottom-right corner", "top edge", "left edge", "centre"."""
        r, c = _third(self.row), _third(self.col)
        if r == 1 and c == 1:
            return "centre"
        if r != 1 and c != 1:
            return f"{_ROWS[r]}-{_COLS[c]} corner"
        return f"{_ROWS[r]} edge" if c == 1 else f"{_COLS[c]} edge"

    @property
    def words(self) -> str:
        """e.g. "bottom-right corner, 4% of the image"."""
        return f"{self.place}, {self.area:.0%} of the image"


def _third(x: float) -> int:
    return min(2, max(0, int(x * 3)))


def hot_spot(mean_map: np.ndarray, mass: float = HOT_SPOT_MASS) -> HotSpot | None:
    """The hot spot of a non-negative map (any scale); None for a map without mass.

    Cells are taken hottest first (ties: row-major order) until they hold ``mass`` of the total.
    """
    values = np.asarray(mean_map, dtype=np.float64)
    total = values.sum()
    if not total > 0:
        return None
    flat = values.ravel() / total
    order = np.argsort(-flat, kind="stable")
    taken = int(np.searchsorted(np.cumsum(flat[order]), mass - 1e-12)) + 1
    cells = np.zeros(flat.size, dtype=bool)
    cells[order[:taken]] = True
    cells = cells.reshape(values.shape)
    h, w = values.shape
    weights = np.where(cells, values, 0.0)
    ys, xs = np.mgrid[0:h, 0:w]
    row = float(((ys + 0.5) * weights).sum() / weights.sum() / h)
    col = float(((xs + 0.5) * weights).sum() / weights.sum() / w)
    return HotSpot(cells=cells, area=float(cells.mean()), row=row, col=col)


def off_object_share(atlas: Atlas | None, level: float = OFF_OBJECT_LEVEL) -> float:
    """Atlas mass where the object-frequency map is below ``level``; NaN without maps or masks."""
    if atlas is None or not atlas.count:
        return math.nan
    frequency = atlas.object_frequency
    if frequency is None:
        return math.nan
    return float(atlas.mean[frequency < level].sum())


def _first(sums: np.ndarray) -> np.ndarray:
    return np.asarray(sums[:, 0])


def off_object_form(records: Records) -> SumForm:
    """``atlas.off_object_share`` as a form: the value from the atlas's sums; no per-sample features.

    The atlas is a sum over the whole set, not one number per sample: a resample (which carries no atlas)
    gets NaN features, so the score has a point value and no interval.
    """
    value = off_object_share(records.atlas)
    size = records.size
    return SumForm(np.array([value]), _first, lambda: np.full((size, 1), np.nan))


SCORES: tuple[ScoreSpec, ...] = (
    ScoreSpec("atlas.off_object_share", False,
              "Share of the mean Grad-CAM map where objects (almost) never are: a fixed off-object hot spot "
              "(needs masks on some samples; no interval).",
              "alignment", off_object_form, bounds=UNIT,
              words="{pct} of the mean map lies where objects (almost) never are", evidence=SHORTCUTS),
)

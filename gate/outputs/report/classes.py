"""The report's per-class views: only the classes with samples, and only the worst of them.

A 1000-class model gated on its review set must give a page that stays small and readable:
the per-class table and the per-class deltas show at most ``PER_CLASS_MAX`` rows, worst first,
and never a row for a class without samples. Every per-class score stays in result.json.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gate.outputs.report import plots
from gate.outputs.report.formatting import fmt
from gate.records import Records

# Rows of the per-class table and of the per-class deltas: the worst classes present in the review set.
# A 1000-class model stays readable and small; every per-class score is in result.json.
PER_CLASS_MAX = 20


@dataclass(frozen=True)
class ClassRow:
    """One class of the review set across the report's columns: samples, accuracy and alignment lift."""

    name: str
    samples: int
    accuracy: tuple[str, ...]
    lift: tuple[str, ...]


@dataclass(frozen=True)
class ClassTable:
    """The worst present classes (at most ``PER_CLASS_MAX``), worst first, and how many there are."""

    columns: tuple[str, ...]
    rows: tuple[ClassRow, ...]
    present: int  # classes with at least one sample
    listed: int  # classes the review set lists

    @property
    def note(self) -> str:
        """What the table leaves out, in words ("" when it shows every class)."""
        parts = []
        if len(self.rows) < self.present:
            parts.append(f"the worst {len(self.rows)} of {self.present} classes with samples")
        if self.present < self.listed:
            parts.append(f"{self.listed - self.present} listed classes have no sample and are left out")
        return "; ".join(parts)


def present_deltas(raw: Mapping[str, Any]) -> list[tuple[str, float]]:
    """Per-class deltas that exist: a class without samples has none (null or NaN), so no row."""
    return [(name, float(value)) for name, value in raw.items()
            if isinstance(value, int | float) and math.isfinite(value)]


def worst_deltas(deltas: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """All deltas in review-set order when few; else the ``PER_CLASS_MAX`` largest drops, worst first."""
    if len(deltas) <= PER_CLASS_MAX:
        return deltas
    return sorted(deltas, key=lambda item: item[1])[:PER_CLASS_MAX]  # sorted() is stable: ties keep set order


def class_table(columns: Sequence[str], records: Sequence[Records], candidates: int) -> ClassTable:
    """The worst present classes: lowest accuracy in any of the first ``candidates`` columns first.

    Columns after the candidates (the baseline) are shown beside them but do not choose the rows.
    """
    first = records[0]
    counts = plots.class_counts(first)
    accuracy = [plots.class_accuracy(r) for r in records]
    lift = [plots.class_lift(r) for r in records]
    present = np.flatnonzero(counts > 0)
    # Worst = lowest accuracy over the candidates, then lowest lift; ties keep the review set's order.
    worst_accuracy = np.min(np.stack([a[present] for a in accuracy[:candidates]]), axis=0)
    # A class with no mask has no lift: nanmin warns on its all-NaN column (a review set without masks).
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        worst_lift = np.nan_to_num(np.nanmin(np.stack([x[present] for x in lift[:candidates]]), axis=0), nan=np.inf)
    chosen = present[np.lexsort((np.arange(len(present)), worst_lift, worst_accuracy))][:PER_CLASS_MAX]
    rows = tuple(
        ClassRow(name=first.classes[i], samples=int(counts[i]), accuracy=tuple(fmt(a[i]) for a in accuracy),
                 lift=tuple(fmt(x[i]) for x in lift))
        for i in chosen
    )
    return ClassTable(columns=tuple(columns), rows=rows, present=len(present), listed=len(first.classes))

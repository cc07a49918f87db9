"""A score is one object: what it is computed from, how, and everything the gate says about it.

In the manner of torchmetrics' update/compute split, a :class:`ScoreSpec` declares its score's *form* on a
set of records: either a :class:`SumForm` (per-sample features φ [n, F], their sums over the set, and a
``finish`` that turns sums [r, F] into r values) or, for the scores that depend on the order of the samples
by confidence (``aurc``, ``selective_accuracy@c``), a :class:`RankForm`. The point value is the form's
value on the whole set; every bootstrap or paired resample is the same ``finish`` on the resample's sums
(``counts @ φ``, see :mod:`gate.decide.intervals`). Nothing re-derives a score from its name.

The spec also carries the score's range (a threshold outside it is a policy error), direction, wording,
the report anchor that shows its evidence, whether it is a share of samples (Wilson bounds) and whether the
history shows it. NumPy only: no torch, no report code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from gate.metrics.wording import WORDING, Wording
from gate.records import Records

CLASS_PLACEHOLDER = "<class>"
GROUPS: tuple[str, ...] = ("classification", "calibration", "alignment", "background", "shortcuts", "sanity")

UNIT = (0.0, 1.0)
SIGNED_UNIT = (-1.0, 1.0)
NON_NEGATIVE = (0.0, math.inf)
ANY = (-math.inf, math.inf)

Finish = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True, eq=False)
class SumForm:
    """A score as ``finish(Σ_i c_i φ_i)``, with ``c_i`` the times sample i is counted (1 on the review set).

    ``total`` holds the sums with every sample counted once, taken the way the plain score takes them
    (NaN-free values in sample order, per-bin ``bincount``), so the point value is the score's own number;
    the per-sample features are built only when a resample needs them.
    """

    total: np.ndarray  # [F]
    finish: Finish  # sums [r, F] -> values [r]
    build_features: Callable[[], np.ndarray] = field(repr=False)  # -> φ [n, F]

    @cached_property
    def features(self) -> np.ndarray:
        """φ [n, F]: each sample's contribution to the sums."""
        return self.build_features()

    def value(self) -> float:
        """The score on the whole set."""
        return float(self.finish(self.total[None, :])[0])

    @property
    def is_ratio(self) -> bool:
        """True for ``Σ num / Σ weight`` (features [num, weight])."""
        return self.finish is ratio


@dataclass(frozen=True, eq=False)
class RankForm:
    """A score of the samples in confidence ``order``: ``finish`` maps counts [r, n], in that order, to [r].

    ``full`` is the score on the whole set by its direct formula (equal to ``finish`` of all-ones counts).
    """

    order: np.ndarray
    finish: Finish
    full: float

    def value(self) -> float:
        """The score on the whole set."""
        return self.full


Form = SumForm | RankForm


def ratio(sums: np.ndarray) -> np.ndarray:
    """``Σ num / Σ weight`` per row of sums [r, 2] (NaN where nothing is counted)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(sums[:, 0] / sums[:, 1])


def ratio_form(num: np.ndarray, weight: np.ndarray) -> SumForm:
    """Σ num / Σ weight: a mean (weight 1), a mean over some samples (weight 0/1), or a share of samples."""
    num, weight = np.asarray(num, np.float64), np.asarray(weight, np.float64)
    # The numerator sums only the counted samples, in order: exactly the sum the plain mean of them takes.
    total = np.array([num[weight != 0].sum(), weight.sum()])
    return SumForm(total, ratio, lambda: np.stack([num, weight], axis=1))


def mean_form(values: np.ndarray) -> SumForm:
    """The mean over every sample."""
    values = np.asarray(values, dtype=np.float64)
    return ratio_form(values, np.ones_like(values))


def nan_mean_form(values: np.ndarray, keep: np.ndarray | None = None) -> SumForm:
    """The mean over the finite values (of the samples in ``keep``); NaN marks a sample left out."""
    values = np.asarray(values, dtype=np.float64)
    valid = ~np.isnan(values) if keep is None else ~np.isnan(values) & keep
    return ratio_form(np.where(valid, values, 0.0), valid)


def count_form(hits: np.ndarray) -> SumForm:
    """How many samples are hits (a count, not a share)."""
    column = np.asarray(hits, dtype=np.float64)[:, None]
    return SumForm(np.array([float(np.count_nonzero(hits))]), _first, lambda: column)


def _first(sums: np.ndarray) -> np.ndarray:
    return np.asarray(sums[:, 0])


@dataclass(frozen=True)
class EvidenceLink:
    """Where the report shows a score's evidence: an anchor (suffixed to the candidate's prefix) and what it is."""

    anchor: str
    shows: str


FAILURES_GALLERY = EvidenceLink("gallery-failures", "the failures gallery")
RELIABILITY_PLOT = EvidenceLink("plot-reliability", "the reliability diagram")
CLASS_PLOT = EvidenceLink("plot-class_accuracy", "the per-class accuracy plot")
WRONG_PLOT = EvidenceLink("plot-wrong_by_threshold", "the wrong-by-confidence plot")
GALLERIES = EvidenceLink("galleries", "the Grad-CAM galleries")
WRONG_REASON_GALLERY = EvidenceLink("gallery-wrong_reason", "the right-for-the-wrong-reason gallery")
SHOWROOM = EvidenceLink("showroom", "the showroom")


@dataclass(frozen=True)
class ScoreSpec:
    """One score: name, direction, help, group, its form on records, and how the outputs speak of it.

    ``form`` takes the records (and, for a per-class family such as ``class_accuracy.<class>``, the class
    name) and returns the score's :class:`SumForm` or :class:`RankForm`.
    """

    name: str
    higher_is_better: bool
    help: str
    group: str
    form: Callable[..., Form]
    proportion: bool = False  # a share of samples: Wilson bounds apply
    probe: str | None = None  # "background" | "sanity": computed only when the policy enables it
    bounds: tuple[float, float] | None = None  # the values it can take; None: [0, 1] for a share, else any
    words: str = ""  # format string with {pct}, {value} or {times}: how the score says its value
    evidence: EvidenceLink | None = None  # None: the rule's own row in the report
    history: bool = False  # a key score: `xgate history` and the history page show it

    @property
    def range(self) -> tuple[float, float]:
        """The values the score can take (a threshold outside it is a policy error)."""
        if self.bounds is not None:
            return self.bounds
        return UNIT if self.proportion else ANY

    @property
    def per_class(self) -> bool:
        """True for families such as ``class_accuracy.<class>``."""
        return CLASS_PLACEHOLDER in self.name

    @property
    def wording(self) -> Wording | None:
        """How the score says itself (value sentence, unit, endings, noun): ``gate.metrics.wording.WORDING``."""
        return WORDING.get(self.name)

    def name_class(self, name: str, text: str) -> str:
        """``text`` with "this class" replaced by the class that the concrete score ``name`` names."""
        member = self.member(name)
        return text.replace("this class", f"class {member}") if self.per_class and member else text

    def expand(self, class_name: str) -> str:
        """The concrete score name for one class."""
        return self.name.replace(CLASS_PLACEHOLDER, class_name)

    def member(self, name: str) -> str | None:
        """The class a concrete name of this family names ("" for a plain score); None when not its name."""
        if not self.per_class:
            return "" if name == self.name else None
        prefix, _, suffix = self.name.partition(CLASS_PLACEHOLDER)
        if name.startswith(prefix) and name.endswith(suffix) and len(name) > len(prefix) + len(suffix):
            return name[len(prefix):len(name) - len(suffix)]
        return None

    def form_of(self, records: Records, name: str = "") -> Form:
        """The form of concrete score ``name`` (for a family, the member class it names) on ``records``."""
        if not self.per_class:
            return self.form(records)
        class_name = self.member(name)
        if class_name is None:
            raise ValueError(f"{name!r} is not a member of {self.name}")
        return self.form(records, class_name)

    def values(self, records: Records) -> dict[str, float]:
        """The point value of every concrete name: the score, or one per class of the records for a family."""
        if not self.per_class:
            return {self.name: self.form(records).value()}
        return {self.expand(c): self.form(records, c).value() for c in records.classes}

"""The score registry: every score a policy can name, declared once as data.

The policy validator, the report's arrows and groups, and docs/scores.md all
read this registry. Per-class families carry ``<class>`` in their name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from gate.records import Records

CLASS_PLACEHOLDER = "<class>"
GROUPS: tuple[str, ...] = ("classification", "calibration", "alignment", "background", "sanity")


_UNIT = (0.0, 1.0)
_SIGNED_UNIT = (-1.0, 1.0)
_NON_NEGATIVE = (0.0, math.inf)
# Scores that are not plain shares of samples, by range; a proportion (ScoreSpec.proportion) is in [0, 1].
SCORE_RANGES: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("balanced_accuracy", "worst_class_accuracy", "ece", "overconfidence_error", "mce",
                     "mean_confidence_wrong", "aurc", "alignment.energy", "alignment.rank_accuracy",
                     "alignment.energy.correct", "alignment.energy.wrong"), _UNIT),
    **dict.fromkeys(("nll", "alignment.lift", "alignment.lift.correct", "alignment.lift.wrong",
                     "alignment.lift.class.<class>", "alignment.excluded"), _NON_NEGATIVE),
    "brier": (0.0, 2.0),  # multi-class: sum over classes of (p - y)^2 is at most 2
    **dict.fromkeys(("background.bg_gap", "background.only_bg_chance_adjusted",
                     "sanity.randomization_similarity"), _SIGNED_UNIT),
}


@dataclass(frozen=True)
class ScoreSpec:
    """One score: its name, direction, one-line help, group and pure compute function."""

    name: str
    higher_is_better: bool
    help: str
    group: str
    compute: Callable[[Records], float | Mapping[str, float]]
    proportion: bool = False  # a share of samples: Wilson bounds apply
    probe: str | None = None  # "background" | "sanity": computed only when the policy enables it

    @property
    def range(self) -> tuple[float, float]:
        """The values the score can take (a threshold outside it is a policy error): see SCORE_RANGES."""
        return SCORE_RANGES.get(self.name, (0.0, 1.0) if self.proportion else (-math.inf, math.inf))

    @property
    def per_class(self) -> bool:
        """True for families such as ``class_accuracy.<class>``."""
        return CLASS_PLACEHOLDER in self.name

    def expand(self, class_name: str) -> str:
        """The concrete score name for one class."""
        return self.name.replace(CLASS_PLACEHOLDER, class_name)


def all_specs() -> tuple[ScoreSpec, ...]:
    """Every registered score, in documentation order."""
    from gate.metrics import alignment, classification

    groups: list[Iterable[ScoreSpec]] = [classification.SCORES, alignment.SCORES]
    for module_name in ("background", "sanity"):
        groups.append(_optional_scores(module_name))
    return tuple(spec for group in groups for spec in group)


def _optional_scores(module_name: str) -> tuple[ScoreSpec, ...]:
    import importlib

    try:
        module = importlib.import_module(f"gate.metrics.{module_name}")
    except ModuleNotFoundError:
        return ()
    return tuple(getattr(module, "SCORES", ()))


def get_spec(name: str) -> ScoreSpec | None:
    """The spec behind a concrete score name (``delta.`` prefixes resolve to their score), or None."""
    base = name.removeprefix("delta.")
    for spec in all_specs():
        if spec.name == base:
            return spec
        if spec.per_class:
            prefix, _, suffix = spec.name.partition(CLASS_PLACEHOLDER)
            if base.startswith(prefix) and base.endswith(suffix) and len(base) > len(prefix) + len(suffix):
                return spec
    return None


def known_names(classes: Collection[str], probes: Collection[str]) -> tuple[str, ...]:
    """Every concrete score name for a review set's classes and the enabled probes."""
    names: list[str] = []
    for spec in all_specs():
        if spec.probe is not None and spec.probe not in probes:
            continue
        names.extend(spec.expand(c) for c in classes) if spec.per_class else names.append(spec.name)
    return tuple(names)


def compute_scores(
    records: Records, probes: Collection[str] = (), only: Collection[str] | None = None
) -> dict[str, float]:
    """All scores for ``records`` (probe scores only for the enabled probes), or just the specs behind ``only``."""
    wanted = None if only is None else {spec.name for spec in map(get_spec, only) if spec is not None}
    values: dict[str, float] = {}
    for spec in all_specs():
        if spec.probe is not None and spec.probe not in probes:
            continue
        if wanted is not None and spec.name not in wanted:
            continue
        result = spec.compute(records)
        if spec.per_class:
            assert isinstance(result, Mapping)
            for class_name, value in result.items():
                values[spec.expand(class_name)] = float(value)
        else:
            assert not isinstance(result, Mapping)
            values[spec.name] = float(result)
    return values


def is_better(name: str, candidate: float, reference: float) -> bool:
    """True when ``candidate`` is strictly better than ``reference`` for score ``name``."""
    spec = get_spec(name)
    if spec is None or math.isnan(candidate) or math.isnan(reference):
        return False
    return candidate > reference if spec.higher_is_better else candidate < reference

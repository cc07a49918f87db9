"""The score registry: every score a policy can name, each declared once as a ``ScoreSpec`` in its family module.

The policy validator, the intervals, the comparison, the report's arrows, words, plots and evidence links,
the history and docs/scores.md all read this registry. Per-class families carry ``<class>`` in their name.
"""

from __future__ import annotations

import math
from collections.abc import Collection

from gate.metrics.alignment import SCORES as ALIGNMENT
from gate.metrics.atlas import SCORES as ATLAS
from gate.metrics.background import SCORES as BACKGROUND
from gate.metrics.classification import SCORES as CLASSIFICATION
from gate.metrics.sanity import SCORES as SANITY
from gate.metrics.spec import CLASS_PLACEHOLDER, GROUPS, ScoreSpec
from gate.metrics.swaps import SCORES as SWAPS
from gate.metrics.wording import number, percent
from gate.records import Records

__all__ = ["CLASS_PLACEHOLDER", "GROUPS", "SPECS", "ScoreSpec", "all_specs", "compute_scores", "get_spec",
           "known_names", "number", "percent", "say", "spec_of", "value_of"]

# Documentation order.
SPECS: tuple[ScoreSpec, ...] = (*CLASSIFICATION, *ALIGNMENT, *ATLAS, *BACKGROUND, *SWAPS, *SANITY)
_BY_NAME = {spec.name: spec for spec in SPECS}
_FAMILIES = tuple(spec for spec in SPECS if spec.per_class)
# The scores the history shows, in registry order.
HISTORY_SCORES: tuple[str, ...] = tuple(spec.name for spec in SPECS if spec.history)


def all_specs() -> tuple[ScoreSpec, ...]:
    """Every registered score, in documentation order."""
    return SPECS


def get_spec(name: str) -> ScoreSpec | None:
    """The spec behind a concrete score name (``delta.`` prefixes resolve to their score), or None."""
    base = name.removeprefix("delta.")
    found = _BY_NAME.get(base)
    if found is not None:
        return found
    return next((spec for spec in _FAMILIES if spec.member(base) is not None), None)


def spec_of(name: str) -> ScoreSpec:
    """The spec behind concrete score ``name`` (KeyError for a name no spec has, ``delta.`` names included)."""
    spec = get_spec(name)
    if spec is None or name.startswith("delta."):
        raise KeyError(name)
    return spec


def value_of(name: str, records: Records) -> float:
    """The point value of concrete score ``name`` on ``records`` (KeyError for an unknown name)."""
    return spec_of(name).form_of(records, name).value()


def known_names(classes: Collection[str], probes: Collection[str]) -> tuple[str, ...]:
    """Every concrete score name for a review set's classes and the enabled probes."""
    names: list[str] = []
    for spec in SPECS:
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
    for spec in SPECS:
        if spec.probe is not None and spec.probe not in probes:
            continue
        if wanted is not None and spec.name not in wanted:
            continue
        values.update(spec.values(records))
    return values


def say(name: str, value: float | None) -> str:
    """Score ``name`` at ``value`` in words ("the map lands off the object on 97.7% of samples"), true at every
    value (its ``Wording``: the sentence at 0, below 0 or at 1 where the general one would mislead).

    Unknown scores and missing values get a plain "<name> = <value>"; ``delta.`` names say the change.
    """
    if value is None or not math.isfinite(value):
        return f"{name} could not be computed"
    if name.startswith("delta."):
        base = name.removeprefix("delta.").partition("@")[0]
        return f"{base} changed by {value:+.4g} against the baseline"
    spec = get_spec(name)
    if spec is None or spec.wording is None:
        return f"{name} = {value:.4g}"
    wording = spec.wording
    template = wording.says
    if value == 0 and wording.at_zero:
        template = wording.at_zero
    elif value == 1 and wording.at_one:
        template = wording.at_one
    elif value < 0 and wording.below_zero:
        template = wording.below_zero
        value = -value
    return spec.name_class(name, template.format(v=number(value, wording.unit)))

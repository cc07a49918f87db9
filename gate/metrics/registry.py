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
GROUPS: tuple[str, ...] = ("classification", "calibration", "alignment", "background", "shortcuts", "sanity")


_UNIT = (0.0, 1.0)
_SIGNED_UNIT = (-1.0, 1.0)
_NON_NEGATIVE = (0.0, math.inf)
# Scores that are not plain shares of samples, by range; a proportion (ScoreSpec.proportion) is in [0, 1].
SCORE_RANGES: dict[str, tuple[float, float]] = {
    **dict.fromkeys(("balanced_accuracy", "worst_class_accuracy", "ece", "overconfidence_error", "mce",
                     "mean_confidence_wrong", "aurc", "alignment.energy", "alignment.rank_accuracy",
                     "alignment.energy.correct", "alignment.energy.wrong", "atlas.off_object_share"), _UNIT),
    **dict.fromkeys(("nll", "alignment.lift", "alignment.lift.correct", "alignment.lift.wrong",
                     "alignment.lift.class.<class>", "alignment.excluded", "alignment.zero_maps",
                     "sanity.randomization_similarity.spread"), _NON_NEGATIVE),
    "brier": (0.0, 2.0),  # multi-class: sum over classes of (p - y)^2 is at most 2
    **dict.fromkeys(("background.bg_gap", "background.only_bg_chance_adjusted",
                     "sanity.randomization_similarity", "border.accuracy_drop", "corners.accuracy_drop",
                     "lighting.accuracy_drop"), _SIGNED_UNIT),
}


# How each score says its value in words, for the report's reasons and the job summary: a format string with
# {pct} (the value as a percentage), {value} (4 significant digits) or {times} (the value as "2.3×").
# Declared here, as data beside SCORE_RANGES, so every member module's ScoreSpec reads it by name.
WORDS: dict[str, str] = {
    "accuracy": "the model answers right on {pct} of samples",
    "balanced_accuracy": "averaged over classes, the model answers right on {pct} of samples",
    "worst_class_accuracy": "the worst class is answered right on {pct} of its samples",
    "class_accuracy.<class>": "this class is answered right on {pct} of its samples",
    "selective_accuracy@0.8": "on its 80% most confident answers the model is right {pct} of the time",
    "nll": "the true class gets a mean negative log-likelihood of {value}",
    "brier": "the probabilities miss the true answer by a Brier score of {value}",
    "ece": "stated confidence and real accuracy differ by {pct} on average",
    "overconfidence_error": "the model claims {pct} more confidence than it earns on average",
    "mce": "in its worst confidence bin the model is off by {pct}",
    "confident_wrong_rate@0.9": "{pct} of samples are wrong with at least 90% confidence",
    "confident_wrong_rate@0.99": "{pct} of samples are wrong with at least 99% confidence",
    "mean_confidence_wrong": "wrong answers still come with {pct} confidence on average",
    "aurc": "the risk-coverage curve has an area of {value}",
    "alignment.energy": "{pct} of the map's mass lies on the object",
    "alignment.lift": "the map puts {times} the mass on the object that a uniform map would",
    "alignment.pointing_game": "the map's peak lands on the object on {pct} of samples",
    "alignment.rank_accuracy": "{pct} of the map's hottest pixels are on the object",
    "alignment.off_object_rate": "the map lands off the object on {pct} of samples",
    "alignment.coverage": "{pct} of samples could be scored for alignment",
    "alignment.excluded": "{value} samples were left out of alignment",
    "alignment.zero_maps": "{value} samples with a mask got an all-zero map",
    "alignment.lift.correct": "on right answers the map puts {times} the uniform mass on the object",
    "alignment.lift.wrong": "on wrong answers the map puts {times} the uniform mass on the object",
    "alignment.energy.correct": "on right answers {pct} of the map's mass lies on the object",
    "alignment.energy.wrong": "on wrong answers {pct} of the map's mass lies on the object",
    "alignment.lift.class.<class>": "for this class the map puts {times} the uniform mass on the object",
    "atlas.off_object_share": "{pct} of the mean map lies where objects (almost) never are",
    "background.only_fg_accuracy": "with the scene removed the model answers right on {pct} of samples",
    "background.only_bg_accuracy": "the scene alone gives the right answer {pct} of the time",
    "background.only_bg_chance_adjusted": "the scene alone beats chance by {pct} of the possible margin",
    "background.mixed_same_accuracy": "on another scene of its own class the object is recognised {pct} of the time",
    "background.mixed_rand_accuracy": "on another class's scene the object is recognised {pct} of the time",
    "background.bg_gap": "a matching scene adds {pct} to accuracy: the scene, not the object, carries the answer",
    "background.flip_rate": "the answer changes on {pct} of samples when the object moves to another scene",
    "border.flip_rate": "the answer changes on {pct} of samples when the border comes from another class's image",
    "border.accuracy": "with another class's border the model answers right on {pct} of samples",
    "border.accuracy_drop": "another class's border costs {pct} of accuracy",
    "corners.flip_rate": "the answer changes on {pct} of samples when the corners come from another class's image",
    "corners.accuracy": "with another class's corners the model answers right on {pct} of samples",
    "corners.accuracy_drop": "another class's corners cost {pct} of accuracy",
    "lighting.flip_rate": "the answer changes on {pct} of samples under another class's lighting",
    "lighting.accuracy": "under another class's lighting the model answers right on {pct} of samples",
    "lighting.accuracy_drop": "another class's lighting costs {pct} of accuracy",
    "sanity.randomization_similarity": "maps stay {value} similar (Spearman) when the top layers are randomised",
    "sanity.randomization_similarity.spread": "the sanity similarity varies by {value} across random copies",
}


def say(name: str, value: float | None) -> str:
    """Score ``name`` at ``value`` in words ("the map lands off the object on 98% of samples").

    Unknown scores and missing values get a plain "<name> = <value>"; ``delta.`` names say the change.
    """
    if value is None or not math.isfinite(value):
        return f"{name} could not be computed"
    if name.startswith("delta."):
        base = name.removeprefix("delta.").partition("@")[0]
        return f"{base} changed by {value:+.4g} against the baseline"
    spec = get_spec(name)
    template = spec.words if spec is not None else ""
    if not template:
        return f"{name} = {value:.4g}"
    text = template.format(pct=f"{value:.0%}" if abs(value) >= 0.01 or value == 0 else f"{value:.1%}",
                           value=f"{value:.4g}", times=f"{value:.2g}×")
    if spec is not None and spec.per_class:
        prefix, _, suffix = spec.name.partition(CLASS_PLACEHOLDER)
        class_name = name[len(prefix):len(name) - len(suffix)] if suffix else name[len(prefix):]
        text = text.replace("this class", f"class {class_name}")
    return text


@dataclass(frozen=True)
class ScoreSpec:
    """One score: its name, direction, one-line help, group and pure compute function."""

    name: str
    higher_is_better: bool
    help: str
    group: str
    compute: Callable[[Records], float | Mapping[str, float]]
    proportion: bool = False  # a share of samples: Wilson bounds apply
    probe: str | None = None  # "background" | "sanity" | a swap probe: computed only when the policy enables it

    @property
    def range(self) -> tuple[float, float]:
        """The values the score can take (a threshold outside it is a policy error): see SCORE_RANGES."""
        return SCORE_RANGES.get(self.name, (0.0, 1.0) if self.proportion else (-math.inf, math.inf))

    @property
    def words(self) -> str:
        """How the score says its value in words (a format string from ``WORDS``; "" when none)."""
        return WORDS.get(self.name, "")

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
    for module_name in ("atlas", "background", "swaps", "sanity"):
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

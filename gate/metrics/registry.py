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
                     "alignment.lift.class.<class>", "alignment.excluded", "alignment.zero_maps",
                     "sanity.randomization_similarity.spread"), _NON_NEGATIVE),
    "brier": (0.0, 2.0),  # multi-class: sum over classes of (p - y)^2 is at most 2
    **dict.fromkeys(("background.bg_gap", "background.only_bg_chance_adjusted",
                     "sanity.randomization_similarity"), _SIGNED_UNIT),
}


@dataclass(frozen=True)
class Wording:
    """How a score says itself in the report, the console, the job summary and JUnit.

    ``says`` is the value sentence, ``{v}`` the value in the score's ``unit``: ``pct`` (a fraction shown as
    "91.3%"; its changes in points), ``times`` ("2.30×"), ``value`` (4 significant digits) or ``count``.
    ``at_zero`` and ``below_zero`` replace it where the general sentence would say something false at 0 or
    below (``{v}`` is then the magnitude); ``bad`` is added only when the value itself is on the failing side of
    its rule; ``noun`` names the score in a comparison with the baseline ("accuracy is 1.2 points below ...").
    """

    says: str
    noun: str
    unit: str = "pct"
    at_zero: str = ""
    below_zero: str = ""
    bad: str = ""
    at_one: str = ""  # counts: the singular ("1 sample was ...")


_W = Wording
# Declared here, as data beside SCORE_RANGES, so every member module's ScoreSpec reads it by name.
WORDING: dict[str, Wording] = {
    "accuracy": _W("the model answers right on {v} of samples", "accuracy"),
    "balanced_accuracy": _W("averaged over classes, the model answers right on {v} of samples",
                            "balanced accuracy"),
    "worst_class_accuracy": _W("the worst class is answered right on {v} of its samples", "worst-class accuracy"),
    "class_accuracy.<class>": _W("this class is answered right on {v} of its samples", "this class's accuracy"),
    "selective_accuracy@0.8": _W("on its 80% most confident answers the model is right {v} of the time",
                                 "accuracy on the 80% most confident answers"),
    "nll": _W("the true class gets a mean negative log-likelihood of {v}", "NLL", "value"),
    "brier": _W("the probabilities miss the true answer by a Brier score of {v}", "the Brier score", "value"),
    "ece": _W("stated confidence and real accuracy differ by {v} on average", "ECE",
              at_zero="stated confidence matches real accuracy exactly"),
    "overconfidence_error": _W("the model claims {v} more confidence than it earns on average", "over-confidence",
                               at_zero="the model never claims more confidence than it earns"),
    "mce": _W("in its worst confidence bin the model is off by {v}", "MCE",
              at_zero="in every confidence bin stated confidence matches real accuracy"),
    "confident_wrong_rate@0.9": _W("{v} of samples are wrong with at least 90% confidence",
                                   "the share wrong at ≥ 90% confidence",
                                   at_zero="no sample is wrong with 90% confidence or more"),
    "confident_wrong_rate@0.99": _W("{v} of samples are wrong with at least 99% confidence",
                                    "the share wrong at ≥ 99% confidence",
                                    at_zero="no sample is wrong with 99% confidence or more"),
    "mean_confidence_wrong": _W("wrong answers still come with {v} confidence on average",
                                "the confidence of wrong answers"),
    "aurc": _W("the risk-coverage curve has an area of {v}", "AURC", "value"),
    "alignment.energy": _W("{v} of the map's mass lies on the object", "the map's mass on the object"),
    "alignment.lift": _W("the map puts {v} the mass on the object that a uniform map would", "alignment lift",
                         "times", at_zero="the map puts no mass on the object"),
    "alignment.pointing_game": _W("the map's peak lands on the object on {v} of samples", "the pointing game"),
    "alignment.rank_accuracy": _W("{v} of the map's hottest pixels are on the object", "rank accuracy"),
    "alignment.off_object_rate": _W("the map lands off the object on {v} of samples", "the off-object rate",
                                    at_zero="the map never lands off the object"),
    "alignment.coverage": _W("{v} of samples could be scored for alignment", "alignment coverage"),
    "alignment.excluded": _W("{v} samples were left out of alignment", "the count of samples left out of alignment",
                             "count", at_zero="no sample was left out of alignment",
                             at_one="1 sample was left out of alignment"),
    "alignment.zero_maps": _W("{v} samples with a mask got an all-zero map", "the count of all-zero maps", "count",
                              at_zero="no sample with a mask got an all-zero map",
                              at_one="1 sample with a mask got an all-zero map"),
    "alignment.lift.correct": _W("on right answers the map puts {v} the uniform mass on the object",
                                 "lift on right answers", "times"),
    "alignment.lift.wrong": _W("on wrong answers the map puts {v} the uniform mass on the object",
                               "lift on wrong answers", "times"),
    "alignment.energy.correct": _W("on right answers {v} of the map's mass lies on the object",
                                   "the mass on the object for right answers"),
    "alignment.energy.wrong": _W("on wrong answers {v} of the map's mass lies on the object",
                                 "the mass on the object for wrong answers"),
    "alignment.lift.class.<class>": _W("for this class the map puts {v} the uniform mass on the object",
                                       "this class's lift", "times"),
    "background.only_fg_accuracy": _W("with the scene removed the model answers right on {v} of samples",
                                      "accuracy without the scene"),
    "background.only_bg_accuracy": _W("the scene alone gives the right answer {v} of the time",
                                      "accuracy from the scene alone", bad="the scene alone carries part of the answer",
                                      at_zero="the scene alone never gives the right answer"),
    "background.only_bg_chance_adjusted": _W("the scene alone beats chance by {v} of the possible margin",
                                             "the scene's margin over chance",
                                             at_zero="the scene alone does no better than chance",
                                             below_zero="the scene alone does worse than chance, by {v} of the "
                                                        "possible margin",
                                             bad="the scene alone carries part of the answer"),
    "background.mixed_same_accuracy": _W("on another scene of its own class the object is recognised {v} of the "
                                         "time", "accuracy on a same-class scene"),
    "background.mixed_rand_accuracy": _W("on another class's scene the object is recognised {v} of the time",
                                         "accuracy on another class's scene"),
    "background.bg_gap": _W("a matching scene adds {v} to accuracy", "the background gap",
                            at_zero="a matching scene adds nothing to accuracy",
                            below_zero="a matching scene lowers accuracy by {v}",
                            bad="the scene, not only the object, carries the answer"),
    "background.flip_rate": _W("the answer changes on {v} of samples when the object moves to another scene",
                               "the flip rate", at_zero="no answer changes when the object moves to another scene",
                               bad="the answer often follows the scene"),
    "sanity.randomization_similarity": _W("maps keep a Spearman similarity of {v} when the top layers are randomised",
                                          "the sanity similarity", "value",
                                          bad="the maps barely depend on the trained weights"),
    "sanity.randomization_similarity.spread": _W("the sanity similarity varies by {v} across random copies",
                                                 "the sanity spread", "value"),
}
# The value sentences alone (kept for readers of the old table).
WORDS: dict[str, str] = {name: wording.says for name, wording in WORDING.items()}


def _number(value: float, unit: str) -> str:
    if unit == "pct":
        return percent(value)
    if unit == "times":
        return f"{value:.2f}×"
    if unit == "count":
        return f"{value:.0f}"
    return f"{value:.4g}"


def percent(value: float) -> str:
    """A fraction as a percentage: one decimal ("91.3%"), two below 1% ("0.75%"), no trailing ".0" ("90%")."""
    shown = abs(value) * 100
    text = f"{shown:.2f}" if 0 < shown < 1 else f"{shown:.1f}"
    text = text.removesuffix(".0") if text.endswith(".0") else text
    return ("-" if value < 0 and text.strip("0.") else "") + text + "%"


def say(name: str, value: float | None) -> str:
    """Score ``name`` at ``value`` in words ("the map lands off the object on 97.7% of samples").

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
    text = template.format(v=_number(value, wording.unit))
    return spec.name_class(name, text)


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
    def words(self) -> str:
        """How the score says its value in words (a format string from ``WORDING``; "" when none)."""
        wording = self.wording
        return "" if wording is None else wording.says

    @property
    def wording(self) -> Wording | None:
        """The score's sentences and unit (``WORDING``); None when it has none."""
        return WORDING.get(self.name)

    def name_class(self, name: str, text: str) -> str:
        """``text`` with "this class" replaced by the class that the concrete score ``name`` names."""
        if not self.per_class:
            return text
        prefix, _, suffix = self.name.partition(CLASS_PLACEHOLDER)
        class_name = name[len(prefix):len(name) - len(suffix)] if suffix else name[len(prefix):]
        return text.replace("this class", f"class {class_name}")

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

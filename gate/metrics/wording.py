"""How each score says itself: the sentence forms of every registered score, as data.

``ScoreSpec.wording`` reads this table by the score's name; the report, the console, the job summary and JUnit
say rules through it (gate/outputs/sentences.py). Plain data, no imports beyond the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass


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
# By score name (a family's name keeps its <class>); ScoreSpec.wording reads it.
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
    "atlas.off_object_share": _W("{v} of the mean map lies where objects (almost) never are",
                                 "the mean map's share where objects never are",
                                 at_zero="none of the mean map lies where objects (almost) never are",
                                 bad="the model looks at fixed places of the image"),
    "border.flip_rate": _W("the answer changes on {v} of samples when the border comes from another"
                           " class's image", "the border flip rate",
                          at_zero="no answer changes when the border comes from another class's"
                                  " image", bad="the border carries part of the answer"),
    "border.accuracy": _W("with another class's border the model answers right on {v} of samples",
                         "accuracy with another class's border"),
    "border.accuracy_drop": _W("another class's border costs {v} of accuracy",
                              "the accuracy lost to another class's border",
                              at_zero="another class's border costs no accuracy",
                              below_zero="another class's border raises accuracy by {v}",
                              bad="the border carries part of the answer"),
    "corners.flip_rate": _W("the answer changes on {v} of samples when the corners come from another"
                            " class's image", "the corners flip rate",
                          at_zero="no answer changes when the corners come from another class's"
                                  " image", bad="the corners carry part of the answer"),
    "corners.accuracy": _W("with another class's corners the model answers right on {v} of samples",
                         "accuracy with another class's corners"),
    "corners.accuracy_drop": _W("another class's corners cost {v} of accuracy",
                              "the accuracy lost to another class's corners",
                              at_zero="another class's corners cost no accuracy",
                              below_zero="another class's corners raise accuracy by {v}",
                              bad="the corners carry part of the answer"),
    "lighting.flip_rate": _W("the answer changes on {v} of samples under another class's"
                             " lighting", "the lighting flip rate",
                          at_zero="no answer changes under another class's"
                                  " lighting", bad="the lighting carries part of the answer"),
    "lighting.accuracy": _W("under another class's lighting the model answers right on {v} of samples",
                         "accuracy with another class's lighting"),
    "lighting.accuracy_drop": _W("another class's lighting costs {v} of accuracy",
                              "the accuracy lost to another class's lighting",
                              at_zero="another class's lighting costs no accuracy",
                              below_zero="another class's lighting raises accuracy by {v}",
                              bad="the lighting carries part of the answer"),
    "sanity.randomization_similarity.spread": _W("the sanity similarity varies by {v} across random copies",
                                                 "the sanity spread", "value"),
}


def number(value: float, unit: str) -> str:
    """``value`` in ``unit`` ("91.3%", "2.30×", "12", "0.1234")."""
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

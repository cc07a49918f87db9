"""The report's pictures of samples: gallery tiles and the showroom of probe variants.

Views are frozen dataclasses the templates read; pictures are rendered here (gate.outputs.report.pictures).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from gate.outputs.report.pictures import sample_pictures, variant_uri
from gate.records import NO_VARIANT, PROBE_VARIANTS, KeptSample, Records
from gate.result import CandidateResult

# In the order that argues a verdict: what went wrong, what was right by luck, what was close, then the easy.
GALLERY_TITLES: Mapping[str, tuple[str, str]] = {
    "failures": ("Failures", "wrong predictions, the most confident first"),
    "wrong_reason": ("Right for the wrong reason", "right answers whose map puts less mass on the object than a "
                     "uniform map would (lift < 1), the lowest lift first"),
    "borderline": ("Borderline", "right or wrong, the runner-up came within 0.5 of the top answer; smallest margin "
                   "first"),
    "easy": ("Easy", "right and confident"),
}
# Showroom panels: (variant key, title); "original" is the kept image itself.
SHOWROOM_PANELS: tuple[tuple[str, str], ...] = (
    ("original", "Original"),
    ("only_fg", "Only the object"),
    ("mixed_rand", "Object on another scene"),
    ("only_bg", "Only the background"),
)
SHOWROOM_MAX = 6
# "Right without the object" is flagged only when the scene tells the model the class: among the samples of
# class c, the share whose only_bg answer is c must close at least this part of the gap between the model's
# overall share of c answers on empty scenes and certainty ((rate_c - share_c) / (1 - share_c)). A model
# that answers "circle" to every empty scene has rate = share = 1 for circles: the right answer is its
# default, not something it read from the scene, and is not flagged. A scene reader (rate ~0.9 against a
# share ~0.25) is flagged for every class.
SCENE_TELLS = 0.5
OUTSIDE_NAME = "(outside the review set)"  # a prediction of a model output the review set does not hold


@dataclass(frozen=True)
class BaselineTile:
    """The baseline's view of a gallery sample."""

    pred: str
    confidence: str
    correct: bool
    overlay: str


@dataclass(frozen=True)
class Tile:
    """One gallery sample: image with mask outline, Grad-CAM overlay, and the baseline's overlay."""

    sample_id: str
    label: str
    pred: str
    confidence: str
    correct: bool
    image: str
    overlay: str
    baseline: BaselineTile | None
    anchor: str = ""  # element id of the full-size view (a popover, no script)
    note: str = ""  # borderline: the margin to the runner-up, the reason the engine picked it
    lift: str = ""  # the map's mass on the object over a uniform map's, two digits ("0.42"); "" without a mask


@dataclass(frozen=True)
class GalleryView:
    """One gallery (easy, borderline or failures)."""

    kind: str
    title: str
    blurb: str
    tiles: tuple[Tile, ...]
    anchor: str = ""


@dataclass(frozen=True)
class ShowroomPanel:
    """One picture of the showroom test with the model's answer on it."""

    variant: str
    title: str
    image: str
    pred: str
    correct: bool
    good: bool  # the answer a model that reads the object would give (kept for the JSON-like view)
    tone: str = "hit"  # hit (as expected), changed (answer moved: look closer), miss (the scene gave it away)


@dataclass(frozen=True)
class ShowroomRow:
    """One sample across the background probes."""

    sample_id: str
    label: str
    flipped: bool  # the answer changed when the object moved to another scene
    panels: tuple[ShowroomPanel, ...]
    scene_tells: bool = False  # right on the empty scene, and not the model's default answer there


def _class_name(classes: Sequence[str], index: int, model_name: str = "") -> str:
    if 0 <= index < len(classes):
        return classes[index]
    # A model output outside the review set: the model's own name for it when the engine kept one.
    return f"{model_name} {OUTSIDE_NAME}" if model_name else OUTSIDE_NAME


def _baseline_tile(sample: KeptSample | None, classes: Sequence[str]) -> BaselineTile | None:
    if sample is None:
        return None
    pictures = sample_pictures(sample.image, sample.mask, sample.cam)
    return BaselineTile(
        pred=_class_name(classes, sample.pred, sample.pred_name), confidence=f"{sample.confidence:.2f}",
        correct=sample.pred == sample.label, overlay=pictures.overlay,
    )


def tile(
    sample: KeptSample, classes: Sequence[str], baseline: KeptSample | None, anchor: str = "",
    lift: float = math.nan,
) -> Tile:
    """One gallery tile; ``baseline`` is the baseline's kept sample with the same id, if any; ``lift`` the
    sample's lift (``Records.lift``)."""
    pictures = sample_pictures(sample.image, sample.mask, sample.cam)
    return Tile(
        sample_id=sample.sample_id, label=_class_name(classes, sample.label),
        pred=_class_name(classes, sample.pred, sample.pred_name),
        confidence=f"{sample.confidence:.2f}", correct=sample.pred == sample.label, image=pictures.image,
        overlay=pictures.overlay, baseline=_baseline_tile(baseline, classes), anchor=anchor,
        lift=f"{lift:.2f}" if math.isfinite(lift) else "",
    )


def interleave_classes(samples: Sequence[KeptSample]) -> list[KeptSample]:
    """Samples in round-robin order over their labels (first seen label first), each label's order kept.

    The engine picks a gallery by confidence or margin; shown in that order a gallery is often one class.
    """
    by_label: dict[int, list[KeptSample]] = {}
    for sample in samples:
        by_label.setdefault(sample.label, []).append(sample)
    queues = list(by_label.values())
    out: list[KeptSample] = []
    for depth in range(max((len(q) for q in queues), default=0)):
        out.extend(q[depth] for q in queues if depth < len(q))
    return out


# Which kept samples may stand in a gallery: easy = right, failures = wrong (borderline needs the margin).
_OF_KIND = {"easy": lambda s: s.pred == s.label, "failures": lambda s: s.pred != s.label}


def stratify(
    kind: str, ids: Sequence[str], kept: Mapping[str, KeptSample], taken: frozenset[str] = frozenset()
) -> list[KeptSample]:
    """The engine's picks for a gallery, with classes it left out filled in from the other kept samples.

    The engine keeps the top samples by confidence (often one class) plus a few fixed samples per class. A
    class without a pick gets its most confident kept sample of the kind not ``taken`` by another gallery
    (a borderline sample is not "easy"); to keep the gallery's size, the
    lowest-ranked picks of the most shown class make room. Borderline stays as picked.
    """
    picks = [kept[i] for i in ids if i in kept]
    fits = _OF_KIND.get(kind)
    if fits is None or not picks:
        return picks
    shown = {s.label for s in picks}
    extra: dict[int, KeptSample] = {}
    for sample in sorted(kept.values(), key=lambda s: -s.confidence):  # stable: ties keep the kept order
        if sample.label not in shown and sample.label not in extra and sample.sample_id not in taken and fits(sample):
            extra[sample.label] = sample
    for label in sorted(extra):
        counts = {c: sum(s.label == c for s in picks) for c in {s.label for s in picks}}
        crowded = max(counts, key=lambda c: (counts[c], -c))
        if counts[crowded] < 2:
            break  # every class shown once already: nothing to give up
        drop = max(i for i, s in enumerate(picks) if s.label == crowded)
        picks = picks[:drop] + picks[drop + 1:] + [extra[label]]
    return picks


def _margins(records: Records, ids: Sequence[str]) -> dict[str, str]:
    """"margin 0.04 to the runner-up" per id: the gap between the top two probabilities over all outputs."""
    wanted = set(ids)
    rows = {sample_id: i for i, sample_id in enumerate(records.ids) if sample_id in wanted}
    confidence, runner_up = records.confidence, records.runner_up
    return {s: f"margin {float(confidence[i]) - float(runner_up[i]):.2f} to the runner-up" for s, i in rows.items()}


def galleries(result: CandidateResult, baseline: CandidateResult | None, prefix: str = "c0") -> tuple[GalleryView, ...]:
    """Failures, right for the wrong reason, borderline and easy galleries, stratified and with classes
    interleaved (ids missing from ``records.kept`` are skipped)."""
    kept = result.records.kept
    baseline_kept: Mapping[str, KeptSample] = {} if baseline is None else baseline.records.kept
    lifts = dict(zip(result.records.ids, result.records.lift.tolist(), strict=True))
    views = []
    taken = frozenset(i for kind in GALLERY_TITLES for i in getattr(result.gallery, kind, ()))
    for kind, (title, blurb) in GALLERY_TITLES.items():
        chosen = interleave_classes(stratify(kind, getattr(result.gallery, kind, ()), kept, taken))
        notes = _margins(result.records, [s.sample_id for s in chosen]) if kind == "borderline" else {}
        tiles = tuple(replace(tile(s, result.records.classes, baseline_kept.get(s.sample_id), f"{prefix}-{kind}-{n}",
                                   lifts.get(s.sample_id, math.nan)), note=notes.get(s.sample_id, ""))
                      for n, s in enumerate(chosen))
        views.append(GalleryView(kind=kind, title=title, blurb=blurb, tiles=tiles, anchor=f"{prefix}-gallery-{kind}"))
    return tuple(views)


def scene_tells(records: Records) -> np.ndarray:
    """Per class (review-set order): True when the empty scene tells the model that class (see SCENE_TELLS).

    rate_c = share of class-c samples answered c on their empty scene; share_c = share of all empty scenes
    answered c. Flagged when (rate_c - share_c) / (1 - share_c) >= SCENE_TELLS.
    """
    n_classes = len(records.classes)
    answers = records.probe_preds.get("only_bg")
    if answers is None:
        return np.zeros(n_classes, dtype=bool)
    built = answers != NO_VARIANT
    labels, answers = records.labels[built], answers[built]
    if labels.size == 0:
        return np.zeros(n_classes, dtype=bool)
    counts = np.bincount(labels, minlength=n_classes)
    right = np.bincount(labels[answers == labels], minlength=n_classes)
    share = np.bincount(answers[answers >= 0], minlength=n_classes)[:n_classes] / labels.size
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = right / counts
        told = (rate - share) / (1.0 - share)
    tells: np.ndarray = np.asarray(np.nan_to_num(told, nan=0.0) >= SCENE_TELLS) & (share < 1.0)
    return tells


def only_bg_default(records: Records) -> str:
    """The model's most common answer on empty scenes and its share ("circle, 95% of empty scenes")."""
    answers = records.probe_preds.get("only_bg")
    if answers is None:
        return ""
    answers = answers[answers != NO_VARIANT]
    if answers.size == 0:
        return ""
    values, counts = np.unique(answers, return_counts=True)
    top = int(np.argmax(counts))  # np.unique sorts: ties go to the lower index
    return f"{records.class_name(int(values[top]))}, {counts[top] / answers.size:.0%} of empty scenes"


def _changed(sample: KeptSample) -> bool:
    """The answer moved when the scene changed or went (only_bg is expected to differ, so it does not count)."""
    return any(sample.variant_preds.get(v, sample.pred) != sample.pred for v in ("only_fg", "mixed_same", "mixed_rand"))


def showroom_row(sample: KeptSample, classes: Sequence[str], tells: bool = False) -> ShowroomRow:
    """The showroom test for one sample: original and its probe variants, each with the prediction.

    ``tells``: the empty scene of this sample's class tells the model the class (``scene_tells``); a right
    only_bg answer is then a red card, otherwise it is the model's default and stays neutral.
    """
    panels = []
    scene_gave_it = False
    for variant, title in SHOWROOM_PANELS:
        if variant == "original":
            image, pred = sample.image, sample.pred
        elif variant in sample.variants and variant in sample.variant_preds:
            image, pred = sample.variants[variant], sample.variant_preds[variant]
        else:
            continue
        correct = pred == sample.label
        if variant == "only_bg":
            flagged = correct and tells
            scene_gave_it |= flagged
            tone, good = ("miss" if flagged else "hit"), not flagged
        else:
            tone, good = ("hit" if pred == sample.pred else "changed"), correct
        panels.append(ShowroomPanel(variant, title, variant_uri(image), _class_name(classes, pred), correct,
                                    good=good, tone=tone))
    flipped = sample.variant_preds.get("mixed_rand", sample.pred) != sample.pred
    return ShowroomRow(sample.sample_id, _class_name(classes, sample.label), flipped, tuple(panels),
                       scene_tells=scene_gave_it)


def showroom(result: CandidateResult) -> tuple[ShowroomRow, ...]:
    """Up to ``SHOWROOM_MAX`` kept samples with probe variants, classes interleaved.

    Within a class, samples whose answer changes with the scene come first, then those the scene gives away,
    then the rest in gallery order; the classes take turns so the panel is not all one class.
    """
    records = result.records
    tells = scene_tells(records)
    told = {s.sample_id: bool(0 <= s.label < len(tells) and tells[s.label]
                              and s.variant_preds.get("only_bg") == s.label) for s in records.kept.values()}
    with_variants = [s for s in records.kept.values() if set(s.variants) & set(PROBE_VARIANTS)]
    # sorted() is stable: within one priority the gallery order is kept.
    ranked = sorted(with_variants, key=lambda s: (not _changed(s), not told[s.sample_id]))
    chosen = interleave_classes(ranked)[:SHOWROOM_MAX]
    return tuple(showroom_row(s, records.classes, told[s.sample_id]) for s in chosen)

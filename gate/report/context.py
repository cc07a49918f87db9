"""The report's template context: typed, frozen views built from a ``GateResult``.

Templates only read these dataclasses; every number is formatted here, once, and
every string reaches the page through Jinja2's autoescaping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from gate.metrics.registry import get_spec, say
from gate.records import NO_VARIANT, PROBE_VARIANTS, KeptSample, Records
from gate.report import plots
from gate.report.classes import ClassTable, class_table, present_deltas, worst_deltas
from gate.report.formatting import fmt, fmt_signed
from gate.report.reasons import Reason, anchor_prefix, reasons, rule_anchor
from gate.result import CandidateResult, GateResult, PolicyInfo, ReviewSetInfo, RuleResult

BASELINE_GROUP = "versus baseline"
SCORE_GROUPS: tuple[str, ...] = ("classification", "calibration", "alignment", "background", "sanity", BASELINE_GROUP)
GALLERY_TITLES: Mapping[str, tuple[str, str]] = {
    "easy": ("Easy", "right and confident"),
    "borderline": ("Borderline", "the smallest margins between the top two answers"),
    "failures": ("Failures", "wrong predictions"),
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
MIGRATION_LABELS: tuple[tuple[str, str], ...] = (
    ("corrected", "corrected (baseline wrong, candidate right)"),
    ("regressed", "regressed (baseline right, candidate wrong)"),
    ("still_wrong", "still wrong"),
    ("still_right", "still right"),
)


# --- views ---------------------------------------------------------------------


@dataclass(frozen=True)
class RuleRow:
    """One rule as a table row."""

    rule_id: str
    score: str
    op: str
    threshold: str
    value: str
    passed: bool
    arrow: str
    direction: str
    interval: str | None
    message: str
    meaning: str = ""  # the value in words, from the score registry
    anchor: str = ""  # the row's element id


@dataclass(frozen=True)
class ScoreRow:
    """One score across the report's columns (candidates, then the baseline)."""

    name: str
    help: str
    arrow: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class ScoreGroup:
    """Scores of one group (classification, calibration, ...)."""

    title: str
    rows: tuple[ScoreRow, ...]


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
    anchor: str = ""  # element id of the full-size view (a :target, no script)
    note: str = ""  # borderline: the margin to the runner-up, the reason the engine picked it


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


@dataclass(frozen=True)
class DeltaRow:
    """A signed difference versus the baseline; ``good`` says whether it is an improvement."""

    name: str
    value: str
    good: bool | None  # None: no change or direction unknown


@dataclass(frozen=True)
class ComparisonView:
    """A candidate against the baseline: migration, McNemar, per-class and per-score deltas, intervals."""

    migration: tuple[tuple[str, str], ...]
    mcnemar_p: str
    class_deltas: tuple[DeltaRow, ...]
    deltas: tuple[DeltaRow, ...]
    intervals: tuple[tuple[str, str], ...]
    class_deltas_total: int = 0  # classes with a delta; more than shown when the worst are picked


@dataclass(frozen=True)
class CandidateView:
    """Everything the report shows for one candidate."""

    name: str
    path: str
    sha256: str
    arch: str
    target_layer: str
    passed: bool
    selected: bool
    rules: tuple[RuleRow, ...]
    failed: tuple[RuleRow, ...]
    plots: tuple[plots.PlotImage, ...]
    galleries: tuple[GalleryView, ...]
    showroom: tuple[ShowroomRow, ...]
    comparison: ComparisonView | None
    target_layout: str = ""  # spatial, tokens or channels_last
    zero_maps: int = 0  # masked samples whose map was all zero (alignment.zero_maps)
    anchor: str = "c0"  # id prefix of this candidate's parts (galleries, showroom, plots, rules)
    reasons: tuple[Reason, ...] = ()  # one per failed rule, in words, with the evidence's anchor
    only_bg_default: str = ""  # the model's most common answer on empty scenes, with its share

    @property
    def verdict(self) -> str:
        """``"passed"`` or ``"failed"``."""
        return "passed" if self.passed else "failed"


@dataclass(frozen=True)
class ReportContext:
    """The whole report page."""

    title: str
    command: str
    verdict: str
    passed: bool
    selected: str | None
    created: str
    policy: PolicyInfo
    review_set: ReviewSetInfo
    candidates: tuple[CandidateView, ...]
    baseline_name: str | None
    rank_by: tuple[str, ...]
    score_columns: tuple[str, ...]
    score_groups: tuple[ScoreGroup, ...]
    environment: tuple[tuple[str, str], ...]
    timings: tuple[tuple[str, str], ...]
    classes: ClassTable | None = None

    @property
    def has_showroom(self) -> bool:
        """True when any candidate has background-probe variants to show."""
        return any(c.showroom for c in self.candidates)

    @property
    def has_comparison(self) -> bool:
        """True when a baseline was given (or any candidate carries a comparison)."""
        return self.baseline_name is not None or any(c.comparison is not None for c in self.candidates)


# --- formatting ---------------------------------------------------------------


def _direction(higher_is_better: bool | None) -> tuple[str, str]:
    if higher_is_better is None:
        return "", ""
    return ("↑", "higher is better") if higher_is_better else ("↓", "lower is better")


def score_group(name: str) -> str:
    """The report group of a score: the registry's, ``versus baseline`` for ``delta.*``, else by prefix."""
    if name.startswith("delta."):
        return BASELINE_GROUP
    spec = get_spec(name)
    if spec is not None:
        return spec.group
    prefix = name.partition(".")[0]
    return prefix if prefix in SCORE_GROUPS else "classification"


def _higher_is_better(name: str) -> bool | None:
    spec = get_spec(name)
    return None if spec is None else spec.higher_is_better


# --- builders -----------------------------------------------------------------


def rule_row(rule: RuleResult, anchor: str = "") -> RuleRow:
    """A ``RuleResult`` as a table row; ``meaning`` is its value in words."""
    arrow, direction = _direction(rule.higher_is_better)
    interval = None
    if rule.interval is not None:
        interval = f"[{fmt(rule.interval[0])}, {fmt(rule.interval[1])}]"
    return RuleRow(
        rule_id=rule.rule_id, score=rule.score, op=rule.op, threshold=fmt(rule.threshold), value=fmt(rule.value),
        passed=rule.passed, arrow=arrow, direction=direction, interval=interval, message=rule.message,
        meaning=say(rule.score, rule.value), anchor=anchor,
    )


def score_groups(columns: Sequence[Mapping[str, float]]) -> tuple[ScoreGroup, ...]:
    """Scores grouped for the table: one row per score name, one value per column ("" where absent).

    Per-class families (``class_accuracy.<class>``, ...) are left out: see ``class_table``; so are the
    ``delta.*`` scores: the baseline section shows each delta once.
    """
    names: dict[str, None] = {}
    for scores in columns:
        names.update(dict.fromkeys(scores))
    by_group: dict[str, list[ScoreRow]] = {group: [] for group in SCORE_GROUPS}
    for name in names:
        if name.startswith("delta."):
            continue
        spec = get_spec(name)
        if spec is not None and spec.per_class:
            continue  # one row per class would be 1000s of rows: the per-class table shows the worst
        arrow, _ = _direction(None if spec is None else spec.higher_is_better)
        values = tuple(fmt(scores[name]) if name in scores else "" for scores in columns)
        row = ScoreRow(name=name, help="" if spec is None else spec.help, arrow=arrow, values=values)
        by_group.setdefault(score_group(name), []).append(row)
    return tuple(ScoreGroup(title, tuple(rows)) for title, rows in by_group.items() if rows)


def _class_name(classes: Sequence[str], index: int, model_name: str = "") -> str:
    if 0 <= index < len(classes):
        return classes[index]
    # A model output outside the review set: the model's own name for it when the engine kept one.
    return f"{model_name} {OUTSIDE_NAME}" if model_name else OUTSIDE_NAME


def _baseline_tile(sample: KeptSample | None, classes: Sequence[str]) -> BaselineTile | None:
    if sample is None:
        return None
    pictures = plots.sample_pictures(sample.image, sample.mask, sample.cam)
    return BaselineTile(
        pred=_class_name(classes, sample.pred, sample.pred_name), confidence=fmt(sample.confidence),
        correct=sample.pred == sample.label, overlay=pictures.overlay,
    )


def tile(sample: KeptSample, classes: Sequence[str], baseline: KeptSample | None, anchor: str = "") -> Tile:
    """One gallery tile; ``baseline`` is the baseline's kept sample with the same id, if any."""
    pictures = plots.sample_pictures(sample.image, sample.mask, sample.cam)
    return Tile(
        sample_id=sample.sample_id, label=_class_name(classes, sample.label),
        pred=_class_name(classes, sample.pred, sample.pred_name),
        confidence=fmt(sample.confidence), correct=sample.pred == sample.label, image=pictures.image,
        overlay=pictures.overlay, baseline=_baseline_tile(baseline, classes), anchor=anchor,
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
    return {s: f"margin {fmt(float(confidence[i]) - float(runner_up[i]))} to the runner-up" for s, i in rows.items()}


def galleries(result: CandidateResult, baseline: CandidateResult | None, prefix: str = "c0") -> tuple[GalleryView, ...]:
    """Easy, borderline and failure galleries, stratified and with classes interleaved (ids missing from
    ``records.kept`` are skipped)."""
    kept = result.records.kept
    baseline_kept: Mapping[str, KeptSample] = {} if baseline is None else baseline.records.kept
    views = []
    taken = frozenset(i for kind in GALLERY_TITLES for i in getattr(result.gallery, kind))
    for kind, (title, blurb) in GALLERY_TITLES.items():
        chosen = interleave_classes(stratify(kind, getattr(result.gallery, kind), kept, taken))
        notes = _margins(result.records, [s.sample_id for s in chosen]) if kind == "borderline" else {}
        tiles = tuple(replace(tile(s, result.records.classes, baseline_kept.get(s.sample_id), f"{prefix}-{kind}-{n}"),
                              note=notes.get(s.sample_id, ""))
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
    return np.asarray(np.nan_to_num(told, nan=0.0) >= SCENE_TELLS) & (share < 1.0)


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
        panels.append(ShowroomPanel(variant, title, plots.variant_uri(image), _class_name(classes, pred), correct,
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


def _delta_row(name: str, value: float, higher_is_better: bool | None) -> DeltaRow:
    good = None
    if higher_is_better is not None and math.isfinite(value) and value != 0:
        good = (value > 0) == higher_is_better
    return DeltaRow(name=name, value=fmt_signed(value), good=good)


def _interval_text(bounds: Mapping[str, Any]) -> str:
    confidence = bounds.get("confidence")
    level = f" at {confidence:.0%}" if isinstance(confidence, int | float) else ""
    return f"[{fmt(bounds.get('low'))}, {fmt(bounds.get('high'))}]{level}"


def migration_rows(migration: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """Sample counts, then among the still-wrong how many lost confidence (a share in the JSON)."""
    rows = [(label, str(int(migration[key]))) for key, label in MIGRATION_LABELS if key in migration]
    share, still_wrong = migration.get("still_wrong_confidence_dropped"), int(migration.get("still_wrong", 0))
    dropped = "n/a (none still wrong)"
    if share is not None and still_wrong and math.isfinite(share):
        dropped = f"{round(share * still_wrong)} of {still_wrong} ({share:.0%})"
    return (*rows, ("still wrong, confidence dropped", dropped))


def comparison_view(comparison: Mapping[str, Any]) -> ComparisonView:
    """The ``gate.compare`` JSON for one candidate, formatted."""
    migration = comparison.get("migration", {})
    deltas = comparison.get("deltas", {})
    class_deltas = present_deltas(comparison.get("class_deltas", {}))
    return ComparisonView(
        migration=migration_rows(migration),
        mcnemar_p=fmt(comparison.get("mcnemar_p")),
        class_deltas=tuple(_delta_row(c, v, True) for c, v in worst_deltas(class_deltas)),
        deltas=tuple(_delta_row(n, float(v), _higher_is_better(n)) for n, v in deltas.items() if v is not None),
        intervals=tuple((score, _interval_text(b)) for score, b in comparison.get("intervals", {}).items()),
        class_deltas_total=len(class_deltas),
    )


def candidate_view(
    result: CandidateResult, baseline: CandidateResult | None, selected: str | None, index: int = 0
) -> CandidateView:
    """One candidate's view (``index``: its place in rank order, for anchors), with pictures rendered."""
    info = result.candidate
    prefix = anchor_prefix(index)
    rules = tuple(rule_row(r, rule_anchor(index, n)) for n, r in enumerate(result.rules))
    return CandidateView(
        name=info.name, path=info.path, sha256=info.sha256, arch=info.arch, target_layer=info.target_layer,
        passed=result.passed, selected=selected == info.name, rules=rules,
        failed=tuple(r for r in rules if not r.passed),
        plots=plots.candidate_plots(result.records, None if baseline is None else baseline.records),
        galleries=galleries(result, baseline, prefix), showroom=showroom(result),
        comparison=None if result.comparison is None else comparison_view(result.comparison),
        target_layout=info.target_layout, zero_maps=_count(result.scores.get("alignment.zero_maps")),
        anchor=prefix, reasons=reasons(result.rules, index), only_bg_default=only_bg_default(result.records),
    )


def _count(value: float | None) -> int:
    return int(value) if value is not None and math.isfinite(value) else 0


def _title(result: GateResult) -> str:
    names = ", ".join(c.candidate.name for c in result.candidates)
    return f"xgate {result.command}: {result.verdict} — {names}"


def build_context(result: GateResult) -> ReportContext:
    """The report's context for a gate result (renders the plots and pictures); candidates in rank order."""
    ranked = result.ranked()
    columns = [c.candidate.name for c in ranked]
    scores = [c.scores for c in ranked]
    records = [c.records for c in ranked]
    if result.baseline is not None:
        columns.append(f"baseline: {result.baseline.candidate.name}")
        scores.append(result.baseline.scores)
        records.append(result.baseline.records)
    return ReportContext(
        title=_title(result), command=result.command, verdict=result.verdict, passed=result.passed,
        selected=result.selected, created=result.created, policy=result.policy, review_set=result.review_set,
        candidates=tuple(candidate_view(c, result.baseline, result.selected, n) for n, c in enumerate(ranked)),
        baseline_name=None if result.baseline is None else result.baseline.candidate.name,
        rank_by=result.rank_by,
        score_columns=tuple(columns), score_groups=score_groups(scores),
        environment=tuple((str(k), str(v)) for k, v in result.environment.items()),
        timings=tuple((str(k), f"{v:.2f} s") for k, v in result.timings.items()),
        classes=class_table(columns, records, len(ranked)) if ranked and records[0].size else None,
    )

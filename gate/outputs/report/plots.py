"""Plots for the report: small matplotlib figures as SVG data URIs, and the numbers behind them.

Everything is rendered off-screen into inline ``data:`` URIs, so the report opens from a CI artifact with
no network and no files beside it. Plots are SVG: lines, bars and text stay sharp at any zoom and weigh
less than a 2x PNG. Sample pictures (photos, Grad-CAM overlays) are in ``gate.outputs.report.pictures``.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from gate.metrics.classification import (
    ECE_BINS,
    bin_edges,
    calibration_sums,
    confidently_wrong,
    ece_from_sums,
    per_class_accuracy,
)
from gate.metrics.registry import percent, spec_of
from gate.records import Records
from gate.result import RuleResult

RELIABILITY_BINS = ECE_BINS  # the ``ece`` score's bins
CLASS_LIFT = spec_of("alignment.lift.class.<class>")
SMALL_PT = 8.5  # the smallest text on a plot: 8.5 pt is 11.3 CSS px at 96 dpi
MAX_CLASS_BARS = 20  # beyond this the per-class plot shows the worst present classes only
FIGSIZE = (4.5, 3.25)  # inches at CSS_DPI: the size the page shows
CSS_DPI = 96  # a CSS inch
GOOD, BAD, NEUTRAL = "#2e7d32", "#c62828", "#78909c"

_RC: dict[Any, Any] = {
    "text.parse_math": False,  # class names with "$" must print literally, not as TeX
    "font.size": 9,
    "axes.titlesize": 10,
}


# --- numbers behind the plots ---------------------------------------------------


@dataclass(frozen=True)
class ReliabilityBins:
    """Bars of the reliability diagram: per-bin accuracy, mean confidence and count, and the score's ECE."""

    edges: np.ndarray  # [B + 1]
    accuracy: np.ndarray  # [B], NaN for empty bins
    confidence: np.ndarray  # [B], NaN for empty bins
    counts: np.ndarray  # [B]
    ece: float  # the ``ece`` score itself, so the plot's title never disagrees with the scores table


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = RELIABILITY_BINS) -> ReliabilityBins:
    """The ``ece`` score's own bins and value; exactly 1.0 (a bin of its own there) is drawn in the top bar."""
    sums = calibration_sums(np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=bool), n_bins)
    count, hits, conf = (np.append(part[:-2], part[-2] + part[-1]) for part in sums.reshape(3, n_bins + 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy, mean_conf = hits / count, conf / count
    return ReliabilityBins(edges=bin_edges(n_bins).astype(np.float64), accuracy=accuracy, confidence=mean_conf,
                           counts=count.astype(np.int64), ece=float(ece_from_sums(sums[None, :])[0]))


def wrong_rate_by_threshold(confidence: np.ndarray, correct: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Share of all samples that are wrong AND at least ``t`` confident, for each threshold ``t`` (as the score)."""
    if np.asarray(confidence).size == 0:
        return np.full(len(thresholds), np.nan)
    return np.array([np.mean(confidently_wrong(confidence, correct, t)) for t in thresholds])


def class_counts(records: Records) -> np.ndarray:
    """Samples per class (review-set order); 0 for a class the review set lists but has no sample of."""
    return np.bincount(records.labels, minlength=len(records.classes))


def class_accuracy(records: Records) -> np.ndarray:
    """Accuracy per class (review-set order), as the ``class_accuracy.<class>`` scores; NaN for no samples."""
    return per_class_accuracy(records)


def class_lift(records: Records) -> np.ndarray:
    """Mean lift per class (review-set order), as the ``alignment.lift.class.<class>`` scores; NaN for none."""
    values = CLASS_LIFT.values(records)
    return np.array([values[CLASS_LIFT.expand(name)] for name in records.classes], dtype=np.float64)


def worst_present(accuracy: np.ndarray, counts: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the classes with samples: all in review-set order when at most ``limit``, else the
    ``limit`` least accurate (ties in review-set order)."""
    present = np.flatnonzero(np.asarray(counts) > 0)
    if len(present) <= limit:
        return present
    return present[np.argsort(accuracy[present], kind="stable")][:limit]


# --- plots ---------------------------------------------------------------------


@contextmanager
def _figure() -> Iterator[tuple[Figure, Axes]]:
    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=FIGSIZE, layout="constrained")
        yield figure, figure.add_subplot()


def svg_data_uri(svg: str) -> str:
    """``data:image/svg+xml,...`` for SVG text: percent-encoded, which is smaller than base64 for markup.

    Whitespace runs become one space (SVG text collapses them anyway) and go between tags; what the
    page's attribute quoting or the URI syntax would trip on (``<>"'&#%`` and controls) is %-escaped.
    """
    root = svg[svg.index("<svg"):]  # the XML declaration and DOCTYPE are optional in an image
    compact = re.sub(r">\s+<", "><", re.sub(r"\s+", " ", root)).strip()
    return "data:image/svg+xml," + quote(compact, safe=" /=:;,.-()[]{}!*+~@$?")


def _figure_uri(figure: Figure) -> str:
    # Text stays text (a few kB per plot instead of glyph outlines), in matplotlib's font list, which
    # starts with DejaVu Sans, the font it measured the layout with; no date, so reruns are identical.
    with matplotlib.rc_context({**_RC, "svg.fonttype": "none", "svg.hashsalt": "xgate"}):
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return svg_data_uri(buffer.getvalue())


def _limits(rules: Sequence[RuleResult], *scores: str) -> list[RuleResult]:
    """The plain rules (floors and ceilings) on ``scores``: what a plot draws as the policy."""
    return [r for r in rules if r.op in (">=", "<=") and r.score in scores]


def _policy_text(rule: RuleResult) -> str:
    return f"policy: {rule.score} {rule.op.replace('>=', '≥').replace('<=', '≤')} {percent(rule.threshold)}"


def reliability_plot(records: Records, rules: Sequence[RuleResult] = ()) -> str:
    """Reliability diagram (15 bins): accuracy per confidence bin against the diagonal; the policy's ECE and
    over-confidence ceilings in the title."""
    bins = reliability_bins(records.confidence, records.correct)
    with _figure() as (figure, axes):
        centres = (bins.edges[:-1] + bins.edges[1:]) / 2
        width = bins.edges[1] - bins.edges[0]
        heights = np.nan_to_num(bins.accuracy)
        bars = axes.bar(centres, heights, width=width, color="#5c6bc0", edgecolor="white", label="accuracy")
        # Samples per bin above each bar: a tall bar over 3 samples means little.
        axes.bar_label(bars, labels=[str(int(c)) if c else "" for c in bins.counts], fontsize=SMALL_PT, padding=1,
                       color="#37474f", rotation=90)
        axes.plot([0, 1], [0, 1], linestyle="--", color="#444444", linewidth=1, label="perfect calibration")
        axes.set(xlim=(0, 1), ylim=(0, 1.2), xlabel="confidence (numbers: samples per bin)", ylabel="accuracy")
        limits = _limits(rules, "ece", "overconfidence_error", "mce")
        policy = "; ".join(_policy_text(r) for r in limits)
        axes.set_title(f"Reliability ({len(centres)} bins), ECE {bins.ece:.3f}" + (f"\n{policy}" if policy else ""))
        axes.legend(loc="upper left", fontsize=SMALL_PT)
        return _figure_uri(figure)


def _zoom(confidence: np.ndarray) -> float:
    """Where the confidence axis starts: a tenth below where 98% of the samples are (at most 0.9), 0 if none."""
    if confidence.size == 0:
        return 0.0
    return float(min(np.floor(np.quantile(confidence, 0.02) * 10) / 10, 0.9))


def confidence_histogram_plot(records: Records) -> str:
    """Histograms of top-label confidence for correct and wrong predictions, zoomed where the samples are."""
    conf = records.confidence
    correct = records.correct
    low = _zoom(conf)
    edges = np.linspace(low, 1.0, 21).tolist()
    with _figure() as (figure, axes):
        axes.hist(conf[correct], bins=edges, color=GOOD, alpha=0.7, label=f"correct ({int(correct.sum())})")
        wrong = int((~correct).sum())
        axes.hist(conf[~correct], bins=edges, color=BAD, alpha=0.7, hatch="//", label=f"wrong ({wrong})")
        axes.set(xlim=(low, 1), xlabel="confidence", ylabel="samples")
        axes.set_title("Confidence: correct vs wrong")
        axes.legend(loc="upper left", fontsize=SMALL_PT)
        return _figure_uri(figure)


def wrong_by_threshold_plot(records: Records, rules: Sequence[RuleResult] = ()) -> str:
    """Confidently-wrong rate (wrong and confidence >= t, over all samples) against the threshold t; each policy
    ceiling on ``confident_wrong_rate@t`` is drawn at t, its failing region shaded."""
    low = _zoom(records.confidence)
    thresholds = np.linspace(low, 1.0, 101)
    rates = wrong_rate_by_threshold(records.confidence, records.correct, thresholds)
    limits = _limits(rules, "confident_wrong_rate@0.9", "confident_wrong_rate@0.99")
    top = max(float(np.nanmax(rates, initial=0.0)), *(r.threshold * 1.5 for r in limits), 0.01) * 1.1
    with _figure() as (figure, axes):
        axes.plot(thresholds, rates, color=BAD, label="wrong and conf ≥ t")
        for marker in (0.9, 0.99):
            axes.axvline(marker, color=NEUTRAL, linestyle=":", linewidth=1)
        for rule in limits:
            at = float(rule.score.split("@")[1])
            axes.plot([at, 1.0], [rule.threshold, rule.threshold], color="#212121", linewidth=1.5)
            axes.fill_between([at, 1.0], rule.threshold, top, color=BAD, alpha=0.12, hatch="//", linewidth=0)
            axes.annotate(f"policy ≤ {percent(rule.threshold)} at ≥ {at:g}", (at, rule.threshold),
                          textcoords="offset points", xytext=(-4, 4), ha="right", fontsize=SMALL_PT)
        axes.set(xlim=(low, 1), ylim=(0, top))
        axes.set(xlabel="confidence threshold t", ylabel="wrong and conf >= t")
        axes.set_title("Wrong predictions by confidence threshold" + ("\n(shaded: fails the policy)" if limits else ""))
        return _figure_uri(figure)


def _bar_colours(deltas: np.ndarray | None, count: int) -> list[str]:
    if deltas is None:
        return [NEUTRAL] * count
    return [GOOD if d > 0 else BAD if d < 0 else NEUTRAL for d in np.nan_to_num(deltas)]


def class_accuracy_plot(records: Records, baseline: Records | None = None, rules: Sequence[RuleResult] = ()) -> str:
    """Accuracy per class; with a baseline, bars are coloured by the delta and the baseline is marked; the policy's
    per-class floor is a line, and the bars under it are hatched."""
    accuracy = class_accuracy(records)
    base = class_accuracy(baseline) if baseline is not None else None
    counts = class_counts(records)
    present = int(np.count_nonzero(counts))
    order = worst_present(accuracy, counts, MAX_CLASS_BARS)  # a class without samples has no bar
    names = [records.classes[i] for i in order]
    deltas = None if base is None else accuracy[order] - base[order]
    with _figure() as (figure, axes):
        positions = np.arange(len(order))
        bars = axes.bar(positions, np.nan_to_num(accuracy[order]), color=_bar_colours(deltas, len(order)))
        floors = [r.threshold for r in _limits(rules, "worst_class_accuracy") if r.op == ">="]
        if floors:
            floor = max(floors)
            axes.axhline(floor, color="#212121", linewidth=1.5, linestyle="--")
            axes.annotate(f"policy floor {percent(floor)}", (0, floor), xycoords=("axes fraction", "data"),
                          textcoords="offset points", xytext=(2, 3), fontsize=SMALL_PT)
            for bar, value in zip(bars, np.nan_to_num(accuracy[order]), strict=True):
                if value < floor:
                    bar.set_hatch("//")
                    bar.set_edgecolor(BAD)
        if base is not None:
            axes.scatter(positions, base[order], marker="_", s=120, color="#212121", label="baseline", zorder=3)
            axes.legend(loc="upper right", fontsize=SMALL_PT, ncols=1)  # sits in the headroom above 1.0
        crowded = len(order) > 6 or max((len(n) for n in names), default=0) > 8
        axes.set_xticks(positions, names, rotation=60 if crowded else 0, ha="right" if crowded else "center")
        axes.set(ylim=(0, 1.3), yticks=np.linspace(0, 1, 6), ylabel="accuracy")
        shown = "" if len(order) == present else f" (worst {len(order)} of {present})"
        axes.set_title("Accuracy per class" + shown + (" vs baseline" if base is not None else ""))
        return _figure_uri(figure)


@dataclass(frozen=True)
class PlotImage:
    """One plot of the report: a title, its alt text and the SVG data URI."""

    key: str
    title: str
    alt: str
    uri: str
    width: int = round(FIGSIZE[0] * CSS_DPI)  # shown size, CSS pixels
    height: int = round(FIGSIZE[1] * CSS_DPI)


def candidate_plots(
    records: Records, baseline: Records | None = None, rules: Sequence[RuleResult] = (),
) -> tuple[PlotImage, ...]:
    """The four plots of one candidate, in report order; ``rules``: the policy's limits they draw."""
    return (
        PlotImage("reliability", "Reliability diagram", "accuracy per confidence bin, 15 bins",
                  reliability_plot(records, rules)),
        PlotImage("confidence", "Confidence histograms", "confidence of correct and wrong predictions",
                  confidence_histogram_plot(records)),
        PlotImage("wrong_by_threshold", "Wrong by confidence threshold",
                  "share of samples wrong at or above each confidence", wrong_by_threshold_plot(records, rules)),
        PlotImage("class_accuracy", "Accuracy per class", "accuracy per class, coloured by delta to the baseline",
                  class_accuracy_plot(records, baseline, rules)),
    )


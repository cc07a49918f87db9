"""Pictures for the report: PNG data URIs of images, Grad-CAM overlays and small matplotlib plots.

Everything is rendered off-screen (Agg) into inline ``data:`` URIs, so the report
opens from a CI artifact with no network and no files beside it.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from gate.metrics.classification import bin_edges, calibration_bin_index, expected_calibration_error
from gate.records import Records

# Pictures are drawn with their longest side in [MIN_SIDE, MAX_SIDE] pixels. Larger images are downscaled,
# so 24 kept samples with a few pictures each keep the report at a few MB even for 224x224 review sets;
# smaller ones (a 64x64 review set) are enlarged for display only by a whole factor (64 -> 192), by nearest
# neighbour so no detail is invented and the PNG stays small; the map is upsampled bilinearly, as Grad-CAM
# maps are. People see every picture at >= 160 px.
MIN_SIDE = 160
MAX_SIDE = 192
CAM_COLORMAP = "inferno"  # perceptually uniform; readable in greyscale
OUTLINE_RGB = (0, 255, 255)  # cyan stands out against both photos and inferno
OVERLAY_ALPHA = 0.55
RELIABILITY_BINS = 15  # the same bins as the ``ece`` score
MAX_CLASS_BARS = 20  # beyond this the per-class plot shows the worst present classes only
FIGSIZE = (4.5, 3.25)  # inches at CSS_DPI: the size the page shows
CSS_DPI = 96  # a CSS inch
DPI = 2 * CSS_DPI  # drawn at twice the shown size, so text stays sharp on high-DPI screens and when zoomed
GOOD, BAD, NEUTRAL = "#2e7d32", "#c62828", "#78909c"

_RC: dict[Any, Any] = {
    "text.parse_math": False,  # class names with "$" must print literally, not as TeX
    "font.size": 9,
    "axes.titlesize": 10,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
}


# --- images -----------------------------------------------------------------


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_uri(image: np.ndarray, palette: bool = False) -> str:
    """A uint8 HxWx3 array as a PNG data URI (already at thumbnail size).

    ``palette``: 256 colours (median cut), for Grad-CAM overlays: at display size their smooth blends make
    the largest PNGs of the report, and a palette halves them with no visible change at that size.
    """
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if palette:
        picture = picture.quantize(256, method=Image.Quantize.MEDIANCUT)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=True)
    return png_data_uri(buffer.getvalue())


def thumbnail_size(height: int, width: int, max_side: int = MAX_SIDE, min_side: int = MIN_SIDE) -> tuple[int, int]:
    """(height, width) for display: shrunk so the longest side is ``max_side``, or enlarged by the smallest
    whole factor that makes it at least ``min_side``; aspect kept."""
    longest = max(height, width)
    if longest > max_side:
        scale = max_side / longest
        return max(1, round(height * scale)), max(1, round(width * scale))
    factor = max(1, -(-min_side // longest))  # ceil: 64 -> 3 (192 px), 16 -> 10 (160 px)
    return height * factor, width * factor


def thumbnail(image: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """A uint8 HxWx3 image at display size: Lanczos when shrinking, nearest neighbour when enlarging."""
    height, width = thumbnail_size(image.shape[0], image.shape[1], max_side=max_side)
    if (height, width) == image.shape[:2]:
        return np.asarray(image, dtype=np.uint8)
    shrink = height < image.shape[0]
    method = Image.Resampling.LANCZOS if shrink else Image.Resampling.NEAREST
    resized = Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((width, height), method)
    return np.asarray(resized)


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape == size:
        return np.asarray(mask, dtype=bool)
    pixels = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255)
    resized = pixels.resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(resized) > 127


def _resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if values.shape == size:
        return np.asarray(values, dtype=np.float32)
    pixels = Image.fromarray(np.asarray(values, dtype=np.float32))  # mode "F": 32-bit float
    resized = pixels.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """Object pixels with at least one 4-neighbour outside the object (the image border counts as outside)."""
    inside = np.pad(np.asarray(mask, dtype=bool), 1, constant_values=False)
    interior = inside[1:-1, 1:-1] & inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
    return np.asarray(mask, dtype=bool) & ~interior


def draw_outline(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of ``image`` with the mask's outline painted in ``OUTLINE_RGB``."""
    out = np.array(image, dtype=np.uint8, copy=True)
    out[mask_outline(mask)] = OUTLINE_RGB
    return out


def cam_overlay(image: np.ndarray, cam: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """The Grad-CAM map blended over the image in a perceptual colormap, with the mask outline on top.

    The map is scaled by its maximum for display only; scores are computed on the raw map upstream.
    """
    size = image.shape[:2]
    values = np.nan_to_num(_resize_map(np.asarray(cam, dtype=np.float32), size), nan=0.0, posinf=0.0, neginf=0.0)
    values = np.clip(values, 0.0, None)
    peak = float(values.max()) if values.size else 0.0
    scaled = values / peak if peak > 0 else values
    colours = matplotlib.colormaps[CAM_COLORMAP](scaled)[..., :3] * 255.0
    blended = (1.0 - OVERLAY_ALPHA) * image.astype(np.float64) + OVERLAY_ALPHA * colours
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out if mask is None else draw_outline(out, mask)


@dataclass(frozen=True)
class SamplePictures:
    """Data URIs for one kept sample: the image with its mask outline, and the Grad-CAM overlay."""

    image: str
    overlay: str


def sample_pictures(image: np.ndarray, mask: np.ndarray, cam: np.ndarray) -> SamplePictures:
    """Thumbnail-sized pictures of a kept sample."""
    small = thumbnail(image)
    small_mask = _resize_mask(mask, small.shape[:2])
    small_cam = _resize_map(np.asarray(cam, dtype=np.float32), small.shape[:2])
    return SamplePictures(
        image=image_uri(draw_outline(small, small_mask)),
        overlay=image_uri(cam_overlay(small, small_cam, small_mask), palette=True),
    )


def variant_uri(image: np.ndarray) -> str:
    """A probe variant (uint8 HxWx3) as a thumbnail data URI."""
    return image_uri(thumbnail(image))


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
    """Bin samples exactly as the ``ece`` score does; a confidence of exactly 1.0 is drawn in the top bar."""
    conf = np.asarray(confidence, dtype=np.float64)
    hits = np.asarray(correct, dtype=np.float64)
    index = np.minimum(calibration_bin_index(conf, n_bins), n_bins - 1)
    counts = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, weights=hits, minlength=n_bins) / counts
        mean_conf = np.bincount(index, weights=conf, minlength=n_bins) / counts
    return ReliabilityBins(edges=bin_edges(n_bins).astype(np.float64), accuracy=accuracy, confidence=mean_conf,
                           counts=counts, ece=expected_calibration_error(conf, hits.astype(bool), n_bins))


def wrong_rate_by_threshold(confidence: np.ndarray, correct: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Share of all samples that are wrong AND at least ``t`` confident, for each threshold ``t``."""
    conf = np.asarray(confidence, dtype=np.float64)
    wrong = ~np.asarray(correct, dtype=bool)
    if conf.size == 0:
        return np.full(len(thresholds), np.nan)
    return np.array([np.mean(wrong & (conf >= t)) for t in thresholds])


def class_counts(records: Records) -> np.ndarray:
    """Samples per class (review-set order); 0 for a class the review set lists but has no sample of."""
    return np.bincount(records.labels, minlength=len(records.classes))


def class_accuracy(records: Records) -> np.ndarray:
    """Accuracy per class (review-set order); NaN for a class with no samples."""
    hits = np.bincount(records.labels, weights=records.correct.astype(np.float64), minlength=len(records.classes))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(hits / class_counts(records), dtype=np.float64)


def class_lift(records: Records) -> np.ndarray:
    """Mean lift per class over the samples scored for alignment; NaN where a class has none."""
    lift = records.lift
    scored = np.isfinite(lift)
    n_classes = len(records.classes)
    counts = np.bincount(records.labels[scored], minlength=n_classes)
    sums = np.bincount(records.labels[scored], weights=lift[scored], minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(sums / counts, dtype=np.float64)


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
        figure = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
        yield figure, figure.add_subplot()


def _figure_uri(figure: Figure) -> str:
    with matplotlib.rc_context(_RC):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI)
    return png_data_uri(buffer.getvalue())


def reliability_plot(records: Records) -> str:
    """Reliability diagram (15 bins): accuracy per confidence bin against the diagonal."""
    bins = reliability_bins(records.confidence, records.correct)
    with _figure() as (figure, axes):
        centres = (bins.edges[:-1] + bins.edges[1:]) / 2
        width = bins.edges[1] - bins.edges[0]
        heights = np.nan_to_num(bins.accuracy)
        bars = axes.bar(centres, heights, width=width, color="#5c6bc0", edgecolor="white", label="accuracy")
        # Samples per bin above each bar: a tall bar over 3 samples means little.
        axes.bar_label(bars, labels=[str(int(c)) if c else "" for c in bins.counts], fontsize=7, padding=1,
                       color="#37474f")
        axes.plot([0, 1], [0, 1], linestyle="--", color="#444444", linewidth=1, label="perfect calibration")
        axes.set(xlim=(0, 1), ylim=(0, 1.08), xlabel="confidence (numbers: samples per bin)", ylabel="accuracy")
        axes.set_title(f"Reliability ({len(centres)} bins), ECE {bins.ece:.3f}")
        axes.legend(loc="upper left", fontsize=7)
        return _figure_uri(figure)


def confidence_histogram_plot(records: Records) -> str:
    """Histograms of top-label confidence for correct and wrong predictions."""
    conf = records.confidence
    correct = records.correct
    edges = np.linspace(0.0, 1.0, 21).tolist()
    with _figure() as (figure, axes):
        axes.hist(conf[correct], bins=edges, color=GOOD, alpha=0.7, label=f"correct ({int(correct.sum())})")
        axes.hist(conf[~correct], bins=edges, color=BAD, alpha=0.7, label=f"wrong ({int((~correct).sum())})")
        axes.set(xlim=(0, 1), xlabel="confidence", ylabel="samples")
        axes.set_title("Confidence: correct vs wrong")
        axes.legend(loc="upper left", fontsize=7)
        return _figure_uri(figure)


def wrong_by_threshold_plot(records: Records) -> str:
    """Confidently-wrong rate (wrong and confidence >= t, over all samples) against the threshold t."""
    thresholds = np.linspace(0.0, 1.0, 101)
    rates = wrong_rate_by_threshold(records.confidence, records.correct, thresholds)
    with _figure() as (figure, axes):
        axes.plot(thresholds, rates, color=BAD)
        for marker in (0.9, 0.99):
            axes.axvline(marker, color=NEUTRAL, linestyle=":", linewidth=1)
        axes.set(xlim=(0, 1), ylim=(0, max(float(np.nanmax(rates, initial=0.0)), 0.01) * 1.05))
        axes.set(xlabel="confidence threshold t", ylabel="wrong and conf >= t")
        axes.set_title("Wrong predictions by confidence threshold")
        return _figure_uri(figure)


def _bar_colours(deltas: np.ndarray | None, count: int) -> list[str]:
    if deltas is None:
        return [NEUTRAL] * count
    return [GOOD if d > 0 else BAD if d < 0 else NEUTRAL for d in np.nan_to_num(deltas)]


def class_accuracy_plot(records: Records, baseline: Records | None = None) -> str:
    """Accuracy per class; with a baseline, bars are coloured by the delta and the baseline is marked."""
    accuracy = class_accuracy(records)
    base = class_accuracy(baseline) if baseline is not None else None
    counts = class_counts(records)
    present = int(np.count_nonzero(counts))
    order = worst_present(accuracy, counts, MAX_CLASS_BARS)  # a class without samples has no bar
    names = [records.classes[i] for i in order]
    deltas = None if base is None else accuracy[order] - base[order]
    with _figure() as (figure, axes):
        positions = np.arange(len(order))
        axes.bar(positions, np.nan_to_num(accuracy[order]), color=_bar_colours(deltas, len(order)))
        if base is not None:
            axes.scatter(positions, base[order], marker="_", s=120, color="#212121", label="baseline", zorder=3)
            axes.legend(loc="upper right", fontsize=7, ncols=1)  # sits in the headroom above 1.0
        crowded = len(order) > 6 or max((len(n) for n in names), default=0) > 8
        axes.set_xticks(positions, names, rotation=60 if crowded else 0, ha="right" if crowded else "center")
        axes.set(ylim=(0, 1.3), yticks=np.linspace(0, 1, 6), ylabel="accuracy")
        shown = "" if len(order) == present else f" (worst {len(order)} of {present})"
        axes.set_title("Accuracy per class" + shown + (" vs baseline" if base is not None else ""))
        return _figure_uri(figure)


@dataclass(frozen=True)
class PlotImage:
    """One plot of the report: a title, its alt text and the PNG data URI (drawn at 2x its shown size)."""

    key: str
    title: str
    alt: str
    uri: str
    width: int = round(FIGSIZE[0] * CSS_DPI)  # shown size, CSS pixels
    height: int = round(FIGSIZE[1] * CSS_DPI)


def candidate_plots(records: Records, baseline: Records | None = None) -> tuple[PlotImage, ...]:
    """The four plots of one candidate, in report order."""
    return (
        PlotImage("reliability", "Reliability diagram", "accuracy per confidence bin, 15 bins",
                  reliability_plot(records)),
        PlotImage("confidence", "Confidence histograms", "confidence of correct and wrong predictions",
                  confidence_histogram_plot(records)),
        PlotImage("wrong_by_threshold", "Wrong by confidence threshold",
                  "share of samples wrong at or above each confidence", wrong_by_threshold_plot(records)),
        PlotImage("class_accuracy", "Accuracy per class", "accuracy per class, coloured by delta to the baseline",
                  class_accuracy_plot(records, baseline)),
    )


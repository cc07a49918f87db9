"""Classification and calibration scores (definitions in shared/anchors.md).

Pure functions of ``Records`` on NumPy arrays. Predictions, confidences and
Brier cover all the model's outputs (``records.preds``/``confidence``/
``squared_error``), also when the review set holds only some of its classes;
per-class scores cover the review set's classes. ECE and MCE use 15 equal-width
bins on top-label confidence with torchmetrics' bin edges (a confidence of
exactly 1.0 gets a bin of its own), so the numbers match its CalibrationError.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from gate.metrics.registry import ScoreSpec
from gate.records import Records

ECE_BINS = 15
EPS = 1e-12


def accuracy(records: Records) -> float:
    """Share of samples whose top prediction is the label."""
    return float(records.correct.mean()) if records.size else float("nan")


def class_accuracy(records: Records) -> dict[str, float]:
    """Accuracy (recall) of each class; NaN for a class with no samples."""
    correct = records.correct
    out: dict[str, float] = {}
    for index, name in enumerate(records.classes):
        members = records.labels == index
        out[name] = float(correct[members].mean()) if members.any() else float("nan")
    return out


def balanced_accuracy(records: Records) -> float:
    """Mean of per-class accuracy over the classes present."""
    values = [v for v in class_accuracy(records).values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def worst_class_accuracy(records: Records) -> float:
    """Lowest per-class accuracy over the classes present."""
    values = [v for v in class_accuracy(records).values() if not np.isnan(v)]
    return float(min(values)) if values else float("nan")


def nll(records: Records) -> float:
    """Mean negative log-probability of the true class (from the model's full softmax)."""
    p_true = records.probs[np.arange(records.size), records.labels].astype(np.float64)
    return float(-np.log(np.clip(p_true, EPS, 1.0)).mean())


def brier(records: Records) -> float:
    """Mean over samples of Σ_k (p_k − y_k)² over ALL the model's outputs (multi-class Brier score, 0..2)."""
    return float(records.squared_error.mean())


@cache
def bin_edges(n_bins: int = ECE_BINS) -> np.ndarray:
    """torchmetrics' bin edges: float32 ``torch.linspace(0, 1, n_bins + 1)``, read-only.

    Not numpy's float64 linspace: the two differ in the last bits at some edges (e.g. 8/15), which
    moves a confidence lying exactly on such an edge into the neighbouring bin.
    """
    import torch  # lazily: the rest of this module is NumPy only

    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float32).numpy()
    edges.setflags(write=False)
    return edges


def calibration_bin_index(confidence: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """Bin of each confidence, bins [lo, hi) on torchmetrics' edges; index ``n_bins`` holds exactly 1.0."""
    # Compare in float32 against float32 edges, as torchmetrics does (it casts confidences to float32).
    return np.searchsorted(bin_edges(n_bins), np.asarray(confidence).astype(np.float32), side="right") - 1


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> tuple[
    np.ndarray, np.ndarray, np.ndarray
]:
    """Per-bin (accuracy, mean confidence, share of samples) over equal-width bins on [0, 1]."""
    index = calibration_bin_index(confidence, n_bins)
    count = np.bincount(index, minlength=n_bins + 1).astype(np.float64)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins + 1)
    acc_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=n_bins + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, acc_sum / count, 0.0)
        conf = np.where(count > 0, conf_sum / count, 0.0)
    return acc, conf, count / max(count.sum(), 1.0)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """Σ_m |B_m|/n · |acc(B_m) − conf(B_m)| over ``n_bins`` equal-width bins (NaN for no samples)."""
    if not len(confidence):
        return float("nan")
    acc, conf, share = calibration_bins(np.asarray(confidence, dtype=np.float64), np.asarray(correct), n_bins)
    return float((np.abs(acc - conf) * share).sum())


def ece(records: Records) -> float:
    """Expected calibration error: Σ_m |B_m|/n · |acc(B_m) − conf(B_m)|, 15 bins, top label."""
    return expected_calibration_error(records.confidence, records.correct)


def overconfidence_error(records: Records) -> float:
    """Σ_m |B_m|/n · conf(B_m) · max(conf(B_m) − acc(B_m), 0): ECE's overconfident part, weighted by confidence.

    After Thulasidasan et al. 2019 ("On Mixup Training"): label smoothing and mixing
    make a model under-confident on easy data, which ECE counts like over-confidence;
    OE counts only the bins where the model claims more than it delivers.
    """
    if not records.size:
        return float("nan")
    acc, conf, share = calibration_bins(records.confidence.astype(np.float64), records.correct)
    return float((share * conf * np.maximum(conf - acc, 0.0)).sum())


def mce(records: Records) -> float:
    """Maximum calibration error: the largest |acc − conf| over non-empty bins."""
    acc, conf, share = calibration_bins(records.confidence, records.correct)
    gaps = np.abs(acc - conf)[share > 0]
    return float(gaps.max()) if gaps.size else float("nan")


def confident_wrong_rate(threshold: float):  # type: ignore[no-untyped-def]
    """Share of ALL samples that are wrong with confidence ≥ ``threshold``."""

    def rate(records: Records) -> float:
        # In float32, as the confidences are: float32(0.9) is just below the float64 0.9 and would not count.
        hits = (~records.correct) & (records.confidence >= np.float32(threshold))
        return float(hits.mean()) if records.size else float("nan")

    return rate


def mean_confidence_wrong(records: Records) -> float:
    """Mean top-label confidence over wrong predictions (NaN when none is wrong)."""
    wrong = ~records.correct
    return float(records.confidence[wrong].mean()) if wrong.any() else float("nan")


def aurc(records: Records) -> float:
    """Area under the risk–coverage curve: mean selective risk over all cut-offs (oracle NOT subtracted)."""
    if not records.size:
        return float("nan")
    order = np.argsort(-records.confidence, kind="stable")
    errors = (~records.correct[order]).astype(np.float64)
    risk = np.cumsum(errors) / np.arange(1, records.size + 1)
    return float(risk.mean())


def selective_accuracy(coverage: float):  # type: ignore[no-untyped-def]
    """Accuracy on the ``coverage`` share of samples with the highest confidence."""

    def value(records: Records) -> float:
        keep = max(1, int(round(coverage * records.size)))
        order = np.argsort(-records.confidence, kind="stable")[:keep]
        return float(records.correct[order].mean()) if records.size else float("nan")

    return value


SCORES: tuple[ScoreSpec, ...] = (
    ScoreSpec("accuracy", True, "Share of samples predicted correctly.", "classification", accuracy, proportion=True),
    ScoreSpec("balanced_accuracy", True, "Mean of per-class accuracy.", "classification", balanced_accuracy),
    ScoreSpec("worst_class_accuracy", True, "Accuracy of the worst class.", "classification", worst_class_accuracy),
    ScoreSpec("class_accuracy.<class>", True, "Accuracy (recall) of one class.", "classification", class_accuracy,
              proportion=True),
    ScoreSpec("selective_accuracy@0.8", True, "Accuracy on the 80% most confident samples.", "classification",
              selective_accuracy(0.8), proportion=True),
    ScoreSpec("nll", False, "Mean negative log-likelihood of the true class.", "calibration", nll),
    ScoreSpec("brier", False, "Multi-class Brier score: mean Σ_k (p_k − y_k)².", "calibration", brier),
    ScoreSpec("ece", False, "Expected calibration error, 15 equal-width bins, top label.", "calibration", ece),
    ScoreSpec("overconfidence_error", False, "ECE's over-confident part only, weighted by confidence "
              "(Thulasidasan et al. 2019).", "calibration", overconfidence_error),
    ScoreSpec("mce", False, "Maximum calibration error over the 15 bins.", "calibration", mce),
    ScoreSpec("confident_wrong_rate@0.9", False, "Share of all samples wrong with confidence ≥ 0.9.",
              "calibration", confident_wrong_rate(0.9), proportion=True),
    ScoreSpec("confident_wrong_rate@0.99", False, "Share of all samples wrong with confidence ≥ 0.99.",
              "calibration", confident_wrong_rate(0.99), proportion=True),
    ScoreSpec("mean_confidence_wrong", False, "Mean confidence of wrong predictions.", "calibration",
              mean_confidence_wrong),
    ScoreSpec("aurc", False, "Area under the risk-coverage curve (raw; oracle not subtracted).", "calibration", aurc),
)

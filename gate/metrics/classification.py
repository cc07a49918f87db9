"""Classification and calibration scores (definitions in shared/anchors.md), each declared once as a ScoreSpec.

Each score is a form on ``Records`` (see :mod:`gate.metrics.spec`): per-sample features and the finish that
turns their sums into the value, on NumPy arrays. Predictions, confidences and Brier cover all the model's
outputs (``records.preds``/``confidence``/``squared_error``), also when the review set holds only some of its
classes; per-class scores cover the review set's classes. ECE and MCE use 15 equal-width bins on top-label
confidence with torchmetrics' bin edges (a confidence of exactly 1.0 gets a bin of its own), so the numbers
match its CalibrationError. The report's plots read the same bins, class sums and confident-wrong flags.
"""

from __future__ import annotations

from functools import cache, partial

import numpy as np

from gate.metrics.spec import (
    CLASS_PLOT,
    FAILURES_GALLERY,
    NON_NEGATIVE,
    RELIABILITY_PLOT,
    UNIT,
    WRONG_PLOT,
    Finish,
    RankForm,
    ScoreSpec,
    SumForm,
    mean_form,
    ratio_form,
)
from gate.records import Records

ECE_BINS = 15
EPS = 1e-12


# --- per class ----------------------------------------------------------------------------------------------


def class_sums(records: Records) -> np.ndarray:
    """[2C]: samples per class, then right answers per class (review-set order)."""
    classes = len(records.classes)
    count = np.bincount(records.labels, minlength=classes).astype(np.float64)
    hits = np.bincount(records.labels, weights=records.correct.astype(np.float64), minlength=classes)
    return np.concatenate([count, hits])


def _class_features(records: Records) -> np.ndarray:
    onehot = np.zeros((records.size, len(records.classes)))
    onehot[np.arange(records.size), records.labels] = 1.0
    return np.concatenate([onehot, onehot * records.correct[:, None]], axis=1)


def accuracy_by_class(sums: np.ndarray) -> np.ndarray:
    """Per-class accuracy [r, C] from class sums [r, 2C]; NaN for a class with no samples."""
    classes = sums.shape[1] // 2
    count, hits = sums[:, :classes], sums[:, classes:]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.where(count > 0, hits / np.maximum(count, 1.0), np.nan))


def per_class_accuracy(records: Records) -> np.ndarray:
    """Accuracy (recall) of each class [C], review-set order; NaN for a class with no samples."""
    accuracy: np.ndarray = accuracy_by_class(class_sums(records)[None, :])[0]
    return accuracy


def _balanced(sums: np.ndarray) -> np.ndarray:
    acc = accuracy_by_class(sums)
    present = (~np.isnan(acc)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present > 0, np.nansum(acc, axis=1) / np.maximum(present, 1), np.nan)


def _worst(sums: np.ndarray) -> np.ndarray:
    acc = accuracy_by_class(sums)
    return np.where(np.isnan(acc).all(axis=1), np.nan, np.where(np.isnan(acc), np.inf, acc).min(axis=1))


def _class_form(finish: Finish, records: Records) -> SumForm:
    """Per-class sums (count, right): balanced accuracy is the mean of their ratios, worst-class the minimum."""
    return SumForm(class_sums(records), finish, partial(_class_features, records))


def class_accuracy_form(records: Records, class_name: str) -> SumForm:
    """Accuracy (recall) of one class: right answers over the class's samples."""
    in_class = records.labels == records.classes.index(class_name)
    return ratio_form(records.correct & in_class, in_class)


# --- calibration ------------------------------------------------------------------------------------------------


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


def calibration_sums(confidence: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> np.ndarray:
    """[3 (B + 1)]: samples, right answers and summed confidence per bin (bin ``B`` holds exactly 1.0)."""
    index = calibration_bin_index(confidence, n_bins)
    width = n_bins + 1
    count = np.bincount(index, minlength=width).astype(np.float64)
    hits = np.bincount(index, weights=np.asarray(correct, dtype=np.float64), minlength=width)
    conf = np.bincount(index, weights=np.asarray(confidence, dtype=np.float64), minlength=width)
    return np.concatenate([count, hits, conf])


def _calibration_features(confidence: np.ndarray, correct: np.ndarray) -> np.ndarray:
    index = calibration_bin_index(confidence)
    onehot = np.zeros((confidence.size, ECE_BINS + 1))
    onehot[np.arange(confidence.size), index] = 1.0
    return np.concatenate([onehot, onehot * correct[:, None], onehot * confidence[:, None]], axis=1)


def calibration_bins(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin accuracy, mean confidence (0 for an empty bin) and share of samples [r, B + 1] from sums."""
    width = sums.shape[1] // 3
    count, hits, conf = sums[:, :width], sums[:, width:2 * width], sums[:, 2 * width:]
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(count > 0, hits / count, 0.0)
        mean_conf = np.where(count > 0, conf / count, 0.0)
        total = count.sum(axis=1, keepdims=True)
        return acc, mean_conf, count / np.maximum(total, 1.0)


def ece_from_sums(sums: np.ndarray) -> np.ndarray:
    """ECE [r] from calibration sums [r, 3 (B + 1)]: Σ_m |B_m|/n · |acc(B_m) − conf(B_m)|."""
    acc, conf, share = calibration_bins(sums)
    return np.where(share.sum(axis=1) > 0, (np.abs(acc - conf) * share).sum(axis=1), np.nan)


def _overconfidence(sums: np.ndarray) -> np.ndarray:
    acc, conf, share = calibration_bins(sums)
    return np.where(share.sum(axis=1) > 0, (share * conf * np.maximum(conf - acc, 0.0)).sum(axis=1), np.nan)


def _mce(sums: np.ndarray) -> np.ndarray:
    acc, conf, share = calibration_bins(sums)
    gaps = np.where(share > 0, np.abs(acc - conf), -np.inf).max(axis=1)
    return np.where(np.isfinite(gaps), gaps, np.nan)


def _calibration_form(finish: Finish, records: Records) -> SumForm:
    """Per-bin sums (count, right, confidence) on the 15 bins; a sample's bin never moves in a resample."""
    confidence, correct = records.confidence.astype(np.float64), records.correct
    return SumForm(calibration_sums(confidence, correct), finish, partial(_calibration_features, confidence, correct))


def confidently_wrong(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> np.ndarray:
    """Per sample: wrong with confidence ≥ ``threshold``."""
    # In float32, as the confidences are: float32(0.9) is just below the float64 0.9 and would not count.
    return ~np.asarray(correct, dtype=bool) & (np.asarray(confidence) >= np.float32(threshold))


def confident_wrong_rate_form(threshold: float, records: Records) -> SumForm:
    """Share of ALL samples that are wrong with confidence ≥ ``threshold``."""
    return mean_form(confidently_wrong(records.confidence, records.correct, threshold))


def nll_terms(records: Records) -> np.ndarray:
    """−log p of the true class per sample (from the model's full softmax; p clipped at 1e-12)."""
    p_true = records.probs[np.arange(records.size), records.labels].astype(np.float64)
    return np.asarray(-np.log(np.clip(p_true, EPS, 1.0)))


def _mean_confidence_wrong(records: Records) -> SumForm:
    wrong = ~records.correct
    return ratio_form(records.confidence * wrong, wrong)


# --- rank forms: the order of the samples by confidence ----------------------------------------------------------
# With c_i copies of sample i (sorted by confidence, stable, descending), S the cumulative counts and E the
# cumulative errors, sample i fills positions S_{i-1}+1 .. S_i of the sorted resample, where the running error
# count is E_{i-1} + e_i (k − S_{i-1}); summing risk / k over that block gives
# (E_{i-1} − e_i S_{i-1}) (H(S_i) − H(S_{i-1})) + e_i c_i (H: harmonic numbers), and AURC is the sum over i
# divided by N. Selective accuracy keeps whole samples while S_i ≤ keep and part of the boundary one.


def _order(records: Records) -> np.ndarray:
    # Equal confidences stay in sample order.
    return np.argsort(-records.confidence, kind="stable")


def _harmonic(n: int) -> np.ndarray:
    """H(0..n): H(k) = 1 + 1/2 + ... + 1/k."""
    return np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])


def _aurc(errors: np.ndarray, harmonic: np.ndarray, counts: np.ndarray) -> np.ndarray:
    drawn = counts.cumsum(axis=1)
    before = drawn - counts
    weighted = counts * errors
    errors_before = weighted.cumsum(axis=1) - weighted
    span = harmonic[drawn.astype(np.int64)] - harmonic[before.astype(np.int64)]
    return np.asarray(((errors_before - errors * before) * span + weighted).sum(axis=1) / drawn[:, -1])


def aurc_form(records: Records) -> RankForm:
    """Area under the risk–coverage curve: mean selective risk over all cut-offs (oracle NOT subtracted)."""
    order = _order(records)
    errors = (~records.correct[order]).astype(np.float64)
    full = float((np.cumsum(errors) / np.arange(1, records.size + 1)).mean()) if records.size else float("nan")
    return RankForm(order, partial(_aurc, errors, _harmonic(records.size)), full)


def _selective_accuracy(correct: np.ndarray, coverage: float, counts: np.ndarray) -> np.ndarray:
    # np.round rounds half to even, as round() does for the whole set.
    keep = np.maximum(1.0, np.round(coverage * counts.sum(axis=1)))[:, None]
    before = counts.cumsum(axis=1) - counts
    kept = np.clip(keep - before, 0.0, counts)
    return np.asarray((kept * correct).sum(axis=1) / keep[:, 0])


def selective_accuracy_form(coverage: float, records: Records) -> RankForm:
    """Accuracy on the ``coverage`` share of samples with the highest confidence."""
    order = _order(records)
    correct = records.correct[order]
    keep = max(1, int(round(coverage * records.size)))
    full = float(correct[:keep].mean()) if records.size else float("nan")
    return RankForm(order, partial(_selective_accuracy, correct.astype(np.float64), coverage), full)


SCORES: tuple[ScoreSpec, ...] = (
    ScoreSpec("accuracy", True, "Share of samples predicted correctly.", "classification",
              lambda r: mean_form(r.correct), proportion=True, evidence=FAILURES_GALLERY, history=True,
              words="the model answers right on {pct} of samples"),
    ScoreSpec("balanced_accuracy", True, "Mean of per-class accuracy.", "classification",
              partial(_class_form, _balanced), bounds=UNIT, evidence=CLASS_PLOT,
              words="averaged over classes, the model answers right on {pct} of samples"),
    ScoreSpec("worst_class_accuracy", True, "Accuracy of the worst class.", "classification",
              partial(_class_form, _worst), bounds=UNIT, evidence=CLASS_PLOT,
              words="the worst class is answered right on {pct} of its samples"),
    ScoreSpec("class_accuracy.<class>", True, "Accuracy (recall) of one class.", "classification",
              class_accuracy_form, proportion=True, evidence=CLASS_PLOT,
              words="this class is answered right on {pct} of its samples"),
    ScoreSpec("selective_accuracy@0.8", True, "Accuracy on the 80% most confident samples.", "classification",
              partial(selective_accuracy_form, 0.8), proportion=True, evidence=RELIABILITY_PLOT,
              words="on its 80% most confident answers the model is right {pct} of the time"),
    ScoreSpec("nll", False, "Mean negative log-likelihood of the true class.", "calibration",
              lambda r: mean_form(nll_terms(r)), bounds=NON_NEGATIVE, evidence=RELIABILITY_PLOT,
              words="the true class gets a mean negative log-likelihood of {value}"),
    # Multi-class: the sum over classes of (p - y)^2 is at most 2.
    ScoreSpec("brier", False, "Multi-class Brier score: mean Σ_k (p_k − y_k)².", "calibration",
              lambda r: mean_form(r.squared_error), bounds=(0.0, 2.0), evidence=RELIABILITY_PLOT,
              words="the probabilities miss the true answer by a Brier score of {value}"),
    ScoreSpec("ece", False, "Expected calibration error, 15 equal-width bins, top label.", "calibration",
              partial(_calibration_form, ece_from_sums), bounds=UNIT, evidence=RELIABILITY_PLOT, history=True,
              words="stated confidence and real accuracy differ by {pct} on average"),
    ScoreSpec("overconfidence_error", False, "ECE's over-confident part only, weighted by confidence "
              "(Thulasidasan et al. 2019).", "calibration", partial(_calibration_form, _overconfidence),
              bounds=UNIT, evidence=RELIABILITY_PLOT, history=True,
              words="the model claims {pct} more confidence than it earns on average"),
    ScoreSpec("mce", False, "Maximum calibration error over the 15 bins.", "calibration",
              partial(_calibration_form, _mce), bounds=UNIT, evidence=RELIABILITY_PLOT,
              words="in its worst confidence bin the model is off by {pct}"),
    ScoreSpec("confident_wrong_rate@0.9", False, "Share of all samples wrong with confidence ≥ 0.9.",
              "calibration", partial(confident_wrong_rate_form, 0.9), proportion=True, evidence=WRONG_PLOT,
              words="{pct} of samples are wrong with at least 90% confidence"),
    ScoreSpec("confident_wrong_rate@0.99", False, "Share of all samples wrong with confidence ≥ 0.99.",
              "calibration", partial(confident_wrong_rate_form, 0.99), proportion=True, evidence=WRONG_PLOT,
              history=True, words="{pct} of samples are wrong with at least 99% confidence"),
    ScoreSpec("mean_confidence_wrong", False, "Mean confidence of wrong predictions.", "calibration",
              _mean_confidence_wrong, bounds=UNIT, evidence=RELIABILITY_PLOT,
              words="wrong answers still come with {pct} confidence on average"),
    ScoreSpec("aurc", False, "Area under the risk-coverage curve (raw; oracle not subtracted).", "calibration",
              aurc_form, bounds=UNIT, evidence=RELIABILITY_PLOT,
              words="the risk-coverage curve has an area of {value}"),
)

"""The samples a report shows: galleries (easy, borderline, failures) chosen while streaming, plus fixed ids."""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from torch import Tensor

from gate.engine.runs import FIXED_TOTAL, BatchOutputs, ModelRun
from gate.inputs.batches import Batch, Frame
from gate.inputs.review_set import ReviewSet
from gate.records import KeptSample, Records
from gate.result import Gallery

# Borderline means the runner-up came close: a sample whose top answer leads by this much or more is not
# borderline, however few closer ones there are (a confident set would otherwise show margins of 0.99).
BORDERLINE_MARGIN = 0.5
# Right for the wrong reason: a right answer whose map puts less mass on the object than a uniform map would.
WRONG_REASON_LIFT = 1.0
KINDS = ("easy", "borderline", "failures", "wrong_reason")


def gallery_keys(
    top_prob: np.ndarray, second_prob: np.ndarray, correct: np.ndarray, lift: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-sample ranking keys of each gallery kind (higher is shown first; NaN = not of that kind).

    easy: confidence of a right answer; failures: confidence of a wrong one; borderline: minus the margin
    between the top two probabilities (over all the model's outputs, float32 as the records keep them), only
    below ``BORDERLINE_MARGIN``; wrong_reason: minus the lift of a right answer whose lift is below
    ``WRONG_REASON_LIFT`` (the map furthest off the object first; no lift, no pick).
    """
    top = np.asarray(top_prob, dtype=np.float32)
    conf = top.astype(np.float64)
    margin = (top - np.asarray(second_prob, dtype=np.float32)).astype(np.float64)
    lifts = np.full(conf.shape, np.nan) if lift is None else np.asarray(lift, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        off_object = np.asarray(correct, dtype=bool) & (lifts < WRONG_REASON_LIFT)
    return {"easy": np.where(correct, conf, np.nan),
            "borderline": np.where(margin < BORDERLINE_MARGIN, -margin, np.nan),
            "failures": np.where(correct, np.nan, conf), "wrong_reason": np.where(off_object, -lifts, np.nan)}


def lift_of(energy: np.ndarray, mask_area: np.ndarray) -> np.ndarray:
    """Per-sample lift as ``Records.lift`` computes it (energy over mask area, NaN without a mask)."""
    energy, area = np.asarray(energy, dtype=np.float64), np.asarray(mask_area, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(area > 0, energy / area, np.nan)


def select_gallery(records: Records, size: int) -> Gallery:
    """The ``size`` highest-keyed samples of each kind, ties to the earlier sample (rows in review-set order)."""
    keys = gallery_keys(records.confidence.astype(np.float32), records.runner_up, records.correct,
                        lift_of(records.energy, records.mask_area))

    def top(kind: str) -> tuple[str, ...]:
        key = keys[kind]
        rows = np.flatnonzero(~np.isnan(key))
        best = rows[np.lexsort((rows, -key[rows]))][:size]
        return tuple(records.ids[int(i)] for i in best)

    return Gallery(**{kind: top(kind) for kind in KINDS})


def finish_gallery(records: Records, size: int, fixed: frozenset[str], seconds: float) -> ModelRun:
    gallery = select_gallery(records, size)
    shown = {i for kind in KINDS for i in getattr(gallery, kind)} | fixed
    kept = {k: v for k, v in records.kept.items() if k in shown}
    return ModelRun(records=replace(records, kept=kept), gallery=gallery, seconds=seconds)


def fixed_ids(review_set: ReviewSet, per_class: int, total: int = FIXED_TOTAL) -> frozenset[str]:
    """Samples always kept, so that reports of model versions line up: at most ``total`` in all.

    Round ``r`` adds the ``r``-th sample (review-set order) of each class that got one in every earlier
    round, for up to ``per_class`` rounds. When a round does not fit in what is left of ``total``, it takes
    classes evenly spread over the round's classes (in label order). Each class keeps a prefix of its
    samples, and the choice depends only on the review set (not on the model, batches or shards).
    """
    by_class: dict[int, list[str]] = {}
    for sample in review_set.samples:
        by_class.setdefault(sample.label, []).append(sample.sample_id)
    ids: list[str] = []
    classes = sorted(by_class)
    for rank in range(per_class):
        classes = [c for c in classes if len(by_class[c]) > rank]
        room = total - len(ids)
        if room <= 0 or not classes:
            break
        if len(classes) > room:
            classes = [classes[i * len(classes) // room] for i in range(room)]
        ids.extend(by_class[c][rank] for c in classes)
    return frozenset(ids)


@dataclass(order=True)
class _Entry:
    key: tuple[float, int]  # (gallery key, -position)
    sample_id: str = field(compare=False)


class GallerySelector:
    """Bounded streaming choice of gallery samples: easy, borderline and failures, plus fixed ids."""

    def __init__(self, size: int, fixed: frozenset[str], output_names: Sequence[str] = ()) -> None:
        self.size = size
        self.fixed = fixed
        self.output_names = tuple(output_names)
        self.heaps: dict[str, list[_Entry]] = {kind: [] for kind in KINDS}
        self.kept: dict[str, KeptSample] = {}

    def offer(
        self, batch: Batch, outputs: BatchOutputs, cam: Tensor, frame: Frame, variants: dict[str, Tensor],
        variant_preds: dict[str, np.ndarray], lift: np.ndarray | None = None,
    ) -> None:
        """Keep the batch's samples that enter a gallery (``lift``: per row, for right-for-the-wrong-reason)."""
        keys = gallery_keys(outputs.top_prob, outputs.second_prob, outputs.pred == batch.labels, lift)
        masked_row = np.cumsum(batch.has_mask) - 1  # position among the masked rows (variants hold only those)
        for row in range(len(batch.indices)):
            sample_id = batch.sample_ids[row]
            position = int(batch.indices[row])
            wanted = sample_id in self.fixed
            for kind, key in keys.items():
                if not np.isnan(key[row]):
                    wanted |= self._push(kind, float(key[row]), position, sample_id)
            if wanted:
                sub = int(masked_row[row]) if batch.has_mask[row] else None
                self.kept[sample_id] = self._kept_sample(row, sub, batch, outputs, cam, frame, variants,
                                                         variant_preds)
        self._prune()

    def add_swaps(self, batch: Batch, swapped: dict[str, Tensor], preds: dict[str, np.ndarray]) -> None:
        """Swap-probe variants (every row has one) of the kept samples of this batch: original beside probed."""
        if not swapped:
            return
        for row, sample_id in enumerate(batch.sample_ids):
            kept = self.kept.get(sample_id)
            if kept is not None:
                self.kept[sample_id] = replace(
                    kept, variants={**kept.variants, **{name: to_uint8(x[row]) for name, x in swapped.items()}},
                    variant_preds={**kept.variant_preds, **{name: int(p[row]) for name, p in preds.items()}})

    def _push(self, kind: str, key: float, position: int, sample_id: str) -> bool:
        # Heap root = the worst kept entry: the lowest key, and among equal keys the latest sample. With
        # this total order the streamed choice equals select_gallery's, whatever the batches or shards.
        heap = self.heaps[kind]
        entry = _Entry((key, -position), sample_id)
        if len(heap) < self.size:
            heapq.heappush(heap, entry)
            return True
        if heap and entry.key > heap[0].key:
            heapq.heapreplace(heap, entry)
            return True
        return False

    def _prune(self) -> None:
        alive = set(self.fixed) | {e.sample_id for heap in self.heaps.values() for e in heap}
        for sample_id in [k for k in self.kept if k not in alive]:
            del self.kept[sample_id]

    def _kept_sample(
        self, row: int, sub: int | None, batch: Batch, outputs: BatchOutputs, cam: Tensor, frame: Frame,
        variants: dict[str, Tensor], variant_preds: dict[str, np.ndarray],
    ) -> KeptSample:
        output = int(outputs.pred_output[row])
        return KeptSample(
            sample_id=batch.sample_ids[row],
            image=to_uint8(frame.images[row]),
            mask=frame.masks[row].cpu().numpy().astype(bool),
            cam=cam[row].float().cpu().numpy(),
            label=int(batch.labels[row]),
            pred=int(outputs.pred[row]),
            confidence=float(outputs.top_prob[row]),
            variants={} if sub is None else {name: to_uint8(x[sub]) for name, x in variants.items()},
            variant_preds={} if sub is None else {name: int(p[sub]) for name, p in variant_preds.items()},
            pred_name=self.output_names[output] if output < len(self.output_names) else str(output),
            has_mask=bool(batch.has_mask[row]),
        )


def to_uint8(image: Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()

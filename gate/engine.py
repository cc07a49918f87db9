"""The engine: candidates × review set → per-sample records.

The review set is decoded once per batch and every model (candidates and the
baseline) runs on the same batch: one forward gives logits and Grad-CAM; each
enabled background variant adds exactly one more forward; the sanity probe adds
one explained forward of a randomised copy. Only per-sample numbers are kept,
plus a bounded set of samples (images and maps) for the report's galleries.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from gate import probes as probe_ops
from gate.candidate import Candidate
from gate.errors import ModelOutputError, UsageError
from gate.gradcam import explain, upsample
from gate.localisation import localise
from gate.records import PROBE_VARIANTS, KeptSample, Records
from gate.result import Gallery
from gate.review_set import ReviewSet

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class EngineOptions:
    """How to run: device, batch size, enabled probes, seed and gallery sizes."""

    device: str = "auto"
    batch_size: int = 32
    probes: frozenset[str] = frozenset()
    seed: int = 0
    gallery_size: int = 8  # samples per gallery kind (easy, borderline, failures)
    fixed_per_class: int = 2  # samples per class always kept: the same ids across model versions


@dataclass(frozen=True)
class ModelRun:
    """What the engine measured for one model."""

    records: Records
    gallery: Gallery
    seconds: float


@dataclass(frozen=True)
class Batch:
    """Decoded samples of one batch at native size: uint8 images and bool masks."""

    indices: np.ndarray
    sample_ids: tuple[str, ...]
    labels: np.ndarray
    images: list[np.ndarray]
    masks: list[np.ndarray]


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; asking for CUDA without one is a usage error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA device is available", field="--device")
    if name != "cpu" and not name.startswith("cuda"):
        raise UsageError(f"unknown device {name!r} (auto, cpu or cuda)", field="--device")
    return torch.device(name)


def run(
    candidates: Sequence[Candidate],
    review_set: ReviewSet,
    options: EngineOptions = EngineOptions(),
    progress: Progress | None = None,
    indices: np.ndarray | None = None,
) -> list[ModelRun]:
    """Run every candidate over the review set (or the rows ``indices``) in one pass of decoded batches."""
    device = resolve_device(options.device)
    order = np.arange(review_set.size) if indices is None else np.asarray(indices, dtype=np.int64)
    labels = review_set.labels()
    partners = probe_ops.pair_partners(labels, seed=options.seed) if "background" in options.probes else {}
    fixed = fixed_ids(review_set, options.fixed_per_class)
    states = [_ModelState(c, review_set, options, device, partners, fixed) for c in candidates]
    for start in range(0, len(order), options.batch_size):
        batch = _decode(review_set, order[start : start + options.batch_size])
        partner_batches = _decode_partners(review_set, batch, partners)
        for state in states:
            state.consume(batch, partner_batches)
        if progress is not None:
            progress(min(start + options.batch_size, len(order)), len(order))
    return [state.finish(order) for state in states]


def keep_samples(
    candidate: Candidate, review_set: ReviewSet, sample_ids: Collection[str], options: EngineOptions
) -> dict[str, KeptSample]:
    """Images and maps of chosen samples (e.g. the baseline beside a candidate's gallery)."""
    position = {s.sample_id: i for i, s in enumerate(review_set.samples)}
    wanted = np.array(sorted(position[i] for i in sample_ids if i in position), dtype=np.int64)
    if not wanted.size:
        return {}
    keep_all = replace(options, gallery_size=len(wanted), fixed_per_class=0)
    (model_run,) = run([candidate], review_set, keep_all, indices=wanted)
    return {k: v for k, v in model_run.records.kept.items() if k in set(sample_ids)}


def gallery_keys(probs: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample ranking keys of each gallery kind (higher is shown first; NaN = not of that kind).

    easy: confidence of a right answer; failures: confidence of a wrong one; borderline: minus the margin
    between the top two probabilities. ``probs`` are the float32 probabilities the records keep.
    """
    probs = np.asarray(probs, dtype=np.float32)
    top2 = -np.sort(-probs, axis=1)[:, :2]
    conf = top2[:, 0].astype(np.float64)
    margin = (top2[:, 0] - top2[:, -1]).astype(np.float64)
    correct = probs.argmax(axis=1) == labels
    return {"easy": np.where(correct, conf, np.nan), "borderline": -margin,
            "failures": np.where(correct, np.nan, conf)}


def select_gallery(records: Records, size: int) -> Gallery:
    """The ``size`` highest-keyed samples of each kind, ties to the earlier sample (rows in review-set order)."""
    keys = gallery_keys(records.probs, records.labels)

    def top(kind: str) -> tuple[str, ...]:
        key = keys[kind]
        rows = np.flatnonzero(~np.isnan(key))
        best = rows[np.lexsort((rows, -key[rows]))][:size]
        return tuple(records.ids[int(i)] for i in best)

    return Gallery(easy=top("easy"), borderline=top("borderline"), failures=top("failures"))


def merge_runs(parts: Sequence[ModelRun], review_set: ReviewSet, options: EngineOptions) -> ModelRun:
    """One model's runs over consecutive shards of the review set, joined as if run in one process."""
    records = Records.concat([part.records for part in parts])
    fixed = fixed_ids(review_set, options.fixed_per_class)
    return _finish_gallery(records, options.gallery_size, fixed, max(part.seconds for part in parts))


def _finish_gallery(records: Records, size: int, fixed: frozenset[str], seconds: float) -> ModelRun:
    gallery = select_gallery(records, size)
    shown = set(gallery.easy) | set(gallery.borderline) | set(gallery.failures) | fixed
    kept = {k: v for k, v in records.kept.items() if k in shown}
    return ModelRun(records=replace(records, kept=kept), gallery=gallery, seconds=seconds)


def fixed_ids(review_set: ReviewSet, per_class: int) -> frozenset[str]:
    """The first ``per_class`` samples of each class: always kept, so reports of versions line up."""
    counts: dict[int, int] = {}
    ids = []
    for sample in review_set.samples:
        if counts.get(sample.label, 0) < per_class:
            counts[sample.label] = counts.get(sample.label, 0) + 1
            ids.append(sample.sample_id)
    return frozenset(ids)


def _decode(review_set: ReviewSet, indices: np.ndarray) -> Batch:
    images = [review_set.load_image(int(i)) for i in indices]
    masks = [review_set.load_mask(int(i)) for i in indices]
    for i, image, mask in zip(indices, images, masks, strict=True):
        if image.shape[:2] != mask.shape:
            raise ModelOutputError(f"mask size {mask.shape} differs from image size {image.shape[:2]}",
                                   path=review_set.root / review_set.samples[int(i)].mask)
    samples = [review_set.samples[int(i)] for i in indices]
    return Batch(indices=indices, sample_ids=tuple(s.sample_id for s in samples),
                 labels=np.array([s.label for s in samples], dtype=np.int64), images=images, masks=masks)


def _decode_partners(review_set: ReviewSet, batch: Batch, partners: dict[str, np.ndarray]) -> dict[str, Batch]:
    return {variant: _decode(review_set, partners[variant][batch.indices]) for variant in partners}


def _to_tensors(batch: Batch, size: tuple[int, int], device: torch.device) -> tuple[Tensor, Tensor]:
    """Images as float [B,3,H,W] in [0,1] (bilinear) and masks bool [B,H,W] (nearest) at ``size``."""
    images, masks = [], []
    for image, mask in zip(batch.images, batch.masks, strict=True):
        x = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float().div_(255)
        m = torch.from_numpy(np.array(mask))[None, None].float()
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
            m = F.interpolate(m, size=size, mode="nearest")
        images.append(x)
        masks.append(m[:, 0] > 0.5)
    return torch.cat(images).to(device), torch.cat(masks).to(device)


class _ModelState:
    """Running state of one model over the batches: per-sample rows and the kept samples."""

    def __init__(
        self, candidate: Candidate, review_set: ReviewSet, options: EngineOptions, device: torch.device,
        partners: dict[str, np.ndarray], fixed: frozenset[str],
    ) -> None:
        self.candidate = candidate.aligned_to(review_set.classes)
        self.review_set = review_set
        self.options = options
        self.device = device
        self.partners = partners
        self.model = self.candidate.model.to(device)
        self.randomised = (
            probe_ops.randomized_copy(self.model, self.candidate.target_layer, seed=options.seed).to(device)
            if "sanity" in options.probes else None
        )
        native = review_set.load_image(0).shape[:2]
        size = self.candidate.input.size
        self.size: tuple[int, int] = (int(size[0]), int(size[1])) if min(size) > 0 else (native[0], native[1])
        self.mean = torch.tensor(self.candidate.input.mean, device=device)[None, :, None, None]
        self.std = torch.tensor(self.candidate.input.std, device=device)[None, :, None, None]
        self.rows: dict[str, list[np.ndarray]] = {}
        self.gallery = _GallerySelector(options.gallery_size, fixed)
        self.seconds = 0.0

    def normalise(self, images: Tensor) -> Tensor:
        return (images - self.mean) / self.std

    def consume(self, batch: Batch, partner_batches: dict[str, Batch]) -> None:
        started = time.perf_counter()
        images, masks = _to_tensors(batch, self.size, self.device)
        explained = explain(self.model, self.candidate.target_layer, self.normalise(images))
        logits = self._check_finite(explained.logits, batch)
        if self.candidate.logit_order is not None:
            logits = logits[:, list(self.candidate.logit_order)]
        probs = torch.softmax(logits.double(), dim=1).float().cpu().numpy()
        cam = upsample(explained.cam, self.size)
        local = localise(cam, masks)
        self._append("probs", probs)
        for name in ("energy", "mask_area", "pointing_hit", "rank_accuracy"):
            self._append(name, getattr(local, name).numpy())
        variants = self._variants(images, masks, partner_batches) if partner_batches else {}
        variant_preds = {name: self._predict(x, batch, name) for name, x in variants.items()}
        for name, preds in variant_preds.items():
            self._append(f"probe.{name}", preds)
        if self.randomised is not None:
            self._append("sanity", self._sanity(images, explained.cam, explained.target))
        self.gallery.offer(batch, probs, cam, images, masks, variants, variant_preds)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - started

    def _check_finite(self, logits: Tensor, batch: Batch, variant: str = "") -> Tensor:
        bad = ~torch.isfinite(logits).all(1)
        if bad.any():
            first = batch.sample_ids[int(bad.nonzero()[0])]
            where = f" on the {variant} variant" if variant else ""
            raise ModelOutputError(f"model output is NaN or infinite{where} (first on sample {first!r})",
                                   path=self.candidate.path, field="logits")
        return logits

    def _variants(self, images: Tensor, masks: Tensor, partner_batches: dict[str, Batch]) -> dict[str, Tensor]:
        out = {"only_fg": probe_ops.only_fg(images, masks), "only_bg": probe_ops.remove_object(images, masks)}
        for name in ("mixed_same", "mixed_rand"):
            other_images, other_masks = _to_tensors(partner_batches[name], self.size, self.device)
            scene = probe_ops.remove_object(other_images, other_masks)
            out[name] = probe_ops.paste_object(images, masks, scene)
        return {name: out[name] for name in PROBE_VARIANTS}

    @torch.no_grad()
    def _predict(self, images: Tensor, batch: Batch, variant: str) -> np.ndarray:
        logits = self._check_finite(self.model(self.normalise(images)), batch, variant)
        if self.candidate.logit_order is not None:
            logits = logits[:, list(self.candidate.logit_order)]
        return logits.argmax(1).cpu().numpy().astype(np.int64)

    def _sanity(self, images: Tensor, cam: Tensor, target: Tensor) -> np.ndarray:
        # Compared at the target layer's own resolution: upsampling adds no information, only smooth
        # interpolated pixels that inflate rank correlation (and it costs as much as a forward at 224²).
        assert self.randomised is not None
        randomised = explain(self.randomised, self.candidate.target_layer, self.normalise(images), target=target)
        return probe_ops.spearman_rows(cam, randomised.cam).double().cpu().numpy()

    def _append(self, name: str, values: np.ndarray) -> None:
        self.rows.setdefault(name, []).append(np.asarray(values))

    def finish(self, order: np.ndarray) -> ModelRun:
        column = {name: np.concatenate(parts) for name, parts in self.rows.items()}
        if not self.rows:  # no rows at all (e.g. a torchrun rank beyond the review set's size)
            empty = np.zeros(0)
            column = {"probs": np.zeros((0, len(self.review_set.classes))), "energy": empty, "mask_area": empty,
                      "pointing_hit": empty, "rank_accuracy": empty}
        samples = self.review_set.samples
        records = Records(
            classes=self.review_set.classes,
            ids=tuple(samples[int(i)].sample_id for i in order),
            labels=self.review_set.labels()[order],
            probs=column["probs"].astype(np.float32),
            energy=column["energy"].astype(np.float64),
            mask_area=column["mask_area"].astype(np.float64),
            pointing_hit=column["pointing_hit"].astype(np.float64),
            rank_accuracy=column["rank_accuracy"].astype(np.float64),
            probe_preds={v: column[f"probe.{v}"] for v in PROBE_VARIANTS if f"probe.{v}" in column},
            pairings={v: p[order] for v, p in self.partners.items()},
            sanity_similarity=column.get("sanity"),
            kept=self.gallery.kept,
        )
        return _finish_gallery(records, self.options.gallery_size, self.gallery.fixed, self.seconds)


@dataclass(order=True)
class _Entry:
    key: tuple[float, int]  # (gallery key, -position)
    sample_id: str = field(compare=False)


class _GallerySelector:
    """Bounded streaming choice of gallery samples: easy, borderline and failures, plus fixed ids."""

    def __init__(self, size: int, fixed: frozenset[str]) -> None:
        self.size = size
        self.fixed = fixed
        self.heaps: dict[str, list[_Entry]] = {"easy": [], "borderline": [], "failures": []}
        self.kept: dict[str, KeptSample] = {}

    def offer(
        self, batch: Batch, probs: np.ndarray, cam: Tensor, images: Tensor, masks: Tensor,
        variants: dict[str, Tensor], variant_preds: dict[str, np.ndarray],
    ) -> None:
        keys = gallery_keys(probs, batch.labels)
        preds = probs.argmax(axis=1)
        conf = probs.max(axis=1)
        for row in range(len(batch.indices)):
            sample_id = batch.sample_ids[row]
            position = int(batch.indices[row])
            wanted = sample_id in self.fixed
            for kind, key in keys.items():
                if not np.isnan(key[row]):
                    wanted |= self._push(kind, float(key[row]), position, sample_id)
            if wanted:
                self.kept[sample_id] = self._kept_sample(row, sample_id, batch, cam, images, masks, preds, conf,
                                                         variants, variant_preds)
        self._prune()

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
        self, row: int, sample_id: str, batch: Batch, cam: Tensor, images: Tensor, masks: Tensor,
        preds: np.ndarray, conf: np.ndarray, variants: dict[str, Tensor], variant_preds: dict[str, np.ndarray],
    ) -> KeptSample:
        return KeptSample(
            sample_id=sample_id,
            image=_to_uint8(images[row]),
            mask=masks[row].cpu().numpy().astype(bool),
            cam=cam[row].float().cpu().numpy(),
            label=int(batch.labels[row]),
            pred=int(preds[row]),
            confidence=float(conf[row]),
            variants={name: _to_uint8(x[row]) for name, x in variants.items()},
            variant_preds={name: int(p[row]) for name, p in variant_preds.items()},
        )


def _to_uint8(image: Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()

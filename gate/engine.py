"""The engine: candidates × review set → per-sample records.

The review set is decoded once per batch and every model (candidates and the
baseline) runs on the same batch: each model brings the decoded uint8 images into
its own frame (its resize, crop and interpolation; models that share them share
the framed batch), then one forward gives logits and Grad-CAM; each enabled
background variant adds exactly one more forward; the sanity probe adds one
explained forward per randomised copy (``probes.SANITY_COPIES``). Only per-sample numbers are kept, plus a
bounded set of samples (images and maps) for the report's galleries.

The prediction is the argmax over ALL the model's outputs and probabilities come
from its full softmax, also when the review set covers only some of its classes.
Samples without a mask are scored for metrics; alignment and background probes
use the masked ones. A model whose forward raises, returns anything but finite
[B, outputs] logits is an input error naming the candidate file.
"""

from __future__ import annotations

import contextlib
import heapq
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gate import probes as probe_ops
from gate.candidate import Candidate, InputSpec
from gate.errors import ReviewSetError, UsageError
from gate.gradcam import explain, upsample
from gate.inputs import frame_cache
from gate.inputs.batches import Batch, Frame, Frames, loaded_batches, native_size
from gate.inputs.preprocess import Geometry
from gate.localisation import localise
from gate.model_faults import OutputCheck
from gate.records import NO_VARIANT, OUTSIDE, PROBE_VARIANTS, KeptSample, Records
from gate.result import Gallery
from gate.review_set import ReviewSet

Progress = Callable[[int, int], None]

PRECISIONS = ("fp32", "bf16")
FIXED_TOTAL = 48  # at most this many fixed samples overall: 1000 classes × 2 kept ~2 GB of pictures at 224²


@dataclass(frozen=True)
class EngineOptions:
    """How to run: device, batch size, enabled probes, seed and gallery sizes."""

    device: str = "auto"
    batch_size: int = 32
    probes: frozenset[str] = frozenset()
    seed: int = 0
    gallery_size: int = 8  # samples per gallery kind (easy, borderline, failures)
    fixed_per_class: int = 2  # samples per class always kept: the same ids across model versions
    fixed_total: int = FIXED_TOTAL  # ... but at most this many in all, spread over the classes (fixed_ids)
    workers: int = 0  # threads decoding and framing the next batches (0: in the calling thread)
    precision: str = "fp32"  # "bf16": the forwards under autocast; maps, probabilities and scores in float32
    frame_cache: str | None = None  # folder keeping framed review sets between gates (gate.inputs.frame_cache)


@dataclass(frozen=True)
class ModelRun:
    """What the engine measured for one model."""

    records: Records
    gallery: Gallery
    seconds: float
    frames: str = "decoded"  # where the frames came from (frame_source): "decoded", "cache-read", ...


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
    shared_cache: str | None = None,
) -> list[ModelRun]:
    """Run every candidate over the review set (or the rows ``indices``) in one pass of decoded batches.

    ``shared_cache`` (a torchrun launch id, with ``options.frame_cache``): this rank writes its block into the
    launch's shared cache entries and leaves them for rank 0 to commit (gate.inputs.frame_cache.commit_shared).
    """
    device = resolve_device(options.device)
    order = np.arange(review_set.size) if indices is None else np.asarray(indices, dtype=np.int64)
    partners = masked_partners(review_set, options.seed) if "background" in options.probes else {}
    if options.precision not in PRECISIONS:
        raise UsageError(f"unknown precision {options.precision!r} (fp32 or bf16)", field="--precision")
    fixed = fixed_ids(review_set, options.fixed_per_class, options.fixed_total)
    native = _native_size_for(candidates, review_set)
    states = [_ModelState(c, review_set, options, device, partners, fixed, native) for c in candidates]
    geometries = list(dict.fromkeys(state.geometry for state in states))  # each framed once per batch
    # A gate over the whole set writes a cache entry, and so do the ranks of a launch together; a gate over a
    # subset does not. Any gate reads one.
    cache = (frame_cache.plan(Path(options.frame_cache), review_set.digest, review_set.size, geometries,
                              write=indices is None or shared_cache is not None, shared=shared_cache)
             if options.frame_cache else None)
    loader = loaded_batches(review_set, order, options.batch_size, partners, geometries, options.workers,
                            pin=device.type == "cuda", cache=cache)
    done, complete = 0, False
    try:
        with contextlib.closing(loader):  # an error in a model stops the workers now
            for loaded in loader:
                frames = Frames.of(loaded, device)  # shared by the models with the same geometry
                for state in states:
                    state.consume(loaded.batch, frames)
                done += len(loaded.batch.indices)
                if progress is not None:
                    progress(done, len(order))
        complete = True
    finally:
        written: list[Geometry] = []
        if cache is not None and shared_cache is not None:
            cache.leave()  # rank 0 commits the launch's entries once every rank is done
        elif cache is not None:
            written = cache.finish(complete)
    source = frame_source(read=cache is not None and bool(cache.stores), written=bool(written))
    return [replace(state.finish(order), frames=source) for state in states]


def frame_geometries(candidates: Sequence[Candidate], review_set: ReviewSet) -> list[Geometry]:
    """The geometries :func:`run` frames the review set in for these candidates, each once."""
    native = _native_size_for(candidates, review_set)
    return list(dict.fromkeys(_geometry_of(c.input, native) for c in candidates))


def _native_size_for(candidates: Sequence[Candidate], review_set: ReviewSet) -> tuple[int, int]:
    # Only a model that names no input size takes the review set's (which costs decoding its first image).
    return native_size(review_set) if any(min(c.input.size) <= 0 for c in candidates) else (0, 0)


def _geometry_of(spec: InputSpec, native: tuple[int, int]) -> Geometry:
    size = (int(spec.size[0]), int(spec.size[1])) if min(spec.size) > 0 else native
    return replace(spec, size=size).geometry


def frame_source(*, read: bool, written: bool) -> str:
    """How the frames were had: "decoded", "cache-read", "cache-written" or "cache-read+written"."""
    return {(False, False): "decoded", (True, False): "cache-read", (False, True): "cache-written",
            (True, True): "cache-read+written"}[(read, written)]


def keep_samples(
    candidate: Candidate, review_set: ReviewSet, sample_ids: Collection[str], options: EngineOptions
) -> dict[str, KeptSample]:
    """Images and maps of chosen samples (e.g. the baseline beside a candidate's gallery)."""
    position = {s.sample_id: i for i, s in enumerate(review_set.samples)}
    wanted = np.array(sorted(position[i] for i in sample_ids if i in position), dtype=np.int64)
    if not wanted.size:
        return {}
    keep_all = replace(options, gallery_size=len(wanted), fixed_per_class=0, workers=0)
    (model_run,) = run([candidate], review_set, keep_all, indices=wanted)
    return {k: v for k, v in model_run.records.kept.items() if k in set(sample_ids)}


def masked_partners(review_set: ReviewSet, seed: int) -> dict[str, np.ndarray]:
    """Seeded mixed-probe partners among the samples with a mask (-1 for a sample without one).

    A partner lends its scene with its object removed, which needs its mask; with every sample masked this
    equals ``probes.pair_partners`` over the whole set.
    """
    rows = np.flatnonzero(review_set.has_mask)
    if not rows.size:
        raise ReviewSetError("background probes need samples with masks; this review set has none",
                             path=review_set.root, field="mask")
    partners = probe_ops.pair_partners(review_set.labels()[rows], seed=seed)
    out = {}
    for variant, chosen in partners.items():
        full = np.full(review_set.size, -1, dtype=np.int64)
        full[rows] = rows[chosen]
        out[variant] = full
    return out


def gallery_keys(top_prob: np.ndarray, second_prob: np.ndarray, correct: np.ndarray) -> dict[str, np.ndarray]:
    """Per-sample ranking keys of each gallery kind (higher is shown first; NaN = not of that kind).

    easy: confidence of a right answer; failures: confidence of a wrong one; borderline: minus the margin
    between the top two probabilities (over all the model's outputs), float32 as the records keep them.
    """
    top = np.asarray(top_prob, dtype=np.float32)
    conf = top.astype(np.float64)
    margin = (top - np.asarray(second_prob, dtype=np.float32)).astype(np.float64)
    return {"easy": np.where(correct, conf, np.nan), "borderline": -margin,
            "failures": np.where(correct, np.nan, conf)}


def select_gallery(records: Records, size: int) -> Gallery:
    """The ``size`` highest-keyed samples of each kind, ties to the earlier sample (rows in review-set order)."""
    keys = gallery_keys(records.confidence.astype(np.float32), records.runner_up, records.correct)

    def top(kind: str) -> tuple[str, ...]:
        key = keys[kind]
        rows = np.flatnonzero(~np.isnan(key))
        best = rows[np.lexsort((rows, -key[rows]))][:size]
        return tuple(records.ids[int(i)] for i in best)

    return Gallery(easy=top("easy"), borderline=top("borderline"), failures=top("failures"))


def merge_runs(parts: Sequence[ModelRun], review_set: ReviewSet, options: EngineOptions) -> ModelRun:
    """One model's runs over consecutive shards of the review set, joined as if run in one process."""
    records = Records.concat([part.records for part in parts])
    fixed = fixed_ids(review_set, options.fixed_per_class, options.fixed_total)
    run = _finish_gallery(records, options.gallery_size, fixed, max(part.seconds for part in parts))
    return replace(run, frames=parts[0].frames if parts else run.frames)


def _finish_gallery(records: Records, size: int, fixed: frozenset[str], seconds: float) -> ModelRun:
    gallery = select_gallery(records, size)
    shown = set(gallery.easy) | set(gallery.borderline) | set(gallery.failures) | fixed
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


@dataclass(frozen=True)
class _Outputs:
    """One batch's outputs over ALL the model's logits, reduced to what the records keep."""

    probs: np.ndarray  # float32 [B, C]: the review set's classes of the full softmax
    pred: np.ndarray  # int64 [B]: review-set index of the argmax over all outputs, OUTSIDE if none
    pred_output: np.ndarray  # int64 [B]: the argmax as the model's output index
    top_prob: np.ndarray  # float32 [B]
    second_prob: np.ndarray  # float32 [B]
    outside_sq: np.ndarray  # float64 [B]


class _ModelState:
    """Running state of one model over the batches: per-sample rows and the kept samples."""

    def __init__(
        self, candidate: Candidate, review_set: ReviewSet, options: EngineOptions, device: torch.device,
        partners: dict[str, np.ndarray], fixed: frozenset[str], native: tuple[int, int],
    ) -> None:
        self.candidate = candidate.aligned_to(review_set.classes)
        self.review_set = review_set
        self.options = options
        self.device = device
        self.partners = partners
        # Eval mode for every forward (explained or not): BatchNorm must not use batch statistics.
        self.model = self.candidate.model.to(device).eval()
        # On CUDA, channels_last is the layout cuDNN's convolutions (bf16 above all) run fastest in; the
        # randomised copies below are copies of this model, so they share it. Only the layout changes.
        self.channels_last = device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.bf16 = options.precision == "bf16"
        self.randomised = (
            probe_ops.randomised_copies(self.model, self.candidate.target_layer, self.candidate.outputs,
                                        seed=options.seed)
            if "sanity" in options.probes else None
        )
        spec = self.candidate.input
        self.geometry = _geometry_of(spec, native)
        self.size: tuple[int, int] = self.geometry.size
        self.mean = torch.tensor(spec.mean, device=device)[None, :, None, None]
        self.std = torch.tensor(spec.std, device=device)[None, :, None, None]
        width = len(self.candidate.outputs)
        order = self.candidate.logit_order or tuple(range(len(self.candidate.classes)))
        self.order = torch.tensor(order, dtype=torch.long)
        self.outside = torch.ones(width, dtype=torch.bool)
        self.outside[self.order] = False
        # Model output index -> review-set index (OUTSIDE for outputs the review set does not hold).
        self.to_review = torch.full((width,), OUTSIDE, dtype=torch.long)
        self.to_review[self.order] = torch.arange(len(order))
        self.check = OutputCheck(path=self.candidate.path, width=width)
        self.rows: dict[str, list[np.ndarray]] = {}
        self.gallery = _GallerySelector(options.gallery_size, fixed, self.candidate.outputs)
        self.seconds = 0.0

    def normalise(self, images: Tensor) -> Tensor:
        inputs = (images - self.mean) / self.std
        return inputs.contiguous(memory_format=torch.channels_last) if self.channels_last else inputs

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The forwards (explained or not) in bf16 where asked; fp32 otherwise."""
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            yield

    def consume(self, batch: Batch, frames: Frames) -> None:
        started = time.perf_counter()
        frame = frames.get(self.geometry)
        with self.check.guarded(self.model, len(batch.indices)), self.autocast():
            explained = explain(self.model, self.candidate.target_layer, self.normalise(frame.images))
        # bf16 forwards: probabilities (float64 softmax) and maps are computed in float32 from here on.
        logits, small_cam = explained.logits.float(), explained.cam.float()
        outputs = self._outputs(self.check.check_finite(logits, batch.sample_ids), explained.target)
        cam = upsample(small_cam, self.size)
        local = localise(cam, frame.masks, frame.void, frame.has_mask)
        for name in ("probs", "pred", "top_prob", "second_prob", "outside_sq"):
            self._append(name, getattr(outputs, name))
        self._append("has_mask", batch.has_mask)
        for name in ("energy", "mask_area", "pointing_hit", "rank_accuracy"):
            self._append(name, getattr(local, name).numpy())
        variants = self._variants(frame, frames) if frames.partners and batch.has_mask.any() else {}
        with self.autocast():
            variant_preds = {name: self._predict(x, batch, name) for name, x in variants.items()}
        if self.partners:
            for name in PROBE_VARIANTS:
                self._append(f"probe.{name}", _scatter(variant_preds.get(name), batch.has_mask))
        if self.randomised is not None:
            with self.autocast():  # the copies run at the model's precision; their maps come back float32
                self._append("sanity", self._sanity(frame.images, small_cam, explained.target, batch))
        self.gallery.offer(batch, outputs, cam, frame, variants, variant_preds)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - started

    def _outputs(self, logits: Tensor, target: Tensor) -> _Outputs:
        """``target``: the argmax over all logits that Grad-CAM explained (the prediction, ties to the first)."""
        full = torch.softmax(logits.double(), dim=1).cpu()
        pred_output = target.cpu()
        top2 = full.topk(min(2, full.shape[1]), dim=1).values
        outside = full[:, self.outside]
        return _Outputs(
            probs=full[:, self.order].float().numpy(),
            pred=self.to_review[pred_output].numpy().astype(np.int64),
            pred_output=pred_output.numpy().astype(np.int64),
            top_prob=full.gather(1, pred_output[:, None])[:, 0].float().numpy(),
            second_prob=top2[:, -1].float().numpy(),
            outside_sq=(outside * outside).sum(1).numpy(),
        )

    def _variants(self, frame: Frame, frames: Frames) -> dict[str, Tensor]:
        """Probe variants of the batch's masked rows (partners are framed like the batch)."""
        rows = torch.nonzero(frame.has_mask).flatten()
        images, masks = frame.images[rows], frame.masks[rows]
        out = {"only_fg": probe_ops.only_fg(images, masks), "only_bg": probe_ops.remove_object(images, masks)}
        for name in ("mixed_same", "mixed_rand"):
            other = frames.get(self.geometry, partner=name)
            scene = probe_ops.remove_object(other.images, other.masks)
            out[name] = probe_ops.paste_object(images, masks, scene)
        return {name: out[name] for name in PROBE_VARIANTS}

    @torch.no_grad()
    def _predict(self, images: Tensor, batch: Batch, variant: str) -> np.ndarray:
        rows = np.flatnonzero(batch.has_mask)
        with self.check.guarded(self.model, len(rows), variant):
            logits = self.model(self.normalise(images))
        logits = self.check.check_finite(logits, [batch.sample_ids[i] for i in rows], variant)
        return self.to_review[logits.argmax(1).cpu()].numpy().astype(np.int64)

    def _sanity(self, images: Tensor, cam: Tensor, target: Tensor, batch: Batch) -> np.ndarray:
        # Compared at the target layer's own resolution: upsampling adds no information, only smooth
        # interpolated pixels that inflate rank correlation (and it costs as much as a forward at 224²).
        # One explained forward per randomised copy: [B, copies] similarities, same class as the model's map.
        assert self.randomised is not None
        inputs, columns = self.normalise(images), []
        for copy in self.randomised:
            guard = self.check.guarded(copy.model, len(batch.indices), "randomised-copy")
            with guard, copy.drawn_for(target, batch.sample_ids):
                randomised = explain(copy.model, self.candidate.target_layer, inputs, target=target)
            columns.append(probe_ops.spearman_rows(cam, randomised.cam))
        return torch.stack(columns, dim=1).double().cpu().numpy()

    def _append(self, name: str, values: np.ndarray) -> None:
        self.rows.setdefault(name, []).append(np.asarray(values))

    def finish(self, order: np.ndarray) -> ModelRun:
        column = {name: np.concatenate(parts) for name, parts in self.rows.items()}
        if not self.rows:  # no rows at all (e.g. a torchrun rank beyond the review set's size)
            empty = np.zeros(0)
            column = {"probs": np.zeros((0, len(self.review_set.classes))), "energy": empty, "mask_area": empty,
                      "pointing_hit": empty, "rank_accuracy": empty, "pred": np.zeros(0, dtype=np.int64),
                      "top_prob": empty, "second_prob": empty, "outside_sq": empty,
                      "has_mask": np.zeros(0, dtype=bool)}
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
            pred=column["pred"].astype(np.int64),
            top_prob=column["top_prob"].astype(np.float32),
            second_prob=column["second_prob"].astype(np.float32),
            outside_sq=column["outside_sq"].astype(np.float64),
            has_mask=column["has_mask"].astype(bool),
        )
        return _finish_gallery(records, self.options.gallery_size, self.gallery.fixed, self.seconds)


def _scatter(values: np.ndarray | None, has_mask: np.ndarray) -> np.ndarray:
    """Per-row variant predictions: the masked rows' values, NO_VARIANT for rows without a mask."""
    out = np.full(has_mask.shape, NO_VARIANT, dtype=np.int64)
    if values is not None:
        out[has_mask] = values
    return out


@dataclass(order=True)
class _Entry:
    key: tuple[float, int]  # (gallery key, -position)
    sample_id: str = field(compare=False)


class _GallerySelector:
    """Bounded streaming choice of gallery samples: easy, borderline and failures, plus fixed ids."""

    def __init__(self, size: int, fixed: frozenset[str], output_names: Sequence[str] = ()) -> None:
        self.size = size
        self.fixed = fixed
        self.output_names = tuple(output_names)
        self.heaps: dict[str, list[_Entry]] = {"easy": [], "borderline": [], "failures": []}
        self.kept: dict[str, KeptSample] = {}

    def offer(
        self, batch: Batch, outputs: _Outputs, cam: Tensor, frame: Frame, variants: dict[str, Tensor],
        variant_preds: dict[str, np.ndarray],
    ) -> None:
        keys = gallery_keys(outputs.top_prob, outputs.second_prob, outputs.pred == batch.labels)
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
        self, row: int, sub: int | None, batch: Batch, outputs: _Outputs, cam: Tensor, frame: Frame,
        variants: dict[str, Tensor], variant_preds: dict[str, np.ndarray],
    ) -> KeptSample:
        output = int(outputs.pred_output[row])
        return KeptSample(
            sample_id=batch.sample_ids[row],
            image=_to_uint8(frame.images[row]),
            mask=frame.masks[row].cpu().numpy().astype(bool),
            cam=cam[row].float().cpu().numpy(),
            label=int(batch.labels[row]),
            pred=int(outputs.pred[row]),
            confidence=float(outputs.top_prob[row]),
            variants={} if sub is None else {name: _to_uint8(x[sub]) for name, x in variants.items()},
            variant_preds={} if sub is None else {name: int(p[sub]) for name, p in variant_preds.items()},
            pred_name=self.output_names[output] if output < len(self.output_names) else str(output),
            has_mask=bool(batch.has_mask[row]),
        )


def _to_uint8(image: Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()

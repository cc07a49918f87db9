"""One model's running state over the batches: the explained forward, probe variants, sanity copies, rows."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch
from torch import Tensor

from gate.engine import probes as probe_ops
from gate.engine import sanity, swaps, trunk
from gate.engine.atlas import AtlasSums
from gate.engine.gallery import GallerySelector, finish_gallery, lift_of
from gate.engine.gradcam import explain, upsample
from gate.engine.localisation import localise
from gate.engine.model_faults import OutputCheck
from gate.engine.runs import BatchOutputs, EngineOptions, ModelRun
from gate.inputs.batches import Batch, Frame, Frames
from gate.inputs.candidate import Candidate
from gate.inputs.model_input import InputSpec
from gate.inputs.preprocess import Geometry
from gate.inputs.review_set import ReviewSet
from gate.records import NO_VARIANT, OUTSIDE, PROBE_VARIANTS, SWAP_PARTNER, SWAP_VARIANTS, Records


def geometry_of(spec: InputSpec, native: tuple[int, int]) -> Geometry:
    size = (int(spec.size[0]), int(spec.size[1])) if min(spec.size) > 0 else native
    return replace(spec, size=size).geometry


class ModelState:
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
        self.background = "background" in options.probes
        self.swap_probes = tuple(name for name in SWAP_VARIANTS if name in options.probes)
        # Eval mode for every forward (explained or not): BatchNorm must not use batch statistics.
        self.model = self.candidate.model.to(device).eval()
        # On CUDA, channels_last is the layout cuDNN's convolutions (bf16 above all) run fastest in; the
        # randomised copies below are copies of this model, so they share it. Only the layout changes.
        self.channels_last = device.type == "cuda"
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.bf16 = options.precision == "bf16"
        self.check = OutputCheck(path=self.candidate.path, width=len(self.candidate.outputs))
        self.sanity = (
            sanity.SanityProbe(self.model, self.candidate.target_layer, self.candidate.outputs, seed=options.seed,
                               shared=options.shared_trunk, check=self.check)
            if "sanity" in options.probes else None
        )
        spec = self.candidate.input
        self.geometry = geometry_of(spec, native)
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
        self.rows: dict[str, list[np.ndarray]] = {}
        self.gallery = GallerySelector(options.gallery_size, fixed, self.candidate.outputs)
        self.atlas = AtlasSums(len(review_set.classes), self.size)
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
        block = self.sanity.block if self.sanity is not None else None
        with self.check.guarded(self.model, len(batch.indices)), self.autocast(), \
                trunk.kept_entry(self.model, block) as entry:
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
        self.atlas.add(cam, outputs.pred, frame.masks, frame.has_mask)
        variants = self._variants(frame, frames) if self.background and batch.has_mask.any() else {}
        with self.autocast():
            variant_preds = {name: self._predict(x, batch, name) for name, x in variants.items()}
        if self.background:
            for name in PROBE_VARIANTS:
                self._append(f"probe.{name}", scatter_rows(variant_preds.get(name), batch.has_mask))
        swapped, swapped_preds = self._swapped(frame, frames, batch)
        if self.sanity is not None:
            with self.autocast():  # the copies run at the model's precision; their maps come back float32
                similarities = self.sanity.similarities(self.normalise(frame.images), entry.get(), explained,
                                                        small_cam, batch)
            self._append("sanity", similarities)
        self.gallery.offer(batch, outputs, cam, frame, variants, variant_preds,
                           lift=lift_of(local.energy.numpy(), local.mask_area.numpy()))
        self.gallery.add_swaps(batch, swapped, swapped_preds)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds += time.perf_counter() - started

    def _outputs(self, logits: Tensor, target: Tensor) -> BatchOutputs:
        """``target``: the argmax over all logits that Grad-CAM explained (the prediction, ties to the first)."""
        full = torch.softmax(logits.double(), dim=1).cpu()
        pred_output = target.cpu()
        top2 = full.topk(min(2, full.shape[1]), dim=1).values
        outside = full[:, self.outside]
        return BatchOutputs(
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

    def _swapped(self, frame: Frame, frames: Frames, batch: Batch) -> tuple[dict[str, Tensor], dict[str, np.ndarray]]:
        """Swap-probe variants of every row (one forward each) and their predictions, appended as rows."""
        if not self.swap_probes:
            return {}, {}
        every = np.ones(len(batch.indices), dtype=bool)
        partner = frames.get(self.geometry, partner=SWAP_PARTNER).images
        swapped = {name: swaps.swap(name, frame.images, partner) for name in self.swap_probes}
        with self.autocast():
            preds = {name: self._predict(x, batch, name, every) for name, x in swapped.items()}
        for name, values in preds.items():
            self._append(f"probe.{name}", values)
        return swapped, preds

    @torch.no_grad()
    def _predict(self, images: Tensor, batch: Batch, variant: str, rows_of: np.ndarray | None = None) -> np.ndarray:
        """Predictions (argmax over all outputs, as review-set indices) on the rows ``rows_of`` (default: masked)."""
        rows = np.flatnonzero(batch.has_mask if rows_of is None else rows_of)
        with self.check.guarded(self.model, len(rows), variant):
            logits = self.model(self.normalise(images))
        logits = self.check.check_finite(logits, [batch.sample_ids[i] for i in rows], variant)
        return self.to_review[logits.argmax(1).cpu()].numpy().astype(np.int64)

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
            probe_preds={v: column[f"probe.{v}"] for v in (*PROBE_VARIANTS, *SWAP_VARIANTS) if f"probe.{v}" in column},
            pairings={v: p[order] for v, p in self.partners.items()},
            sanity_similarity=column.get("sanity"),
            kept=self.gallery.kept,
            pred=column["pred"].astype(np.int64),
            top_prob=column["top_prob"].astype(np.float32),
            second_prob=column["second_prob"].astype(np.float32),
            outside_sq=column["outside_sq"].astype(np.float64),
            has_mask=column["has_mask"].astype(bool),
            atlas=self.atlas.atlas(),
        )
        run = finish_gallery(records, self.options.gallery_size, self.gallery.fixed, self.seconds)
        return replace(run, sanity_trunk=self.sanity.trunk if self.sanity is not None else "")


def scatter_rows(values: np.ndarray | None, has_mask: np.ndarray) -> np.ndarray:
    """Per-row variant predictions: the masked rows' values, NO_VARIANT for rows without a mask."""
    out = np.full(has_mask.shape, NO_VARIANT, dtype=np.int64)
    if values is not None:
        out[has_mask] = values
    return out

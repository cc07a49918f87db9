"""The engine: candidates × review set → per-sample records.

The review set is decoded once per batch and every model (candidates and the
baseline) runs on the same batch: each model brings the decoded uint8 images into
its own frame (its resize, crop and interpolation; models that share them share
the framed batch), then one forward gives logits and Grad-CAM; each enabled
background variant adds exactly one more forward; the sanity probe adds, per randomised copy
(``sanity.SANITY_COPIES``), an explained run of the copy's re-initialised top block and head from the
activation the model's forward kept (gate.engine.trunk; the whole forward where the graph does not split).
Only per-sample numbers are kept, plus a bounded set of samples (images and maps) for the report's galleries.

The prediction is the argmax over ALL the model's outputs and probabilities come
from its full softmax, also when the review set covers only some of its classes.
Samples without a mask are scored for metrics; alignment and background probes
use the masked ones. A model whose forward raises, returns anything but finite
[B, outputs] logits is an input error naming the candidate file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from gate.engine import probes as probe_ops
from gate.engine import swaps
from gate.engine.gallery import finish_gallery, fixed_ids, gallery_keys, select_gallery
from gate.engine.model_state import ModelState, geometry_of
from gate.engine.runs import FIXED_TOTAL, EngineOptions, ModelRun, Progress, resolve_device
from gate.errors import ReviewSetError, UsageError
from gate.inputs import frame_cache
from gate.inputs.batches import Frames, loaded_batches, native_size
from gate.inputs.candidate import Candidate
from gate.inputs.preprocess import Geometry
from gate.inputs.review_set import ReviewSet
from gate.records import SWAP_PARTNER, SWAP_VARIANTS, KeptSample, Records
from gate.settings import PRECISIONS

# The engine's face: callers use these through ``gate.engine.core``.
__all__ = ["FIXED_TOTAL", "PRECISIONS", "EngineOptions", "ModelRun", "Progress", "fixed_ids", "frame_geometries",
           "frame_source", "gallery_keys", "keep_samples", "masked_partners", "merge_runs", "probe_partners",
           "resolve_device", "run", "select_gallery"]


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
    partners = probe_partners(review_set, options)
    if options.precision not in PRECISIONS:
        raise UsageError(f"unknown precision {options.precision!r} (fp32 or bf16)", field="--precision")
    fixed = fixed_ids(review_set, options.fixed_per_class, options.fixed_total)
    native = _native_size_for(candidates, review_set)
    states = [ModelState(c, review_set, options, device, partners, fixed, native) for c in candidates]
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
    return list(dict.fromkeys(geometry_of(c.input, native) for c in candidates))


def _native_size_for(candidates: Sequence[Candidate], review_set: ReviewSet) -> tuple[int, int]:
    # Only a model that names no input size takes the review set's (which costs decoding its first image).
    return native_size(review_set) if any(min(c.input.size) <= 0 for c in candidates) else (0, 0)


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


def probe_partners(review_set: ReviewSet, options: EngineOptions) -> dict[str, np.ndarray]:
    """Every enabled probe's partners: the background probes' among masked samples, the swap probes' among all."""
    partners = masked_partners(review_set, options.seed) if "background" in options.probes else {}
    if options.probes & set(SWAP_VARIANTS):
        partners[SWAP_PARTNER] = swaps.swap_partners(review_set.labels(), seed=options.seed)
    return partners


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


def merge_runs(parts: Sequence[ModelRun], review_set: ReviewSet, options: EngineOptions) -> ModelRun:
    """One model's runs over consecutive shards of the review set, joined as if run in one process."""
    records = Records.concat([part.records for part in parts])
    fixed = fixed_ids(review_set, options.fixed_per_class, options.fixed_total)
    run = finish_gallery(records, options.gallery_size, fixed, max(part.seconds for part in parts))
    return replace(run, frames=parts[0].frames if parts else run.frames,
                   sanity_trunk=parts[0].sanity_trunk if parts else run.sanity_trunk)

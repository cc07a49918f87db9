"""``run_gate``: candidates + review set + policy → a GateResult (no printing, no files).

The one place that strings the stages together in the direction of the data:
load → engine → scores → comparison → verdict. Outputs and tracking are the
CLI's next calls, on the returned result. Under torchrun, ``run_gate_sharded``
runs the engine on this rank's block and joins the blocks on rank 0 before the
same scoring and verdict.
"""

from __future__ import annotations

import math
import os
import platform
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from gate.decide import policy as policy_io
from gate.decide import watch
from gate.engine import core as engine
from gate.engine import distributed
from gate.engine.distributed import Shard
from gate.engine.layers import expected_layout
from gate.errors import CandidateError, GateError, PolicyError, UsageError
from gate.inputs import candidate as candidate_io
from gate.inputs import frame_cache, model_sources, safe_import
from gate.inputs.candidate import Candidate
from gate.inputs.review_set import ReviewSet, open_review_set, verify
from gate.inputs.source import read_source
from gate.metrics.registry import compute_scores
from gate.records import Records
from gate.result import (
    COMPARISON_CONFIDENCE,
    CandidateInfo,
    CandidateResult,
    GateResult,
    PolicyInfo,
    ReviewSetInfo,
    SourceInfo,
)
from gate.settings import DEFAULTS


@dataclass(frozen=True)
class LoadOptions:
    """How to read checkpoints that lack fields (bare state_dicts) or are pickles."""

    arch: str | None = None
    classes: tuple[str, ...] | None = None
    input_size: tuple[int, int] | None = None  # (H, W); default: the file's, else the review set's own size
    target_layer: str | None = None
    trust_pickle: bool = False
    resize: int | None = None  # shorter side before the centre crop to input_size (torchvision eval)
    interpolation: str | None = None  # bilinear | bicubic | nearest
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    max_input_side: int = candidate_io.DEFAULT_MAX_INPUT_SIDE  # --max-input-side


DEFAULT_MAX_CHECKPOINT_MB = DEFAULTS.max_checkpoint_mb  # larger than any ViT-H checkpoint


@dataclass(frozen=True)
class GateRequest:
    """Everything one ``check`` or ``select`` call needs."""

    command: str
    candidates: tuple[Path | Candidate, ...]  # checkpoint files, or candidates already loaded (gate.api)
    policy: Path | policy_io.Policy
    baseline: Path | Candidate | None = None
    review_set: Path | ReviewSet | None = None  # None: the policy's
    allow_unpinned: bool = False
    allow_arch_modules: tuple[str, ...] = ()  # module prefixes whose import-path archs may be imported
    max_checkpoint_mb: float = DEFAULT_MAX_CHECKPOINT_MB
    engine: engine.EngineOptions = field(default_factory=engine.EngineOptions)
    load: LoadOptions = field(default_factory=LoadOptions)


@dataclass(frozen=True)
class _Prepared:
    """Everything loaded and checked before the engine runs."""

    request: GateRequest
    policy: policy_io.Policy
    review_set: ReviewSet
    options: engine.EngineOptions
    candidates: tuple[Candidate, ...]
    baseline: Candidate | None
    started: float
    loaded: float
    source: SourceInfo | None = None  # the commit gated

    @property
    def models(self) -> list[Candidate]:
        """What the engine runs: the candidates, then the baseline."""
        return [*self.candidates, *([self.baseline] if self.baseline else [])]


def run_gate(request: GateRequest, progress: engine.Progress | None = None) -> GateResult:
    """Load, run, score and decide; raise a GateError (with its exit code) on bad input."""
    prepared = _prepare(request, request.engine.device)
    runs = engine.run(prepared.models, prepared.review_set, prepared.options, progress)
    return _decide(prepared, runs)


def run_gate_sharded(
    request: GateRequest, shard: Shard, progress: engine.Progress | None = None
) -> GateResult | None:
    """Under torchrun: every rank runs its block of the review set; rank 0 joins the runs and decides.

    Returns the result on rank 0 and None on the other ranks. Bad input fails the same way on every rank,
    before any rank waits on another. An error in one rank's block (e.g. NaN outputs on its samples) is sent
    to rank 0 in place of its runs and raised there, so no rank waits for a block that will never come.
    """
    prepared = _prepare(request, distributed.device_for(shard, request.engine.device))
    block = shard.indices(prepared.review_set.size)
    shared = shard.launch if prepared.options.frame_cache else None  # the ranks fill the frame cache together
    try:
        mine: list[engine.ModelRun] | GateError = engine.run(
            prepared.models, prepared.review_set, prepared.options, progress, indices=block, shared_cache=shared)
    except GateError as exc:
        mine = exc
    except Exception as exc:  # any failure must still reach rank 0, as an internal error
        mine = GateError(f"rank {shard.rank}: {type(exc).__name__}: {exc}")
    gathered = distributed.gather(shard, mine)
    if gathered is None:
        return None
    failed = [part for part in gathered if isinstance(part, GateError)]
    if failed:
        _finish_shared_cache(prepared, shared, complete=False)
        raise failed[0]
    runs = [engine.merge_runs(parts, prepared.review_set, prepared.options)
            for parts in distributed.transpose(gathered)]
    if _finish_shared_cache(prepared, shared, complete=True):
        runs = [replace(run, frames=engine.frame_source(read=run.frames == "cache-read", written=True))
                for run in runs]
    return _decide(prepared, runs)


def _finish_shared_cache(prepared: _Prepared, shared: str | None, *, complete: bool) -> bool:
    """Rank 0, every rank done: commit the frame-cache entries the ranks wrote (or drop them); True if any."""
    if shared is None or prepared.options.frame_cache is None:
        return False
    root, review_set = Path(prepared.options.frame_cache), prepared.review_set
    geometries = engine.frame_geometries(prepared.models, review_set)
    if not complete:
        frame_cache.discard_shared(root, review_set.digest, geometries, shared)
        return False
    return bool(frame_cache.commit_shared(root, review_set.digest, review_set.size, geometries, shared))


def _prepare(request: GateRequest, device: str) -> _Prepared:
    started = time.perf_counter()
    # First: a malformed $GITHUB_SHA is bad input, refused before anything is loaded. An in-memory model's
    # "path" is its name: its source is the working directory's repository.
    first = request.candidates[0] if request.candidates else None
    source = read_source(Path(first.path) if isinstance(first, Candidate) else first, os.environ)
    policy = request.policy if isinstance(request.policy, policy_io.Policy) else policy_io.load(request.policy)
    review_set = _open_review_set(policy, request)
    policy_io.check_classes(policy, review_set.classes)
    options = replace(request.engine, probes=policy.probes, device=device)
    # A checkpoint names its arch; only the trusted side (CLI, policy) widens where import paths may come from.
    allowed = (*request.allow_arch_modules, *policy.model.candidate.allow_modules)
    safe_import.refuse_prefixes(request.allow_arch_modules)  # never the standard library or an installed package
    with safe_import.allowing(allowed):
        candidates = distinct_names([_load(path, request, policy, review_set) for path in request.candidates])
        baseline = _load(request.baseline, request, policy, review_set) if request.baseline is not None else None
    if baseline is not None:
        _check_baseline(baseline, candidates)
    if policy.needs_baseline and baseline is None:
        raise PolicyError("the policy has vs_baseline rules; give --baseline", path=policy.path, field="rules")
    return _Prepared(request=request, policy=policy, review_set=review_set, options=options,
                     candidates=tuple(candidates), baseline=baseline, started=started, loaded=time.perf_counter(),
                     source=source)


def _decide(prepared: _Prepared, runs: Sequence[engine.ModelRun]) -> GateResult:
    ran = time.perf_counter()
    policy, review_set, options, baseline = prepared.policy, prepared.review_set, prepared.options, prepared.baseline
    score_fn = partial(compute_scores, probes=policy.probes)
    baseline_run = runs[-1] if baseline is not None else None
    results = tuple(
        _judge(c, r, policy, score_fn, baseline_run.records if baseline_run else None, options.seed)
        for c, r in zip(prepared.candidates, runs[: len(prepared.candidates)], strict=True)
    )
    baseline_result = None
    if baseline is not None and baseline_run is not None:
        baseline_result = _baseline_result(baseline, baseline_run, results, review_set, policy, score_fn, options)
    rank_by = policy.model.select.rank_by
    return GateResult(
        command=prepared.request.command,
        policy=PolicyInfo(name=policy.name, path=str(policy.path), sha256=policy.sha256),
        review_set=ReviewSetInfo(name=review_set.name, version=review_set.version, path=str(review_set.root),
                                 digest=review_set.digest, size=review_set.size, classes=review_set.classes,
                                 pinned=_is_pinned(review_set.digest, policy.model.review_set.digest)),
        candidates=results,
        baseline=baseline_result,
        selected=select_winner(results, rank_by),
        rank_by=tuple(rank_by),
        ranking=tuple(r.candidate.name for r in ranking(results, rank_by)),
        environment={**environment(options.device), "batch_size": str(options.batch_size), "seed": str(options.seed),
                     "precision": options.precision, "workers": str(options.workers),
                     "frames": runs[0].frames if runs else "decoded", **_sanity_trunk(prepared, runs)},
        timings={"load_s": prepared.loaded - prepared.started, "engine_s": ran - prepared.loaded,
                 "total_s": time.perf_counter() - prepared.started},
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        source=prepared.source,
    )


def _sanity_trunk(prepared: _Prepared, runs: Sequence[engine.ModelRun]) -> dict[str, str]:
    """How each model's sanity copies ran ("NAME: shared trunk from BLOCK" or "NAME: full forward: WHY")."""
    ran = [f"{model.name}: {run.sanity_trunk}" for model, run in zip(prepared.models, runs, strict=False)
           if run.sanity_trunk]
    return {"sanity_trunk": "; ".join(ran)} if ran else {}


def _open_review_set(policy: policy_io.Policy, request: GateRequest) -> ReviewSet:
    pinned = policy.model.review_set.digest
    if pinned is None and not request.allow_unpinned:
        raise PolicyError("no digest pins the review set; add it (`xgate review-set verify DIR` prints it) "
                          "or pass --allow-unpinned", path=policy.path, field="review_set.digest")
    expected = None if request.allow_unpinned else pinned
    if isinstance(request.review_set, ReviewSet):  # opened by the caller: its files must still be the pinned ones
        verify(request.review_set.root, expected)
        return request.review_set
    return open_review_set(request.review_set or policy.review_set_path, expected_digest=expected)


def _is_pinned(digest: str, pinned: str | None) -> bool:
    """True when the review set read is the one the policy pins (with --allow-unpinned it may not be)."""
    return pinned is not None and digest.removeprefix("sha256:") == pinned.removeprefix("sha256:")


def _load(path: Path | Candidate, request: GateRequest, policy: policy_io.Policy, review_set: ReviewSet) -> Candidate:
    if isinstance(path, Candidate):
        return path.aligned_to(review_set.classes)
    check_checkpoint_file(path, request.max_checkpoint_mb)
    layer = request.load.target_layer
    if layer is None and policy.model.explain.target_layer != "auto":
        layer = policy.model.explain.target_layer
    loaded = candidate_io.load(path, arch=request.load.arch, classes=request.load.classes,
                               input_size=request.load.input_size, target_layer=layer,
                               trust_pickle=request.load.trust_pickle, resize=request.load.resize,
                               interpolation=request.load.interpolation, mean=request.load.mean,
                               std=request.load.std, max_input_side=request.load.max_input_side)
    return loaded.aligned_to(review_set.classes)


def check_checkpoint_file(path: Path, max_mb: float) -> None:
    """A regular file no larger than ``max_mb`` (checked before reading: /dev/zero or a FIFO would never end),
    or a Hugging Face folder whose files are (gate.inputs.hf_folder.check_files)."""
    hub = model_sources.hub_id_error(path)
    if hub is not None:
        raise hub
    try:
        info = path.stat()
    except OSError as exc:
        raise CandidateError(f"cannot read checkpoint: {exc.strerror or exc}", path=path) from None
    if stat.S_ISDIR(info.st_mode):
        from gate.inputs import hf_folder

        hf_folder.check_files(path, max_mb)
        return
    if not stat.S_ISREG(info.st_mode):
        raise CandidateError("checkpoint is not a regular file", path=path)
    if info.st_size > max_mb * 1024 * 1024:
        raise CandidateError(f"checkpoint is {info.st_size / 2**20:.0f} MB, over the {max_mb:g} MB limit "
                             "(--max-checkpoint-mb)", path=path, field="size")


def distinct_names(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Refuse a file given twice; where file names collide (``a/model.pt b/model.pt``), name by the path given.

    Names key the ranking, the report and the MLflow runs, so two candidates must never share one.
    """
    seen: dict[Path, str] = {}
    for cand in candidates:
        key = Path(cand.path).resolve()
        if key in seen:
            raise UsageError(f"candidate given twice (also as {seen[key]})", path=cand.path)
        seen[key] = cand.path
    counts: dict[str, int] = {}
    for cand in candidates:
        counts[cand.name] = counts.get(cand.name, 0) + 1
    return [replace(c, label=c.path) if counts[c.name] > 1 else c for c in candidates]


def _check_baseline(baseline: Candidate, candidates: Sequence[Candidate]) -> None:
    for cand in candidates:
        if baseline.input.size != cand.input.size:
            raise CandidateError(f"baseline input size {list(baseline.input.size)} differs from candidate "
                                 f"{cand.name}'s {list(cand.input.size)}", path=baseline.path, field="input.size")


def _judge(
    cand: Candidate, model_run: engine.ModelRun, policy: policy_io.Policy,
    score_fn: Callable[[Records], dict[str, float]], baseline: Records | None, seed: int,
) -> CandidateResult:
    scores = score_fn(model_run.records)
    evidence = policy_io.Evidence(scores=scores, records=model_run.records, score_fn=score_fn,
                                  baseline=baseline, seed=seed)
    rules = policy_io.evaluate(policy, evidence)
    comparison = None
    if evidence.comparison is not None:
        # The vs_baseline rules' intervals are already in it; the accuracy difference's is always reported.
        evidence.comparison.interval_for("accuracy", confidence=COMPARISON_CONFIDENCE, seed=seed)
        gated = {rule.score for rule in policy.model.rules if rule.vs_baseline is not None}
        warned = watch.warnings(evidence.comparison, gated, confidence=COMPARISON_CONFIDENCE, seed=seed)
        comparison = replace(evidence.comparison.result(), warnings=warned)
        scores = {**scores, **{k: v for k, v in comparison.deltas.items() if math.isfinite(v)}}
    return CandidateResult(candidate=info(cand), scores=scores, rules=rules, records=model_run.records,
                           gallery=model_run.gallery, comparison=comparison,
                           timings={"engine_s": model_run.seconds})


def _baseline_result(
    baseline: Candidate, model_run: engine.ModelRun, results: Sequence[CandidateResult], review_set: ReviewSet,
    policy: policy_io.Policy, score_fn: Callable[[Records], dict[str, float]], options: engine.EngineOptions,
) -> CandidateResult:
    # The baseline is shown beside each candidate's gallery: keep its maps of exactly those samples.
    wanted = {i for r in results for kind in vars(r.gallery).values() for i in kind}
    wanted |= set(model_run.records.kept)
    kept = engine.keep_samples(baseline, review_set, wanted, options)
    records = replace(model_run.records, kept={**model_run.records.kept, **kept})
    return CandidateResult(candidate=info(baseline), scores=score_fn(records), rules=(), records=records,
                           gallery=model_run.gallery, timings={"engine_s": model_run.seconds})


def info(cand: Candidate) -> CandidateInfo:
    """The identifying fields of a candidate."""
    return CandidateInfo(path=cand.path, name=cand.name, sha256=cand.sha256, arch=cand.arch,
                         target_layer=cand.target_layer, meta=dict(cand.meta),
                         target_layout=expected_layout(cand.model, cand.target_layer), model_source=cand.source,
                         input={**cand.input.to_json(), "pipeline": cand.input.pipeline, "from": cand.input_origin})


def select_winner(results: Sequence[CandidateResult], rank_by: Sequence[str]) -> str | None:
    """The best passing candidate by ``rank_by`` (ties broken by the next score, then by name)."""
    passing = [r for r in results if r.passed]
    if not passing:
        return None
    best = min(passing, key=lambda r: policy_io.rank_key(r.scores, rank_by, r.candidate.name))
    return best.candidate.name


def ranking(results: Sequence[CandidateResult], rank_by: Sequence[str]) -> list[CandidateResult]:
    """Passing candidates first in rank order, then the rejected ones in rank order."""
    return sorted(results, key=lambda r: (not r.passed, policy_io.rank_key(r.scores, rank_by, r.candidate.name)))


def environment(device: str) -> dict[str, str]:
    """Versions and device, for the result and the report."""
    import torch
    import torchvision

    import gate

    resolved = engine.resolve_device(device)
    name = torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else platform.processor() or "cpu"
    return {"xgate": gate.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "platform": platform.platform(), "device": str(resolved),
            "device_name": name}

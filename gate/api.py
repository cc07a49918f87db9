"""The Python API: the gate the CLI runs, for notebooks and training scripts (docs/python.md).

``check`` and ``select`` take a model as a checkpoint path, a loaded ``Candidate`` or an ``nn.Module`` in
memory; a policy as a path, a dict or a ``Policy``; a review set as a path or an opened ``ReviewSet``.
They print nothing, write nothing and raise the typed errors of ``gate.errors`` (each with its exit code).
``explain`` and the alignment functions score maps people compute themselves, with the engine's definitions.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gate.decide import policy as policy_io
from gate.engine import distributed, gradcam
from gate.engine.core import EngineOptions, Progress
from gate.engine.layers import find_layer
from gate.engine.localisation import localise
from gate.errors import CandidateError, UsageError
from gate.inputs.archs import default_target_layer
from gate.inputs.candidate import Candidate
from gate.inputs.model_input import InputSpec
from gate.inputs.review_set import ReviewSet
from gate.result import GateResult
from gate.run import GateRequest, LoadOptions, run_gate, run_gate_sharded
from gate.settings import DEFAULTS, Settings, auto_workers

Model = str | Path | Candidate | nn.Module
PolicyLike = str | Path | Mapping[str, Any] | policy_io.Policy
ReviewSetLike = str | Path | ReviewSet | None
DICT_POLICY = Path("<policy>")  # how errors name a policy given as a dict (relative paths: from the working dir)


def check(
    model: Model,
    policy: PolicyLike,
    review_set: ReviewSetLike = None,
    *,
    classes: Sequence[str] | None = None,
    input: InputSpec | None = None,  # the name the checkpoint format gives it
    baseline: Model | None = None,
    name: str = "model",
    settings: Settings | None = None,
    progress: Progress | None = None,
    **overrides: Any,
) -> GateResult:
    """Gate one model against a policy; the result's ``passed`` is the verdict.

    ``review_set`` None means the policy's own. An ``nn.Module`` needs ``classes`` (its output names, in logit
    order) and ``input`` (how images are fed to it); it is gated in eval mode on ``device`` and given back in
    the mode it came in. ``overrides`` are ``gate.settings.Settings`` fields (``device="cpu"``,
    ``batch_size=64``, ``seed=1``, ...) over ``settings`` (default: the CLI's defaults).

    Example (an in-memory model, a policy as a dict, the review set opened once)::

        result = gate.check(model, {"review_set": {"path": "sets/v1", "digest": digest},
                                    "rules": [{"score": "accuracy", "min": 0.9}]},
                            classes=["cat", "dog"], input=gate.InputSpec(size=(224, 224)), device="cpu")
    """
    return _gate("check", [(name, model)], policy, review_set, classes=classes, input=input, baseline=baseline,
                 settings=settings, progress=progress, overrides=overrides)


def select(
    models: Mapping[str, Model] | Sequence[Model],
    policy: PolicyLike,
    review_set: ReviewSetLike = None,
    *,
    classes: Sequence[str] | None = None,
    input: InputSpec | None = None,
    baseline: Model | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
    **overrides: Any,
) -> GateResult:
    """Gate several models and pick the best that passes (``result.selected``; None when none passes).

    ``models`` maps display names to models, or lists checkpoint paths and candidates (named by their file
    names). Everything else is as for :func:`check`; ``classes`` and ``input`` apply to every in-memory model.
    """
    if isinstance(models, Mapping):
        named = list(models.items())
    else:
        named = [(m.name if isinstance(m, Candidate) else f"model{i}" if isinstance(m, nn.Module)
                  else Path(m).name, m) for i, m in enumerate(models)]
    return _gate("select", named, policy, review_set, classes=classes, input=input, baseline=baseline,
                 settings=settings, progress=progress, overrides=overrides)


def _gate(
    command: str, named: Sequence[tuple[str, Model]], policy: PolicyLike, review_set: ReviewSetLike, *,
    classes: Sequence[str] | None, input: InputSpec | None, baseline: Model | None,
    settings: Settings | None, progress: Progress | None, overrides: Mapping[str, Any],
) -> GateResult:
    chosen = with_overrides(settings, overrides)
    if not named:
        raise UsageError("no models to gate", field="models")
    request = gate_request(command, named, policy, review_set, baseline, chosen, classes=classes, input=input)
    modules = [m for m in (*(m for _, m in named), baseline) if isinstance(m, nn.Module)]
    modes = [m.training for m in modules]
    try:
        return run_gate(request, progress)
    finally:  # the engine put them in eval mode; a training loop goes on in the mode it had
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)


def run_sharded(request: GateRequest, device: str, progress: Progress | None) -> GateResult | None:
    """The CLI's gate: sharded over the ranks under torchrun (None on the ranks other than 0), else one process."""
    shard = distributed.start(device)
    if shard is None:
        return run_gate(request, progress)
    return run_gate_sharded(request, shard, progress if shard.is_main else None)


def with_overrides(settings: Settings | None, overrides: Mapping[str, Any]) -> Settings:
    """``settings`` (default: DEFAULTS) with ``overrides``, checked; an unknown or bad one is a UsageError."""
    base = settings or DEFAULTS
    unknown = sorted(set(overrides) - set(base.of_scope("run", "load")))
    if unknown:
        raise UsageError(f"unknown setting(s) {unknown}; see gate.settings.Settings (outputs and tracking are "
                         "the command line's)", field="settings")
    return replace(base, **overrides).checked()


def gate_request(
    command: str, models: Sequence[tuple[str, Model]], policy: PolicyLike, review_set: ReviewSetLike,
    baseline: Model | None, settings: Settings, *, classes: Sequence[str] | None = None, input: InputSpec | None = None,
) -> GateRequest:
    """What ``run_gate`` needs: the policy read, in-memory models made candidates, settings as options."""
    loaded = load_policy(policy, review_set)
    layer = settings.target_layer
    if layer is None and loaded.model.explain.target_layer != "auto":
        layer = loaded.model.explain.target_layer
    names = tuple(classes) if classes is not None else settings.classes

    def candidate(label: str, model: Model) -> Path | Candidate:
        if isinstance(model, nn.Module):
            return from_module(model, classes=names, input=input, name=label, target_layer=layer)
        return model if isinstance(model, Candidate) else Path(model)

    workers = settings.workers if settings.workers is not None else auto_workers()
    return GateRequest(
        command=command, candidates=tuple(candidate(k, m) for k, m in models), policy=loaded,
        baseline=None if baseline is None else candidate("baseline", baseline),
        review_set=None if review_set is None else review_set if isinstance(review_set, ReviewSet)
        else Path(review_set),
        allow_unpinned=settings.allow_unpinned, allow_arch_modules=settings.allow_arch_modules,
        max_checkpoint_mb=settings.max_checkpoint_mb,
        engine=EngineOptions(device=settings.device, batch_size=settings.batch_size, seed=settings.seed,
                             workers=workers, precision=settings.precision,
                             frame_cache=None if settings.frame_cache is None else str(settings.frame_cache)),
        load=LoadOptions(arch=settings.arch, classes=names, input_size=settings.input_size,
                         target_layer=settings.target_layer, trust_pickle=settings.trust_pickle,
                         resize=settings.resize, interpolation=settings.interpolation, mean=settings.mean,
                         std=settings.std, max_input_side=settings.max_input_side),
    )


def load_policy(policy: PolicyLike, review_set: ReviewSetLike = None) -> policy_io.Policy:
    """A ``Policy`` from a path, a ``Policy`` or a dict.

    A dict may leave out ``name`` (it is then "policy") and ``review_set`` (then the one given, unpinned).
    """
    if isinstance(policy, policy_io.Policy):
        return policy
    if not isinstance(policy, Mapping):
        return policy_io.load(policy)
    doc = {"name": "policy", **policy}
    if "review_set" not in doc and review_set is not None:
        root = review_set.root if isinstance(review_set, ReviewSet) else Path(review_set)
        doc["review_set"] = {"path": str(root)}  # no digest: pinning stays the caller's (or allow_unpinned)
    text = json.dumps(doc, sort_keys=True, default=str)
    return policy_io.from_mapping(doc, path=DICT_POLICY, sha256=hashlib.sha256(text.encode()).hexdigest())


def from_module(
    model: nn.Module, *, classes: Sequence[str] | None, input: InputSpec | None,
    name: str = "model", target_layer: str | None = None,
) -> Candidate:
    """A ``Candidate`` for a model in memory; its sha256 is that of its weights (names, dtypes, shapes, bytes)."""
    if not classes:
        raise CandidateError("an in-memory model needs classes=[its output names, in logit order]", path=name,
                             field="classes")
    if not isinstance(input, InputSpec):
        raise CandidateError("an in-memory model needs input=gate.InputSpec(size=(H, W), ...)", path=name,
                             field="input")
    if len(set(classes)) != len(classes):
        raise CandidateError(f"duplicate class names {list(classes)}", path=name, field="classes")
    layer = target_layer or default_target_layer(model)
    try:
        find_layer(model, layer)
    except CandidateError as exc:
        raise CandidateError(exc.message, path=name, field="target_layer") from None
    return Candidate(path=name, sha256=weights_sha256(model), arch=type(model).__name__, model=model,
                     classes=tuple(classes), input=input, target_layer=layer)


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the state_dict in key order: each name, dtype, shape and the tensor's bytes."""
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def explain(model: nn.Module, layer: str, images: Tensor, target: Tensor | None = None) -> Tensor:
    """Grad-CAM maps [B, H, W] of ``target`` (default: the predicted class) at the images' size [B, 3, H, W].

    The engine's maps: ReLU'd, bilinearly upsampled, never normalised (energy sums them as they are).
    """
    explained = gradcam.explain(model, layer, images, target)
    return gradcam.upsample(explained.cam.detach(), (int(images.shape[-2]), int(images.shape[-1])))


def energy_in_mask(cam: Tensor, mask: Tensor, void: Tensor | None = None) -> Tensor:
    """Share of each map's mass inside its mask [B] (float64; NaN for an empty mask or an all-zero map)."""
    return localise(cam, mask, void).energy


def lift(cam: Tensor, mask: Tensor, void: Tensor | None = None) -> Tensor:
    """Energy over the mask's share of the image [B]: 1.0 is no better than a uniform map."""
    local = localise(cam, mask, void)
    return local.energy / local.mask_area


def pointing_game(cam: Tensor, mask: Tensor, void: Tensor | None = None) -> Tensor:
    """1.0 where a maximum of the map lies on the object, else 0.0 [B] (NaN where excluded)."""
    return localise(cam, mask, void).pointing_hit

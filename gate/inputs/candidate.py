"""Candidate checkpoints: the ``xgate.candidate/v1`` format, read safely.

Checkpoints are read with ``torch.load(weights_only=True)``: a pickled
``nn.Module`` runs code when loaded, so it is refused unless the user trusts it.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import pickle
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gate.engine.layers import find_layer
from gate.errors import CandidateError
from gate.inputs import files, model_sources, safetensors_io
from gate.inputs.archs import build_model, checked_meta, default_target_layer, source_of
from gate.inputs.model_input import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputSpec,
    check_input_side,
    checked_spec,
    input_spec,
    overridden,
)

# The reader's bound for weights (inspect, layers, pack); check and select apply --max-checkpoint-mb first.
MAX_WEIGHTS_BYTES = 64 * 1024**3
DEFAULT_MAX_INPUT_SIDE = 4096  # --max-input-side: 3·4096²·4 bytes = 192 MiB per image of one batch's input

FORMAT = "xgate.candidate/v1"




@dataclass(frozen=True)
class Candidate:
    """A loaded model ready for the engine.

    ``classes`` are the names the gate scores (the review set's, once aligned); ``outputs`` are the names of
    the model's own outputs, in logit order; ``logit_order`` gives the logit of each of ``classes``.
    """

    path: str
    sha256: str
    arch: str
    model: nn.Module
    classes: tuple[str, ...]
    input: InputSpec
    target_layer: str
    meta: Mapping[str, Any] = field(default_factory=dict)
    logit_order: tuple[int, ...] | None = None
    label: str | None = None  # display name when file names collide (see gate.run.distinct_names)
    model_classes: tuple[str, ...] = ()  # the model's output names once aligned (empty: same as ``classes``)
    source: str = "torchvision"  # torchvision, timm, transformers, xgate or import path (gate.inputs.archs.source_of)
    input_origin: str = "checkpoint"  # where ``input`` came from, for inspect

    @property
    def name(self) -> str:
        """A short display name: the file name without its folder, unless ``label`` says otherwise."""
        return self.label or Path(self.path).name

    @property
    def outputs(self) -> tuple[str, ...]:
        """The model's output names in logit order (the width its logits must have)."""
        return self.model_classes or self.classes

    def aligned_to(self, classes: Sequence[str]) -> Candidate:
        """Match classes by name: the review set's classes must be among the model's (a permutation or subset).

        The model keeps all its outputs: ``logit_order`` picks the review set's classes from them, and the
        engine takes the prediction and the softmax over all of them.
        """
        if tuple(classes) == self.classes:
            return self  # already in this order (possibly through an earlier alignment)
        outputs = self.outputs
        missing = [name for name in classes if name not in outputs]
        if missing:
            raise CandidateError(missing_classes_message(missing, outputs), path=self.path, field="classes")
        order = tuple(outputs.index(name) for name in classes)
        return replace(self, classes=tuple(classes), model_classes=outputs, logit_order=order)


def missing_classes_message(missing: Sequence[str], outputs: Sequence[str], shown: int = 5) -> str:
    """One bounded line: how many review-set classes the model lacks, the first few, and close model names."""
    more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
    close = []
    for name in missing[:shown]:
        matches = difflib.get_close_matches(name, outputs, n=2, cutoff=0.75)
        if matches:
            close.append(f"{name!r} ~ {', '.join(map(repr, matches))}")
    hint = f"; close names: {'; '.join(close)}" if close else ""
    return (f"{len(missing)} review-set class(es) not among the model's {len(outputs)} outputs: "
            f"missing {list(missing[:shown])}{more}{hint}")


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save(
    path: str | Path,
    model: nn.Module,
    *,
    arch: str,
    classes: Sequence[str],
    input_size: tuple[int, int],
    arch_kwargs: Mapping[str, Any] | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    target_layer: str | None = None,
    meta: Mapping[str, Any] | None = None,
    resize: int | None = None,
    interpolation: str = "bilinear",
) -> Path:
    """Write ``model`` as an ``xgate.candidate/v1`` checkpoint that loads with weights_only=True.

    ``resize`` (shorter side, then a centre crop to ``input_size``) and ``interpolation`` describe the
    model's own eval preprocessing; without ``resize`` images are squashed to ``input_size``.
    """
    spec = checked_spec(path, {"size": list(input_size), "resize": resize, "interpolation": interpolation,
                                "mean": list(mean), "std": list(std)})
    payload: dict[str, Any] = {
        "format": FORMAT,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "classes": list(classes),
        "input": spec.to_json(),
        "meta": dict(meta or {}),
    }
    if target_layer:
        payload["target_layer"] = target_layer
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, out)
    return out


def load(
    path: str | Path,
    *,
    arch: str | None = None,
    classes: Sequence[str] | None = None,
    input_size: tuple[int, int] | None = None,
    target_layer: str | None = None,
    trust_pickle: bool = False,
    resize: int | None = None,
    interpolation: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    max_input_side: int = DEFAULT_MAX_INPUT_SIDE,
) -> Candidate:
    """Load a candidate; the keyword arguments fill in (or override) what the file lacks.

    ``input_size``, ``resize``, ``interpolation``, ``mean`` and ``std`` override the file's ``input``
    field (a bare state_dict has none: squash to the review set's size with ImageNet statistics).
    ``max_input_side`` bounds the input's sides (and resize) before anything is allocated for them.
    """
    path = Path(path)
    if path.is_dir():  # a Hugging Face save_pretrained folder
        return _load_folder(path, classes=classes, target_layer=target_layer, overrides=dict(
            input_size=input_size, resize=resize, interpolation=interpolation, mean=mean, std=std),
            max_input_side=max_input_side)
    hub = model_sources.hub_id_error(path)
    if hub is not None:
        raise hub
    data = files.read_bytes(path, limit=MAX_WEIGHTS_BYTES, error=CandidateError)  # a FIFO or /dev/zero: refused
    sha = hashlib.sha256(data).hexdigest()
    # safetensors (no pickle) is told apart by its first bytes; anything else is read as a torch file.
    obj = safetensors_io.read_payload(path, data) if safetensors_io.is_safetensors(data) else _torch_load(
        path, data, trust_pickle)
    meta: Mapping[str, Any]
    if isinstance(obj, nn.Module):
        model, meta, spec_arch = obj, {}, type(obj).__name__
        file_classes, file_input, file_layer = None, None, None
    elif isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        model, spec_arch, file_classes, file_input, file_layer, meta = _from_v1(path, obj, arch)
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if not arch or not classes:
            raise CandidateError("a bare state_dict needs --arch and --classes", path=path, field="state_dict")
        model = build_model(arch, {"num_classes": len(classes)})
        _load_state(path, model, unwrapped_state(obj)[0], hint=f" with {len(classes)} outputs, one per --classes name")
        spec_arch, file_classes, file_layer, meta = arch, None, None, {}
        file_input = _library_input(path, arch, model)
    else:
        fmt = obj.get("format") if isinstance(obj, Mapping) else type(obj).__name__
        raise CandidateError(f"not an {FORMAT} checkpoint (format {fmt!r})", path=path, field="format")

    if classes and file_classes and len(classes) != len(file_classes):
        # --classes must name every output; a review set naming only some of them needs no --classes at all.
        raise CandidateError(f"--classes names {len(classes)} classes but the model has {len(file_classes)} "
                             f"outputs (the checkpoint names them; a review set may use a subset without "
                             f"--classes)", path=path, field="classes")
    names = tuple(classes or file_classes or ())
    if not names:
        raise CandidateError("checkpoint names no classes; give --classes", path=path, field="classes")
    if len(set(names)) != len(names):
        raise CandidateError(f"duplicate class names {list(names)}", path=path, field="classes")
    given = {"input_size": input_size, "resize": resize, "interpolation": interpolation, "mean": mean, "std": std}
    spec = overridden(path, file_input or InputSpec(size=(0, 0)), **given)
    check_input_side(path, spec, max_input_side, "--input-size" if input_size else "input.size")
    layer = target_layer or file_layer or default_target_layer(model)
    try:
        find_layer(model, layer)  # an unknown name lists close matches
    except CandidateError as exc:
        raise CandidateError(exc.message, path=path, field="target_layer") from None
    model.eval()
    return Candidate(path=str(path), sha256=sha, arch=spec_arch, model=model, classes=names,
                     input=spec, target_layer=layer, meta=dict(meta), source=source_of(spec_arch),
                     input_origin=_origin(file_input, file_classes, given))


def _origin(file_input: InputSpec | None, file_classes: Sequence[str] | None, given: Mapping[str, Any]) -> str:
    """Where the input pipeline came from, for inspect."""
    origin = "checkpoint" if file_input is not None else "review set size, ImageNet mean/std"
    if file_input is not None and file_classes is None:
        origin = "timm data config"  # a bare state_dict with a timm arch (_library_input)
    return origin + (", overridden on the command line" if any(v is not None for v in given.values()) else "")


def _library_input(path: Path, arch: str, model: nn.Module) -> InputSpec | None:
    """A bare state_dict has no ``input`` field: a timm arch brings its own data config, others none."""
    if not arch.startswith(model_sources.TIMM_PREFIX):
        return None
    from gate.inputs import timm_models

    raw, _ = timm_models.input_defaults(model)
    return checked_spec(path, raw)


def _load_folder(path: Path, *, classes: Sequence[str] | None, target_layer: str | None,
                 overrides: Mapping[str, Any], max_input_side: int) -> Candidate:
    """A Hugging Face folder as a candidate: classes from id2label, input from the image processor."""
    from gate.inputs import hf_folder

    folder = hf_folder.read(path)
    if classes and tuple(classes) != folder.classes:
        raise CandidateError(f"--classes differs from the folder's id2label {list(folder.classes)[:5]}; drop it "
                             "(the folder names its classes)", path=path / hf_folder.CONFIG, field="id2label")
    spec = overridden(path, checked_spec(path / hf_folder.PROCESSOR, folder.input), **overrides)
    # The same bound as a checkpoint's input field, before the model (or any input) is built.
    option = next((f"--{key.replace('_', '-')}" for key in ("input_size", "resize") if overrides.get(key)), None)
    check_input_side(path if option else path / hf_folder.PROCESSOR, spec, max_input_side, option or "size")
    model = hf_folder.load_model(folder)
    layer = target_layer or default_target_layer(model)
    try:
        find_layer(model, layer)
    except CandidateError as exc:
        raise CandidateError(exc.message, path=path, field="target_layer") from None
    origin = folder.input_origin + (", overridden on the command line" if any(
        v is not None for v in overrides.values()) else "")
    return Candidate(path=str(path), sha256=folder.sha256, arch=folder.arch, model=model, classes=folder.classes,
                     input=spec, target_layer=layer, meta={},
                     source="transformers", input_origin=origin)


def _torch_load(path: Path, data: bytes, trust_pickle: bool) -> Any:
    try:
        with warnings.catch_warnings():  # torch warns about the globals a pickle names: our one line says it
            warnings.simplefilter("ignore")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch wraps every weights-only failure alike; only a refused GLOBAL means real pickled objects.
        # Garbage bytes ("Unsupported operand") are corrupt: never advise --trust-pickle for those.
        if "global" not in str(exc).lower():
            raise CandidateError("corrupt or unreadable checkpoint (UnpicklingError)", path=path) from None
        if not trust_pickle:
            raise CandidateError(
                "checkpoint holds pickled objects (loading it would run code); "
                "save an xgate.candidate/v1 state_dict or pass --trust-pickle", path=path) from None
    except Exception as exc:  # torch raises many types for corrupt files
        raise CandidateError(f"corrupt or unreadable checkpoint ({type(exc).__name__})", path=path) from None
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CandidateError(f"cannot unpickle checkpoint ({type(exc).__name__}: {exc})", path=path) from None


def _from_v1(
    path: Path, obj: Mapping[str, Any], arch_override: str | None
) -> tuple[nn.Module, str, tuple[str, ...], InputSpec, str | None, Mapping[str, Any]]:
    arch = arch_override or obj.get("arch")
    if not isinstance(arch, str):
        raise CandidateError("missing or non-string 'arch'", path=path, field="arch")
    classes = obj.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise CandidateError("'classes' must be a non-empty list of names", path=path, field="classes")
    kwargs = obj.get("arch_kwargs")
    kwargs = {} if kwargs is None else kwargs  # never `or {}`: the truth value of a tensor raises
    if not isinstance(kwargs, Mapping):
        raise CandidateError("'arch_kwargs' must be a mapping", path=path, field="arch_kwargs")
    state = obj.get("state_dict")
    if not isinstance(state, Mapping):
        raise CandidateError("missing 'state_dict'", path=path, field="state_dict")
    try:
        model = build_model(arch, dict(kwargs))
    except CandidateError as exc:
        raise CandidateError(exc.message, path=path, field=exc.field) from None
    _load_state(path, model, state)
    layer = obj.get("target_layer")
    if layer is not None and not isinstance(layer, str):
        raise CandidateError("'target_layer' must be a string", path=path, field="target_layer")
    return model, arch, tuple(classes), input_spec(path, obj.get("input")), layer, checked_meta(path, obj.get("meta"))




# Prefixes wrappers put on every key of a state_dict: DataParallel/DDP and torch.compile's OptimizedModule.
WRAPPER_PREFIXES: Mapping[str, str] = {"module.": "DataParallel/DDP", "_orig_mod.": "torch.compile"}


def unwrapped_state(state: Mapping[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``state`` without the wrapper prefixes its keys ALL carry (nested: compile over DDP), and notes saying so."""
    keys, notes = dict(state), []
    while keys:
        prefix = next((p for p in WRAPPER_PREFIXES if all(k.startswith(p) for k in keys)), None)
        if prefix is None:
            break
        keys = {k[len(prefix):]: v for k, v in keys.items()}
        notes.append(f"removed the {prefix!r} prefix ({WRAPPER_PREFIXES[prefix]})")
    return keys, tuple(notes)


def _load_state(path: Path, model: nn.Module, state: Mapping[str, Any], hint: str = "") -> None:
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise CandidateError(f"state_dict does not fit the arch{hint}: {detail}", path=path,
                             field="state_dict") from None

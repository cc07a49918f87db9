"""Bring a model: turn a team's weights, class list and preprocessing into a candidate file, and describe one.

``pack`` reads a state_dict (``.pt``/``.pth`` read with ``weights_only=True``, or
``.safetensors``), builds the architecture with as many outputs as there are
class names, writes an ``xgate.candidate/v1`` file (a torch file, or
safetensors when the output ends in ``.safetensors``), loads it back the way the
gate will and runs one forward on a dummy input: a state_dict that does not fit
or an output width other than the number of classes is an input error, and no
file is left behind. ``describe`` says what the gate will use from a candidate.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import pickle
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from gate.errors import CandidateError, UsageError
from gate.inputs import files, safetensors_io
from gate.inputs.archs import checked_meta, default_target_layer
from gate.inputs.candidate import (
    FORMAT,
    MAX_WEIGHTS_BYTES,
    Candidate,
    unwrapped_state,
)
from gate.inputs.candidate import load as load_candidate
from gate.inputs.model_input import IMAGENET_MEAN, IMAGENET_STD
from gate.inputs.model_sources import TIMM_PREFIX

# torchvision's ImageClassification eval transform for its ImageNet weights (e.g. ResNet50_Weights.IMAGENET1K_V1).
PRESETS: Mapping[str, Mapping[str, Any]] = {
    "imagenet": {"size": (224, 224), "resize": 256, "interpolation": "bilinear",
                 "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
}
MAX_CLASSES_FILE_BYTES = 10_000_000
STATE_KEYS = ("state_dict", "model", "model_state_dict", "net")  # where training scripts keep the weights


@dataclass(frozen=True)
class Preprocessing:
    """The input pipeline as given on the command line; ``None`` fields fall back to the preset."""

    preset: str | None = None
    size: tuple[int, int] | None = None
    resize: int | None = None
    interpolation: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def to_json(self, defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The checkpoint's ``input`` field; a usage error when neither ``size`` nor a preset is given.

        ``defaults`` is the model's own pipeline (timm's data config, a Hugging Face image processor): it
        stands in for a preset when none is given, and its ``pipeline`` (whose resampling) is kept.
        """
        base: Mapping[str, Any] = defaults or {}
        if self.preset is not None:
            if self.preset not in PRESETS:
                raise UsageError(f"unknown preset {self.preset!r} (known: {sorted(PRESETS)})", field="--preset")
            base = PRESETS[self.preset]
        size = self.size or base.get("size")
        if size is None:
            raise UsageError("give the model's input size (--size H,W) or --preset imagenet", field="--size")
        out: dict[str, Any] = {"size": [int(size[0]), int(size[1])]}
        resize = self.resize if self.resize is not None else base.get("resize")
        if resize is not None:
            out["resize"] = int(resize)
        out["interpolation"] = self.interpolation or base.get("interpolation", "bilinear")
        out["mean"] = [float(v) for v in (self.mean or base.get("mean", IMAGENET_MEAN))]
        out["std"] = [float(v) for v in (self.std or base.get("std", IMAGENET_STD))]
        if self.preset is None and base.get("pipeline"):
            out["pipeline"] = base["pipeline"]
        return out


@dataclass(frozen=True)
class PackRequest:
    """What ``xgate pack`` was given."""

    weights: Path  # a state_dict file, or a Hugging Face save_pretrained folder
    arch: str | None
    classes_file: Path | None
    output: Path
    preprocessing: Preprocessing = Preprocessing()
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    target_layer: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PackResult:
    """The written candidate, loaded back, and what was adjusted on the way."""

    path: Path
    candidate: Candidate
    notes: tuple[str, ...]


def pack(request: PackRequest) -> PackResult:
    """Write a candidate file from weights + classes + preprocessing, then prove it loads and fits.

    A Hugging Face folder brings its classes, preprocessing and architecture; a state_dict needs ``arch`` and
    ``classes_file``, and a ``timm:NAME`` arch brings timm's preprocessing for that model.
    """
    checked_meta("--meta", request.meta)  # what load would refuse is never written
    if request.weights.is_dir():
        payload, notes, n_classes = _folder_payload(request)
    else:
        payload, notes, n_classes = _state_payload(request)
    if request.target_layer:
        payload["target_layer"] = request.target_layer
    out = request.output
    temporary = out.with_name(f".{out.name}.partial")
    try:
        _write(temporary, payload, safetensors=out.suffix == ".safetensors")
        loaded = _checked(temporary, request, n_classes)
        _move(temporary, out)
    finally:
        with contextlib.suppress(OSError):  # e.g. the output's folder could not be made
            temporary.unlink(missing_ok=True)
    return PackResult(path=out, candidate=replace(loaded, path=str(out)), notes=notes)


def _state_payload(request: PackRequest) -> tuple[dict[str, Any], tuple[str, ...], int]:
    if not request.arch or request.classes_file is None:
        raise UsageError("a state_dict needs --arch and --classes (a Hugging Face folder names both)",
                         field="--arch" if not request.arch else "--classes")
    classes = read_classes(request.classes_file)
    state, notes = read_state_dict(request.weights)
    kwargs = {"num_classes": len(classes), **dict(request.arch_kwargs)}
    defaults = None
    if request.arch.startswith(TIMM_PREFIX) and request.preprocessing.preset is None:
        from gate.inputs import timm_models
        from gate.inputs.archs import build_model

        defaults, origin = timm_models.input_defaults(build_model(request.arch, kwargs))
        notes = (*notes, f"preprocessing from the {origin}")
    payload: dict[str, Any] = {
        "format": FORMAT, "arch": request.arch, "arch_kwargs": kwargs, "state_dict": state,
        "classes": list(classes), "input": request.preprocessing.to_json(defaults), "meta": dict(request.meta),
    }
    return payload, notes, len(classes)


def _folder_payload(request: PackRequest) -> tuple[dict[str, Any], tuple[str, ...], int]:
    """A Hugging Face folder as one candidate file: its config in arch_kwargs, its model's state_dict."""
    from gate.inputs import hf_folder

    if request.arch or request.classes_file is not None or request.arch_kwargs:
        raise UsageError("a Hugging Face folder names its architecture and classes: drop --arch, --classes and "
                         "--arch-kwargs", field="--arch")
    folder = hf_folder.read(request.weights)
    model = hf_folder.load_model(folder)
    import transformers

    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    payload: dict[str, Any] = {
        "format": FORMAT, "arch": folder.arch, "arch_kwargs": {"config": dict(folder.config)}, "state_dict": state,
        "classes": list(folder.classes), "input": request.preprocessing.to_json(folder.input),
        "meta": {"transformers": transformers.__version__, **dict(request.meta)},
    }
    return payload, (f"classes from config.json id2label, preprocessing from {folder.input_origin}",), len(
        folder.classes)


def read_classes(path: Path) -> tuple[str, ...]:
    """Class names in output order: one per line, a JSON list, or a JSON object {"0": name, ...}."""
    text = _read_text(path, "classes")
    stripped = text.strip()
    if stripped.startswith(("[", "{")):
        names = _json_classes(path, stripped)
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise CandidateError("the class list is empty", path=path, field="classes")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise CandidateError(f"duplicate class names {duplicates[:5]} ({len(duplicates)} in all)", path=path,
                             field="classes")
    return tuple(names)


def _read_text(path: Path, what: str) -> str:
    # The one reader: a FIFO or device refused at once, a BOM from spreadsheet exports stripped.
    return files.read_text(path, limit=MAX_CLASSES_FILE_BYTES, error=CandidateError, field=what)


def _json_classes(path: Path, text: str) -> list[str]:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CandidateError(f"not valid JSON ({exc})", path=path, field="classes") from None
    if isinstance(value, dict):  # {"0": "tench", "1": "goldfish"} (e.g. a Hugging Face id2label)
        try:
            order = sorted((int(key), name) for key, name in value.items())
        except (TypeError, ValueError):
            raise CandidateError("a JSON object must map output indices 0..N-1 to names", path=path,
                                 field="classes") from None
        if [index for index, _ in order] != list(range(len(order))):
            raise CandidateError("a JSON object must map every output index 0..N-1 to a name", path=path,
                                 field="classes")
        value = [name for _, name in order]
    if not isinstance(value, list) or not all(isinstance(name, str) and name.strip() for name in value):
        raise CandidateError("a JSON class list must be a list of non-empty strings", path=path, field="classes")
    return [name.strip() for name in value]


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Tensors by name from a weights file, never unpickling objects; notes say what was unwrapped."""
    data = files.read_bytes(path, limit=MAX_WEIGHTS_BYTES, error=CandidateError, field="weights")
    if safetensors_io.is_safetensors(data):
        obj: Any = safetensors_io.read_payload(path, data)
    else:
        obj = _torch_weights(path, data)
    notes: list[str] = []
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        obj = obj.get("state_dict")
        notes.append("weights taken from an xgate candidate's state_dict")
    elif isinstance(obj, Mapping) and not _all_tensors(obj):
        key = next((k for k in STATE_KEYS if isinstance(obj.get(k), Mapping) and _all_tensors(obj[k])), None)
        if key is None:
            raise CandidateError(f"not a state_dict (keys {sorted(map(str, obj))[:8]}; expected tensors by name, "
                                 f"or one of {list(STATE_KEYS)} holding them)", path=path, field="weights")
        obj = obj[key]
        notes.append(f"weights taken from the file's {key!r} entry")
    if not isinstance(obj, Mapping) or not obj or not _all_tensors(obj):
        raise CandidateError("not a state_dict (expected a mapping of names to tensors)", path=path, field="weights")
    state, unwrapped = unwrapped_state({str(k): v for k, v in obj.items()})
    return state, (*notes, *unwrapped)


def _all_tensors(obj: Mapping[Any, Any]) -> bool:
    return bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _torch_weights(path: Path, data: bytes) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():
            raise CandidateError("holds pickled objects (loading would run code); save model.state_dict() "
                                 "instead of the model", path=path, field="weights") from None
        raise CandidateError("corrupt or unreadable weights file", path=path, field="weights") from None
    except Exception as exc:  # torch raises many types for corrupt files
        raise CandidateError(f"corrupt or unreadable weights file ({type(exc).__name__})", path=path,
                             field="weights") from None


def _write(path: Path, payload: Mapping[str, Any], *, safetensors: bool) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if safetensors:
            safetensors_io.save(path, payload)
        else:
            with open(path, "wb") as handle:  # torch.save(path) turns an unwritable folder into a RuntimeError
                torch.save(dict(payload), handle)
    except OSError as exc:
        raise UsageError(f"cannot write the candidate: {exc.strerror or exc}", path=path.parent,
                         field="--output") from None


def _move(temporary: Path, out: Path) -> None:
    # Only a checked file takes the output's name; a folder of that name is not replaced.
    try:
        if out.is_dir():
            raise IsADirectoryError(21, "is a folder")
        os.replace(temporary, out)
    except OSError as exc:
        raise UsageError(f"cannot write the candidate: {exc.strerror or exc}", path=out, field="--output") from None


def _checked(path: Path, request: PackRequest, n_classes: int) -> Candidate:
    """Load the written file as the gate will and run one forward; the output must be [1, n_classes]."""
    try:
        loaded = load_candidate(path)
    except CandidateError as exc:
        # Name the user's file behind the field, never the temporary one.
        source = {"state_dict": request.weights, "classes": request.classes_file}.get(exc.field or "")
        hint = ""
        if exc.field == "state_dict":
            built = request.arch_kwargs.get("num_classes", n_classes)
            hint = f" (the arch was built with num_classes={built}; {request.classes_file} names {n_classes})"
        raise CandidateError(exc.message + hint, path=source, field=exc.field) from None
    height, width = loaded.input.size
    try:
        with torch.no_grad():
            output = loaded.model(torch.zeros(1, 3, height, width))
    except Exception as exc:  # the user's architecture on the user's input size
        raise CandidateError(f"a forward on a 1x3x{height}x{width} input failed ({type(exc).__name__}: {exc})"[:300],
                             path=request.weights, field="input.size") from None
    shape = tuple(output.shape) if isinstance(output, torch.Tensor) else None
    if shape != (1, n_classes):
        raise CandidateError(f"the model's output has shape {shape} but the class list names {n_classes} "
                             "classes (one output per class expected)", path=request.classes_file, field="classes")
    if not bool(torch.isfinite(output).all()):
        raise CandidateError("the model gives non-finite outputs on a dummy input", path=request.weights,
                             field="state_dict")
    return loaded


# --- describe ---------------------------------------------------------------------


def describe(path: Path) -> dict[str, Any]:
    """What the gate will use from the candidate at ``path``, as JSON-ready values."""
    try:
        loaded = load_candidate(path)
    except CandidateError as exc:
        if "bare state_dict" not in exc.message:
            raise
        raise CandidateError("a bare state_dict, not a candidate: make one with "
                             "'xgate pack WEIGHTS --arch ARCH --classes FILE --preset imagenet -o cand.pt'",
                             path=path, field=exc.field) from None
    container = _container(path)
    try:
        default_layer: str | None = default_target_layer(loaded.model)
    except CandidateError:
        default_layer = None
    spec = loaded.input
    resize, interpolation = spec.resize, spec.interpolation
    parameters = sum(p.numel() for p in loaded.model.parameters())
    return {
        "path": loaded.path, "sha256": loaded.sha256, "format": container, "arch": loaded.arch,
        "source": loaded.source, "num_classes": len(loaded.classes), "classes": list(loaded.classes),
        "input": {"size": list(spec.size), "resize": resize, "interpolation": interpolation,
                  "mean": list(spec.mean), "std": list(spec.std), "resampling": spec.pipeline,
                  "from": loaded.input_origin, "pipeline": pipeline_text(spec.size, resize, interpolation)},
        "target_layer": loaded.target_layer,
        "target_layer_source": "default for this model" if loaded.target_layer == default_layer else "checkpoint",
        "parameters": parameters, "meta": _plain(loaded.meta),
    }


def _container(path: Path) -> str:
    if path.is_dir():
        return "Hugging Face save_pretrained folder (safetensors)"
    data = files.read_bytes(path, limit=MAX_WEIGHTS_BYTES, error=CandidateError)
    kind = "safetensors" if safetensors_io.is_safetensors(data) else "torch, read with weights_only"
    return f"{FORMAT} ({kind})"


def pipeline_text(size: Sequence[int], resize: int | None, interpolation: str) -> str:
    """The input pipeline in torchvision's words, e.g. ``Resize(256, bilinear) -> CenterCrop(224x224)``."""
    height, width = size
    if resize is None:
        return f"Resize(({height}, {width}), {interpolation}, antialias) (squash, aspect ratio not kept)"
    return f"Resize({resize}, {interpolation}, antialias) -> CenterCrop({height}x{width})"


def _plain(value: Any) -> Any:
    """Meta as JSON values (tensors or other objects become their repr)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str | int | float | bool | type(None)):
        return value
    return repr(value)


def format_description(info: Mapping[str, Any], max_classes: int = 10) -> str:
    """``describe``'s values as lines for people: the first ``max_classes`` class names and a count."""
    names = info["classes"]
    shown = ", ".join(names[:max_classes]) + (f", ... ({len(names) - max_classes} more)"
                                               if len(names) > max_classes else "")
    spec = info["input"]
    meta = json.dumps(info["meta"], sort_keys=True) if info["meta"] else "(none)"
    lines = [
        f"candidate:    {info['path']}",
        f"format:       {info['format']}",
        f"sha256:       {info['sha256']}",
        f"arch:         {info['arch']} ({info['parameters']:,} parameters)",
        f"source:       {info['source']}",
        f"classes:      {info['num_classes']}: {shown}",
        f"input:        {spec['pipeline']}" + (f" ({spec['resampling']} resampling)"
                                               if spec["resampling"] != "torchvision" else ""),
        f"              then [0, 1] pixels, mean {_floats(spec['mean'])}, std {_floats(spec['std'])}",
        f"              from {spec['from']}",
        f"target layer: {info['target_layer']} ({info['target_layer_source']})",
        f"meta:         {meta}",
    ]
    return "\n".join(lines)


def _floats(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"

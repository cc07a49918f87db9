"""Candidate checkpoints: the ``xgate.candidate/v1`` format, read safely.

Checkpoints are read with ``torch.load(weights_only=True)``: a pickled
``nn.Module`` runs code when loaded, so it is refused unless the user trusts it.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gate.archs import build_model, default_target_layer
from gate.errors import CandidateError
from gate.inputs.preprocess import INTERPOLATIONS, Geometry
from gate.inputs import safetensors_io

FORMAT = "xgate.candidate/v1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class InputSpec:
    """How images are fed to the model (torchvision's ``ImageClassification`` eval transform).

    With ``resize`` the shorter side goes to ``resize`` and a centre crop to ``size`` (H, W) follows;
    without it the image is squashed to ``size``. ``interpolation`` is bilinear, bicubic or nearest
    (antialiased as torchvision does); ``mean``/``std`` normalise [0, 1] pixels per channel.
    """

    size: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: int | None = None
    interpolation: str = "bilinear"

    @property
    def geometry(self) -> Geometry:
        """Where the pixels go (what :mod:`gate.inputs.preprocess` needs), without the normalisation."""
        return Geometry(size=self.size, resize=self.resize, interpolation=self.interpolation)

    def to_json(self) -> dict[str, Any]:
        """The checkpoint's ``input`` field (``resize`` only when set)."""
        out: dict[str, Any] = {"size": list(self.size)}
        if self.resize is not None:
            out["resize"] = self.resize
        out.update(interpolation=self.interpolation, mean=[float(m) for m in self.mean],
                   std=[float(s) for s in self.std])
        return out


@dataclass(frozen=True)
class Candidate:
    """A loaded model ready for the engine; ``logit_order`` maps review-set classes to logits."""

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

    @property
    def name(self) -> str:
        """A short display name: the file name without its folder, unless ``label`` says otherwise."""
        return self.label or Path(self.path).name

    def aligned_to(self, classes: Sequence[str]) -> Candidate:
        """Match classes by name; a permutation reorders the logits, other names are an error."""
        if tuple(classes) == self.classes:
            return self  # already in this order (possibly through an earlier permutation)
        if sorted(classes) != sorted(self.classes):
            missing = sorted(set(classes) - set(self.classes))
            extra = sorted(set(self.classes) - set(classes))
            raise CandidateError(
                f"classes do not match the review set's (missing {missing}, extra {extra})",
                path=self.path, field="classes",
            )
        # Compose with an earlier permutation: logit_order indexes the model's own logits, not self.classes.
        current = self.logit_order or tuple(range(len(self.classes)))
        order = tuple(current[self.classes.index(name)] for name in classes)
        return replace(self, classes=tuple(classes), logit_order=order)


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
) -> Path:
    """Write ``model`` as an ``xgate.candidate/v1`` checkpoint that loads with weights_only=True."""
    payload: dict[str, Any] = {
        "format": FORMAT,
        "arch": arch,
        "arch_kwargs": dict(arch_kwargs or {}),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "classes": list(classes),
        "input": {"size": list(input_size), "mean": [float(m) for m in mean], "std": [float(s) for s in std]},
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
) -> Candidate:
    """Load a candidate; the keyword arguments fill in (or override) what the file lacks."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CandidateError(f"cannot read checkpoint: {exc.strerror or exc}", path=path) from None
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
        _load_state(path, model, obj)
        spec_arch, file_classes, file_input, file_layer, meta = arch, None, None, None, {}
    else:
        fmt = obj.get("format") if isinstance(obj, Mapping) else type(obj).__name__
        raise CandidateError(f"not an {FORMAT} checkpoint (format {fmt!r})", path=path, field="format")

    names = tuple(classes or file_classes or ())
    if not names:
        raise CandidateError("checkpoint names no classes; give --classes", path=path, field="classes")
    if len(set(names)) != len(names):
        raise CandidateError(f"duplicate class names {list(names)}", path=path, field="classes")
    spec = file_input or InputSpec(size=input_size or (0, 0))
    if input_size:
        spec = replace(spec, size=input_size)
    layer = target_layer or file_layer or default_target_layer(model)
    if layer not in dict(model.named_modules()):
        raise CandidateError(f"model has no layer {layer!r}", path=path, field="target_layer")
    model.eval()
    return Candidate(path=str(path), sha256=sha, arch=spec_arch, model=model, classes=names,
                     input=spec, target_layer=layer, meta=dict(meta))


def _torch_load(path: Path, data: bytes, trust_pickle: bool) -> Any:
    try:
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
    kwargs = obj.get("arch_kwargs") or {}
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
    meta = obj.get("meta") or {}
    return model, arch, tuple(classes), _input_spec(path, obj.get("input")), layer, meta


def _input_spec(path: Path, raw: Any) -> InputSpec:
    try:
        size = tuple(int(v) for v in raw["size"])
        mean = tuple(float(v) for v in raw.get("mean", IMAGENET_MEAN))
        std = tuple(float(v) for v in raw.get("std", IMAGENET_STD))
    except (TypeError, KeyError, ValueError):
        raise CandidateError("'input' must have size [H, W], mean [3] and std [3]", path=path, field="input") from None
    if len(size) != 2 or min(size) <= 0 or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise CandidateError(f"bad input spec size={size} mean={mean} std={std}", path=path, field="input")
    return InputSpec(size=(size[0], size[1]), mean=(mean[0], mean[1], mean[2]), std=(std[0], std[1], std[2]))


def _load_state(path: Path, model: nn.Module, state: Mapping[str, Any]) -> None:
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = first[1].strip() if len(first) > 1 else first[0]
        raise CandidateError(f"state_dict does not fit the arch: {detail}", path=path, field="state_dict") from None

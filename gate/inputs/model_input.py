"""How images are fed to a model: ``InputSpec`` and the checks on a checkpoint's ``input`` field.

A checkpoint is untrusted: every value of ``input`` (and every command-line override of it) is checked here
before a tensor of that size exists, and a bad one is one line naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gate.errors import CandidateError
from gate.inputs.preprocess import INTERPOLATIONS, PIPELINES, Geometry

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
    pipeline: str = "torchvision"  # whose implementation of these steps (gate.inputs.preprocess)

    @property
    def geometry(self) -> Geometry:
        """Where the pixels go (what :mod:`gate.inputs.preprocess` needs), without the normalisation."""
        return Geometry(size=self.size, resize=self.resize, interpolation=self.interpolation, pipeline=self.pipeline)

    def to_json(self) -> dict[str, Any]:
        """The checkpoint's ``input`` field (``resize`` only when set)."""
        out: dict[str, Any] = {"size": list(self.size)}
        if self.resize is not None:
            out["resize"] = self.resize
        out.update(interpolation=self.interpolation, mean=[float(m) for m in self.mean],
                   std=[float(s) for s in self.std])
        if self.pipeline != "torchvision":  # files written before timm/transformers stay as they were
            out["pipeline"] = self.pipeline
        return out


def check_input_side(path: str | Path, spec: InputSpec, limit: int, field: str) -> None:
    """Refuse input sides (or a resize) above ``limit`` before any tensor of that size is made."""
    height, width = spec.size
    largest = max(height, width, spec.resize or 0)
    if largest > limit:
        per_image = 3 * max(height, spec.resize or 0) * max(width, spec.resize or 0) * 4 / 2**20
        raise CandidateError(f"input {height}x{width}" + (f" (resize {spec.resize})" if spec.resize else "")
                             + f" is over the --max-input-side limit of {limit} pixels ({per_image:,.0f} MiB of "
                             "float32 pixels per image of every batch); raise --max-input-side to gate it",
                             path=path, field=field)


INPUT_KEYS = frozenset({"size", "resize", "interpolation", "mean", "std", "pipeline"})
# A checkpoint is untrusted: a side of 10⁹ pixels would exhaust memory before any check could run.
MAX_SIDE = 8192


def input_spec(path: Path, raw: Any) -> InputSpec:
    """The checkpoint's ``input`` field as an InputSpec: a mapping of known keys, each value checked."""
    if not isinstance(raw, Mapping):
        raise CandidateError("'input' must be a mapping with size [H, W] (and resize, interpolation, mean, std)",
                             path=path, field="input")
    unknown = sorted(str(k) for k in raw if k not in INPUT_KEYS)
    if unknown:
        raise CandidateError(f"unknown key(s) {unknown} (known: {sorted(INPUT_KEYS)})", path=path, field="input")
    return checked_spec(path, raw)


def checked_spec(path: str | Path, raw: Mapping[str, Any]) -> InputSpec:
    """An InputSpec from the ``input`` field's values, each checked (one line naming the bad field)."""
    size = _numbers(path, "input.size", raw.get("size"), 2, int)
    mean = _numbers(path, "input.mean", raw.get("mean", IMAGENET_MEAN), 3, float)
    std = _numbers(path, "input.std", raw.get("std", IMAGENET_STD), 3, float)
    if min(size) <= 0 or max(size) > MAX_SIDE:
        raise CandidateError(f"must be two integers [H, W] in 1..{MAX_SIDE}, got {list(size)}", path=path,
                             field="input.size")
    if min(std) <= 0 or not all(math.isfinite(v) for v in (*mean, *std)):
        raise CandidateError(f"mean must be finite and std positive, got mean {list(mean)} std {list(std)}",
                             path=path, field="input.std")
    resize = raw.get("resize")
    if resize is not None and (isinstance(resize, bool) or not isinstance(resize, int) or not 0 < resize <= MAX_SIDE):
        raise CandidateError(f"must be a positive integer up to {MAX_SIDE} (the shorter side), got {resize!r}",
                             path=path, field="input.resize")
    interpolation = raw.get("interpolation", "bilinear")
    if interpolation not in INTERPOLATIONS:
        raise CandidateError(f"must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}", path=path,
                             field="input.interpolation")
    pipeline = raw.get("pipeline", "torchvision")
    if pipeline not in PIPELINES:
        raise CandidateError(f"must be one of {list(PIPELINES)}, got {pipeline!r}"[:200], path=path,
                             field="input.pipeline")
    return InputSpec(size=(int(size[0]), int(size[1])), mean=(mean[0], mean[1], mean[2]),
                     std=(std[0], std[1], std[2]), resize=resize, interpolation=str(interpolation),
                     pipeline=str(pipeline))


def _numbers(path: str | Path, name: str, raw: Any, count: int, kind: type) -> tuple[Any, ...]:
    if (isinstance(raw, str | bytes) or not isinstance(raw, Sequence) or len(raw) != count
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in raw)
            or (kind is int and not all(float(v).is_integer() for v in raw))):
        raise CandidateError(f"must be a list of {count} {kind.__name__}s, got {raw!r}"[:200], path=path, field=name)
    return tuple(kind(v) for v in raw)


def overridden(path: Path, spec: InputSpec, **overrides: Any) -> InputSpec:
    """``spec`` with the options given on the command line in place of the file's values, checked again."""
    given = {k: v for k, v in overrides.items() if v is not None}
    if not given:
        return spec
    raw = {**spec.to_json(), **{("size" if k == "input_size" else k): v for k, v in given.items()}}
    if raw.get("resize") is not None and min(raw["size"]) <= 0:
        raise CandidateError("--resize needs --input-size (the centre crop after the resize)", path=path,
                             field="input.resize")
    if min(raw["size"]) <= 0:
        raw["size"] = [1, 1]  # unknown yet: the engine takes the review set's own size
        return replace(checked_spec(path, raw), size=(0, 0))
    return checked_spec(path, raw)

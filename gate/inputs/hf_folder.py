"""Hugging Face ``save_pretrained`` folders: ``config.json``, ``model.safetensors``, ``preprocessor_config.json``.

The folder says everything the gate needs: the classes (``id2label``), the preprocessing (the image
processor's size, crop, resample, rescale and mean/std) and the architecture (``model_type``). It is read
with ``AutoModelForImageClassification.from_pretrained(folder, local_files_only=True,
trust_remote_code=False, use_safetensors=True)``, offline, and every key must load: a folder whose
weights do not fit its config is an input error, never a half-random model. Custom code (``auto_map``),
pickled weights (``pytorch_model.bin``) and hub ids are refused. The model's ``.logits`` are what the
gate scores (a forward hook on the model returns them, so layer names stay the library's).
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gate.errors import CandidateError
from gate.inputs.model_sources import HF_PREFIX, offline, require

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
PICKLED = ("pytorch_model.bin", "model.bin", "pytorch_model.bin.index.json")
PROCESSOR = "preprocessor_config.json"
MAX_JSON_BYTES = 10_000_000
RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL.Image.Resampling values the processors store
HEAD_KEYS = ("classifier.weight", "classifier.1.weight", "cls_classifier.weight", "classifier.classifier.weight")


@dataclass(frozen=True)
class HfFolder:
    """What a folder says, checked; the model is built from it by :func:`build`."""

    path: Path
    config: Mapping[str, Any]
    classes: tuple[str, ...]
    input: Mapping[str, Any]  # the candidate's ``input`` field
    input_origin: str
    sha256: str

    @property
    def arch(self) -> str:
        """``transformers:ViTForImageClassification``-style name."""
        names = self.config.get("architectures") or []
        name = names[0] if names and isinstance(names[0], str) else str(self.config.get("model_type"))
        return f"{HF_PREFIX}{name}"


def check_files(path: Path, max_mb: float) -> None:
    """Before reading: a folder with config.json, whose files are regular and the weights within ``max_mb``."""
    if not (path / CONFIG).exists():
        raise CandidateError("checkpoint is not a regular file, nor a Hugging Face folder (no config.json)",
                             path=path)
    for name in (CONFIG, WEIGHTS, PROCESSOR):
        try:
            info = (path / name).stat()
        except FileNotFoundError:
            continue  # read() names what is missing
        except OSError as exc:
            raise CandidateError(f"cannot read: {exc.strerror or exc}", path=path / name) from None
        if not stat.S_ISREG(info.st_mode):
            raise CandidateError("not a regular file", path=path / name)
        if name == WEIGHTS and info.st_size > max_mb * 1024 * 1024:
            raise CandidateError(f"weights are {info.st_size / 2**20:.0f} MB, over the {max_mb:g} MB limit "
                                 "(--max-checkpoint-mb)", path=path / name, field="size")


def read(path: Path) -> HfFolder:
    """Check a folder's three files (one line naming the file and field for each problem)."""
    for name in PICKLED:
        if (path / name).exists() and not (path / WEIGHTS).exists():
            raise CandidateError(f"weights are pickled ({name}; loading would run code): save with "
                                 "save_pretrained(..., safe_serialization=True) to get model.safetensors",
                                 path=path / name, field="weights")
    if (path / f"{WEIGHTS}.index.json").exists() and not (path / WEIGHTS).exists():
        raise CandidateError("sharded weights are not supported; save with a larger max_shard_size",
                             path=path / f"{WEIGHTS}.index.json", field="weights")
    config = read_json(path / CONFIG)
    check_config(path / CONFIG, config)
    if not (path / WEIGHTS).is_file():
        raise CandidateError("missing: the folder has no model.safetensors", path=path / WEIGHTS, field="weights")
    classes = classes_of(path / CONFIG, config)
    _check_head(path, len(classes))
    processor = read_json(path / PROCESSOR)
    spec, origin = input_field(path / PROCESSOR, processor)
    digest = hashlib.sha256()
    for name in (CONFIG, WEIGHTS, PROCESSOR):
        digest.update(name.encode() + b"\0" + _file_sha256(path / name).encode())
    return HfFolder(path=path, config=config, classes=classes, input=spec, input_origin=origin,
                    sha256=digest.hexdigest())


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a folder file; missing, oversized, not UTF-8 JSON or not an object: an input error."""
    if not path.is_file():
        raise CandidateError(f"missing: the folder has no {path.name}", path=path, field=path.name)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise CandidateError(f"larger than {MAX_JSON_BYTES} bytes", path=path, field=path.name)
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CandidateError(f"cannot read: {exc.strerror or exc}", path=path, field=path.name) from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise CandidateError(f"not valid UTF-8 JSON ({type(exc).__name__})", path=path, field=path.name) from None
    if not isinstance(value, dict):
        raise CandidateError(f"must be a JSON object, got {type(value).__name__}", path=path, field=path.name)
    return value


def check_config(path: Path | str, config: Mapping[str, Any]) -> None:
    """No custom code, and a ``model_type`` transformers knows for image classification."""
    if config.get("auto_map") is not None:
        raise CandidateError("names custom code (auto_map); xgate runs only transformers' own architectures",
                             path=path, field="auto_map")
    model_type = config.get("model_type")
    if not isinstance(model_type, str) or not model_type:
        raise CandidateError("missing or non-string model_type", path=path, field="model_type")
    names = config.get("architectures")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
        raise CandidateError("architectures must be a list of class names", path=path, field="architectures")


def classes_of(path: Path | str, config: Mapping[str, Any]) -> tuple[str, ...]:
    """Class names in output order from ``id2label`` ({"0": name, ...}, every index 0..N-1, unique names)."""
    raw = config.get("id2label")
    if not isinstance(raw, Mapping) or not raw:
        raise CandidateError("missing or empty id2label (the class names)", path=path, field="id2label")
    try:
        order = sorted((int(key), name) for key, name in raw.items())
    except (TypeError, ValueError):
        raise CandidateError("keys must be output indices \"0\"..\"N-1\"", path=path, field="id2label") from None
    if [index for index, _ in order] != list(range(len(order))):
        raise CandidateError("must name every output index 0..N-1 once", path=path, field="id2label")
    names = [name for _, name in order]
    if not all(isinstance(name, str) and name.strip() for name in names):
        raise CandidateError("names must be non-empty strings", path=path, field="id2label")
    if len(set(names)) != len(names):
        raise CandidateError("duplicate class names", path=path, field="id2label")
    return tuple(name.strip() for name in names)


def _check_head(path: Path, n_classes: int) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path / WEIGHTS), framework="pt") as weights:
            shapes = {key: tuple(weights.get_slice(key).get_shape()) for key in weights.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CandidateError(f"corrupt or unreadable safetensors ({type(exc).__name__})", path=path / WEIGHTS,
                             field="weights") from None
    for key in HEAD_KEYS:
        shape = shapes.get(key)
        if shape and shape[0] != n_classes:
            raise CandidateError(f"names {n_classes} classes but the head ({key} in {WEIGHTS}) has {shape[0]} "
                                 "outputs", path=path / CONFIG, field="id2label")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------- preprocessing


def input_field(path: Path, processor: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The candidate's ``input`` field from an image processor config, and a note of where it came from."""
    kind = str(processor.get("image_processor_type", "image processor"))
    for flag in ("do_flip_channel_order", "rescale_offset", "do_reduce_labels"):
        if processor.get(flag):
            raise CandidateError(f"{flag} is not supported (xgate feeds RGB pixels in [0, 1] before mean/std)",
                                 path=path, field=flag)
    if processor.get("do_resize", True) is not True:
        raise CandidateError("do_resize must be true: the model takes one input size", path=path, field="do_resize")
    resample = processor.get("resample", 2)
    if resample not in RESAMPLE:
        raise CandidateError(f"must be one of {sorted(RESAMPLE)} ({', '.join(RESAMPLE.values())}), got {resample!r}",
                             path=path, field="resample")
    out: dict[str, Any] = {**_geometry(path, processor), "interpolation": RESAMPLE[resample],
                           "pipeline": "transformers"}
    _rescale(path, processor)
    if processor.get("do_normalize", True):
        out["mean"] = _triple(path, processor, "image_mean")
        out["std"] = _triple(path, processor, "image_std")
    else:
        out["mean"], out["std"] = [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    return out, f"{PROCESSOR} ({kind})"


def _geometry(path: Path, processor: Mapping[str, Any]) -> dict[str, Any]:
    size = processor.get("size")
    crop = processor.get("crop_size") if processor.get("do_center_crop") else None
    if isinstance(size, Mapping) and set(size) == {"height", "width"}:
        height, width = _side(path, "size.height", size["height"]), _side(path, "size.width", size["width"])
        if crop is not None and _crop(path, crop) != [height, width]:
            raise CandidateError("a centre crop after a squash is not supported", path=path, field="crop_size")
        return {"size": [height, width]}
    if isinstance(size, Mapping) and set(size) == {"shortest_edge"}:
        edge = _side(path, "size.shortest_edge", size["shortest_edge"])
        if "crop_pct" in processor and crop is None:  # ConvNeXt's processor: its crop_pct rule
            crop_pct = processor.get("crop_pct")
            if not isinstance(crop_pct, int | float) or isinstance(crop_pct, bool) or not 0 < crop_pct <= 1:
                raise CandidateError(f"must be a number in (0, 1], got {crop_pct!r}", path=path, field="crop_pct")
            if edge >= 384:
                return {"size": [edge, edge]}  # warped to a square, no crop (the processor's own rule)
            return {"size": [edge, edge], "resize": int(edge / crop_pct)}
        if crop is None:
            raise CandidateError("a shortest_edge resize without a centre crop gives images of varying size",
                                 path=path, field="size")
        return {"size": _crop(path, crop), "resize": edge}
    raise CandidateError(f"must be {{height, width}} or {{shortest_edge}}, got {size!r}"[:200], path=path, field="size")


def _crop(path: Path, crop: Any) -> list[int]:
    if not isinstance(crop, Mapping) or set(crop) != {"height", "width"}:
        raise CandidateError(f"must be {{height, width}}, got {crop!r}"[:200], path=path, field="crop_size")
    return [_side(path, "crop_size.height", crop["height"]), _side(path, "crop_size.width", crop["width"])]


def _side(path: Path, field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= 8192:
        raise CandidateError(f"must be an integer in 1..8192, got {value!r}"[:200], path=path, field=field)
    return value


def _rescale(path: Path, processor: Mapping[str, Any]) -> None:
    factor = processor.get("rescale_factor", 1 / 255)
    if processor.get("do_rescale", True) is not True or not isinstance(factor, float) or abs(factor - 1 / 255) > 1e-9:
        raise CandidateError(f"xgate feeds pixels rescaled by 1/255; got do_rescale {processor.get('do_rescale')!r}, "
                             f"rescale_factor {factor!r}"[:200], path=path, field="rescale_factor")


def _triple(path: Path, processor: Mapping[str, Any], key: str) -> list[float]:
    value = processor.get(key)
    if (not isinstance(value, list) or len(value) != 3
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        raise CandidateError(f"must be a list of 3 numbers, got {value!r}"[:200], path=path, field=key)
    return [float(v) for v in value]


# ----------------------------------------------------------------------------------------------- models


def load_model(folder: HfFolder) -> nn.Module:
    """``from_pretrained`` on the folder, offline, safetensors only, every key loaded; returns ``.logits``."""
    transformers = require("transformers")
    transformers.utils.logging.disable_progress_bar()  # the gate's own output only
    try:
        with offline():
            model, info = transformers.AutoModelForImageClassification.from_pretrained(
                str(folder.path), local_files_only=True, trust_remote_code=False, use_safetensors=True,
                output_loading_info=True, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for configs and weights that do not fit
        raise CandidateError(f"transformers could not load the folder ({type(exc).__name__}: {exc})"[:300],
                             path=folder.path, field="model_type") from None
    problems = {k: list(v) for k, v in info.items() if k != "error_msgs" and v}
    if problems:
        key, names = next(iter(problems.items()))
        raise CandidateError(f"weights do not fit the config: {key.replace('_', ' ')} {sorted(names)[:3]}"
                             f" ({len(names)} in all)", path=folder.path / WEIGHTS, field="state_dict")
    return logits_only(model)


def build(arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """A packed Hugging Face candidate's model: ``from_config`` on ``arch_kwargs.config`` (its weights follow)."""
    config = kwargs.get("config")
    if not isinstance(config, Mapping):
        raise CandidateError(f"{arch} needs arch_kwargs.config (the folder's config.json)", field="arch_kwargs")
    check_config("arch_kwargs.config", config)
    transformers = require("transformers")
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = str(config["model_type"])
    if model_type not in CONFIG_MAPPING:
        raise CandidateError(f"transformers {transformers.__version__} has no model_type {model_type!r}",
                             field="arch_kwargs.config.model_type")
    try:
        with offline():
            built = CONFIG_MAPPING[model_type].from_dict(dict(config))
            model = transformers.AutoModelForImageClassification.from_config(built, dtype=torch.float32)
    except Exception as exc:
        raise CandidateError(f"transformers could not build {model_type!r} ({type(exc).__name__}: {exc})"[:300],
                             field="arch_kwargs.config") from None
    return logits_only(model)


def _logits(_module: nn.Module, _inputs: object, output: object) -> object:
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    return output[0] if isinstance(output, tuple) and output else output


def logits_only(model: nn.Module) -> nn.Module:
    """``model`` whose calls return the logits tensor (a forward hook: module names stay the library's)."""
    model.register_forward_hook(_logits)
    return model.eval()

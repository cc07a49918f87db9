"""timm models by name (``arch: "timm:<name>"``) and their eval preprocessing from timm's own data config.

Built with ``timm.create_model(name, pretrained=False, num_classes=...)``: never from the network, the
weights come from the candidate. The input pipeline is timm's ``create_transform(**resolve_data_config(
{}, model=model))`` in xgate's words: ``Resize(floor(size / crop_pct))`` on the shorter side, then
``CenterCrop(size)``, with timm's interpolation and mean/std, on a PIL image (``pipeline: timm``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import nn

from gate.errors import CandidateError
from gate.inputs.model_sources import TIMM_PREFIX, offline, require

# create_model arguments that would read a file or reach the hub: the weights come from the candidate only.
_REFUSED_KWARGS = ("pretrained", "pretrained_cfg", "checkpoint_path", "cache_dir")
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def model_name(arch: str) -> str:
    """``convnext_tiny`` from ``timm:convnext_tiny``; an empty name is an input error."""
    name = arch[len(TIMM_PREFIX):].strip()
    if not name:
        raise CandidateError("give a timm model name after 'timm:' (e.g. timm:convnext_tiny)", field="arch")
    return name


def build(arch: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """``timm.create_model(name, pretrained=False, **kwargs)``; unknown names and bad kwargs are input errors."""
    name = model_name(arch)
    for key in _REFUSED_KWARGS:
        if kwargs.get(key) not in (None, False):
            raise CandidateError(f"{key}={kwargs[key]!r} would load weights from elsewhere; the candidate holds "
                                 "them", field=f"arch_kwargs.{key}")
    timm = require("timm")
    if not timm.is_model(name.split(".")[0]):
        close = timm.list_models(f"*{name.split('.')[0][:6]}*")[:5]
        hint = f"; close names: {', '.join(close)}" if close else ""
        raise CandidateError(f"timm has no model {name!r} (timm {timm.__version__}){hint}", field="arch")
    plain = {k: v for k, v in kwargs.items() if k not in _REFUSED_KWARGS}
    try:
        with offline():
            model = timm.create_model(name, pretrained=False, **plain)
    except TypeError as exc:
        raise CandidateError(f"timm model {name!r} does not accept arch_kwargs {plain}: {exc}"[:300],
                             field="arch_kwargs") from None
    except Exception as exc:  # timm's factories raise many types on bad arguments
        raise CandidateError(f"timm could not build {name!r} ({type(exc).__name__}: {exc})"[:300],
                             field="arch") from None
    if not isinstance(model, nn.Module):
        raise CandidateError(f"timm returned {type(model).__name__} for {name!r}", field="arch")
    return model


def input_defaults(model: nn.Module) -> tuple[dict[str, Any], str]:
    """The ``input`` field from timm's data config for ``model``, and where it came from (for inspect).

    A model built for another image size than its pretrained config says (``img_size=...``) takes its
    own size: a ViT cannot see any other.
    """
    timm = require("timm")
    config = timm.data.resolve_data_config({}, model=model)
    _, height, width = (int(v) for v in config["input_size"])
    origin = "timm data config"
    own = _model_img_size(model)
    if own is not None and own != (height, width):
        height, width = own
        origin += f" (input size {height}x{width} from the model's img_size)"
    interpolation = str(config.get("interpolation", "bilinear"))
    if interpolation not in _INTERPOLATIONS:
        raise CandidateError(f"timm's interpolation {interpolation!r} is not one of {list(_INTERPOLATIONS)}; "
                             "give --interpolation", field="input.interpolation")
    crop_pct = float(config.get("crop_pct") or 0.875)  # timm's DEFAULT_CROP_PCT when unset
    out: dict[str, Any] = {"size": [height, width], "interpolation": interpolation,
                           "mean": [float(v) for v in config["mean"]], "std": [float(v) for v in config["std"]],
                           "pipeline": "timm"}
    mode = config.get("crop_mode") or "center"
    if mode == "squash" and crop_pct == 1.0:
        return out, origin  # Resize((H, W)) then a crop of the whole image
    if mode != "center" or height != width:
        raise CandidateError(f"timm's crop_mode {mode!r} at {height}x{width} has no xgate equivalent (a square "
                             "centre crop after a shorter-side resize); give --size and --resize", field="input")
    out["resize"] = math.floor(height / crop_pct)
    return out, f"{origin}: crop_pct {crop_pct:g}"


def _model_img_size(model: nn.Module) -> tuple[int, int] | None:
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "img_size", None)
    if getattr(embed, "dynamic_img_size", False) or not isinstance(size, tuple | list) or len(size) != 2:
        return None
    return int(size[0]), int(size[1])

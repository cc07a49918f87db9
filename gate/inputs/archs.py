"""Model architectures by name: torchvision models, xgate built-ins, import paths.

Built-ins exist so that tests and the demo can train real models in seconds on a
2-core machine; nothing here downloads weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn

from gate.errors import CandidateError
from gate.inputs.model_sources import HF_PREFIX, TIMM_PREFIX
from gate.inputs.safe_import import import_factory


def tiny_cnn(num_classes: int, width: int = 16) -> nn.Module:
    """A small 4-stage CNN (64×64 in, 8×8 at ``features``): trains in seconds on CPU."""
    w = width

    def stage(cin: int, cout: int, pool: bool) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        if pool:
            layers.append(nn.MaxPool2d(2))
        return layers

    features = nn.Sequential(
        *stage(3, w, True), *stage(w, 2 * w, True), *stage(2 * w, 4 * w, True), *stage(4 * w, 4 * w, False)
    )
    model = nn.Sequential()
    model.add_module("features", features)
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flatten", nn.Flatten())
    model.add_module("fc", nn.Linear(4 * w, num_classes))
    return model


def cifar_resnet18(num_classes: int) -> nn.Module:
    """ResNet-18 for small images: 3×3 stem, no max-pool (as in the CIFAR-100 report)."""
    from torchvision.models import resnet18

    model: nn.Module = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


BUILTINS: dict[str, Callable[..., nn.Module]] = {"tiny_cnn": tiny_cnn, "cifar_resnet18": cifar_resnet18}


def source_of(arch: str) -> str:
    """``torchvision``, ``timm``, ``transformers``, ``xgate`` (built-in) or ``import path``, from the arch string."""
    if arch.startswith(TIMM_PREFIX):
        return "timm"
    if arch.startswith(HF_PREFIX):
        return "transformers"
    if arch in BUILTINS:
        return "xgate"
    return "import path" if ":" in arch else "torchvision"


def build_model(arch: str, arch_kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Instantiate ``arch``: a built-in, a torchvision model name, ``timm:NAME``, ``transformers:CLASS`` (with
    ``config``, a packed Hugging Face folder) or ``package.module:factory``."""
    kwargs = dict(arch_kwargs or {})
    check_plain_kwargs(kwargs)
    if arch in BUILTINS:
        return _call(BUILTINS[arch], arch, kwargs)
    if arch.startswith(TIMM_PREFIX):
        from gate.inputs import timm_models

        return timm_models.build(arch, kwargs)
    if arch.startswith(HF_PREFIX):
        from gate.inputs import hf_folder

        return hf_folder.build(arch, kwargs)
    if ":" in arch:
        return _call(_import_factory(arch), arch, kwargs)
    import torchvision.models

    if arch in torchvision.models.list_models(module=torchvision.models):
        for key in ("weights", "weights_backbone"):  # never download weights, whatever the file asks
            if kwargs.get(key) is not None:
                raise CandidateError(f"{key}={kwargs[key]!r} would download weights; xgate never does",
                                     field=f"arch_kwargs.{key}")
        kwargs.setdefault("weights", None)
        return _call(torchvision.models.get_model, arch, {"name": arch, **kwargs})
    raise CandidateError(f"unknown arch {arch!r} (a torchvision model name, one of {sorted(BUILTINS)}, "
                         "timm:NAME or package.module:factory)", field="arch")


def _import_factory(arch: str) -> Callable[..., nn.Module]:
    # The checkpoint names the path; gate.inputs.safe_import decides, before importing, whether it may run.
    return import_factory(arch)


_PLAIN = (str, int, float, bool, type(None))
_MAX_KWARGS_DEPTH = 8


def check_plain_kwargs(value: Any, where: str = "arch_kwargs", depth: int = 0) -> None:
    """``arch_kwargs`` are plain JSON values (no tensors, no objects), finite numbers, bounded nesting."""
    if depth > _MAX_KWARGS_DEPTH:
        raise CandidateError(f"nested deeper than {_MAX_KWARGS_DEPTH} levels", field=where)
    if isinstance(value, float) and not math.isfinite(value):
        raise CandidateError(f"{value} is not a finite number", field=where)
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_plain_kwargs(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CandidateError(f"key {key!r} is not a string", field=where)
            check_plain_kwargs(item, f"{where}.{key}", depth + 1)
        return
    raise CandidateError(f"{type(value).__name__} is not a plain JSON value", field=where)


def checked_meta(path: str | Path, meta: Any) -> dict[str, Any]:
    """The checkpoint's ``meta``: a JSON object of plain values (finite numbers, strings, lists, objects).

    Checked at load, so that a NaN, a tensor or a tuple key is bad input naming ``meta.KEY`` here, not a
    result that cannot be written after the whole evaluation.
    """
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise CandidateError(f"'meta' must be a JSON object of plain values, not {type(meta).__name__}", path=path,
                             field="meta")
    try:
        check_plain_kwargs(meta, "meta")
    except CandidateError as exc:
        raise CandidateError(exc.message, path=path, field=exc.field) from None
    return dict(meta)


def _call(factory: Callable[..., nn.Module], arch: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise CandidateError(f"arch {arch!r} does not accept arch_kwargs {kwargs}: {exc}",
                             field="arch_kwargs") from None
    except (Exception, SystemExit) as exc:  # the factory is the repository's code: its failure is bad input
        raise CandidateError(f"arch {arch!r} failed to build the model ({type(exc).__name__}: {exc})"[:300],
                             field="arch") from None
    if not isinstance(model, nn.Module):
        raise CandidateError(f"arch {arch!r} did not return a torch.nn.Module", field="arch")
    return model


def default_target_layer(model: nn.Module) -> str:
    """The family's layer (gate.engine.layers: torchvision families, ViT, Swin), else the last ``Conv2d``."""
    from gate.engine.layers import default_layer

    return default_layer(model)

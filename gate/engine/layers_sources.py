"""Target-layer rules for timm models and Hugging Face ``transformers`` models (hooked into gate.engine.layers).

Read from module types and the model's own config, never from sizes alone:

- timm: the family's layer by model class (ResNet ``layer4``, ConvNeXt/MaxViT ``stages``, EfficientNet
  ``bn2``, RegNet ``s4``, Swin ``norm``); ViT/DeiT/EVA are found by gate.engine.layers' block rule, their
  class and register tokens from ``num_prefix_tokens``. timm's Swin stages are channels-last.
- transformers: by ``config.model_type``. ViT-style models (ViT, DeiT, BEiT, DINOv2): the last
  ``layernorm_before``, patch size from the config, prefix tokens from the class (+ distillation or
  register) tokens; Swin: the final ``layernorm`` over a ``H/(p·2^(stages-1))`` token grid; ConvNeXt,
  ResNet, RegNet: the last encoder stage; EfficientNet: ``top_activation``; MobileViT: ``conv_1x1_exp``.

No import of timm or transformers here: models are told apart by their class's module.
"""

from __future__ import annotations

import math
import re

from torch import nn

# model_type -> class/distillation tokens before the patches (registers are added from the config)
HF_PREFIX_TOKENS = {"vit": 1, "deit": 2, "beit": 1, "data2vec-vision": 1, "dinov2": 1, "dinov2_with_registers": 1}
HF_SWIN = ("swin", "swinv2", "donut-swin")
HF_STAGES = ("convnext", "convnextv2", "resnet", "regnet")
TIMM_LAYERS = {"ResNet": "layer4", "ConvNeXt": "stages", "MaxxVit": "stages", "EfficientNet": "bn2",
               "RegNet": "s4", "SwinTransformer": "norm"}
TIMM_CHANNELS_LAST = ("SwinTransformerStage", "SwinTransformerBlock", "PatchMerging")


def library(model: nn.Module) -> str:
    """``timm``, ``transformers`` or ``""``: the library the model's class comes from."""
    module = type(model).__module__
    for name in ("timm", "transformers"):
        if module == name or module.startswith(f"{name}."):
            return name
    return ""


def _model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    value = getattr(config, "model_type", "")
    return value if isinstance(value, str) else ""


def patch_size(model: nn.Module) -> tuple[int, int] | None:
    """A transformers ViT-style or Swin model's patch size, from its config."""
    if library(model) != "transformers" or _model_type(model) not in (*HF_PREFIX_TOKENS, *HF_SWIN):
        return None
    size = getattr(model.config, "patch_size", None)
    if isinstance(size, int):
        return (size, size)
    if isinstance(size, tuple | list) and len(size) == 2:
        return (int(size[0]), int(size[1]))
    return None


def prefix_tokens(model: nn.Module) -> int | None:
    """Tokens before the patch grid: timm's ``num_prefix_tokens``; transformers' from the model type."""
    declared = getattr(model, "num_prefix_tokens", None)
    if isinstance(declared, int):
        return declared
    kind = _model_type(model)
    if library(model) != "transformers" or kind not in HF_PREFIX_TOKENS:
        return 0 if kind in HF_SWIN else None
    registers = getattr(model.config, "num_register_tokens", 0)
    return HF_PREFIX_TOKENS[kind] + (registers if isinstance(registers, int) else 0)


def token_grid(model: nn.Module, name: str, input_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The token grid of layer ``name`` in a transformers Swin: the patch grid halved once per merge before it."""
    if library(model) != "transformers" or _model_type(model) not in HF_SWIN:
        return None
    patch = patch_size(model)
    depths = getattr(model.config, "depths", None)
    if patch is None or not isinstance(depths, list | tuple):
        return None
    match = re.search(r"encoder\.layers\.(\d+)(\.downsample)?", name)
    merges = len(depths) - 1 if match is None else int(match.group(1)) + (1 if match.group(2) else 0)
    rows, cols = math.ceil(input_shape[-2] / patch[0]), math.ceil(input_shape[-1] / patch[1])
    for _ in range(merges):
        rows, cols = math.ceil(rows / 2), math.ceil(cols / 2)
    return rows, cols


def channels_last(module: nn.Module) -> bool | None:
    """True for timm's Swin stages and blocks ([B, H, W, C]); None: this rule does not say."""
    if library(module) == "timm" and type(module).__name__ in TIMM_CHANNELS_LAST:
        return True
    return None


def default_layer(model: nn.Module) -> str | None:
    """The family's layer of a timm or transformers model; None: gate.engine.layers' generic rules decide."""
    names = [name for name, _ in model.named_modules()]
    if library(model) == "timm":
        layer = TIMM_LAYERS.get(type(model).__name__)
        return layer if layer in names else None
    if library(model) != "transformers":
        return None
    kind = _model_type(model)
    if kind in HF_PREFIX_TOKENS:
        return _last(names, r".*\.layernorm_before")
    if kind in HF_SWIN:
        return _last(names, r"[^.]+\.layernorm")
    if kind in HF_STAGES:
        return _last(names, r"[^.]+\.encoder\.stages\.\d+")
    if kind == "efficientnet":
        return _last(names, r"[^.]+\.encoder\.top_activation")
    if kind == "mobilevit":
        return _last(names, r"[^.]+\.conv_1x1_exp")
    return None


def _last(names: list[str], pattern: str) -> str | None:
    matching = [name for name in names if re.fullmatch(pattern, name)]
    return matching[-1] if matching else None

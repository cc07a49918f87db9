"""Target layers: the layout of a layer's output, a default layer per family, and a listing.

A Grad-CAM map needs a grid. Three layouts give one:

- ``spatial``: ``[B, C, H, W]``, what CNNs produce;
- ``tokens``: ``[B, P + h*w, C]``, ViT-style: P class/register tokens first (dropped), then the
  patch tokens row by row; the grid comes from the model's patch size and the input size;
- ``channels_last``: ``[B, H, W, C]``, Swin-style (torchvision's Swin keeps its stages channels-last).

The layout is read from the model and the layer (module types, a ``Permute`` next to the layer, the
model's patch size), never guessed from sizes alone: a 4-D output is channels-last only on evidence
from the modules, and tokens need the model's patch size; anything else is an input error that says
which layer to name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gate.engine import layers_sources
from gate.errors import CandidateError

SPATIAL = "spatial"
TOKENS = "tokens"
CHANNELS_LAST = "channels_last"
LAYOUT_SHAPES: dict[str, str] = {SPATIAL: "[B, C, H, W]", TOKENS: "[B, P+h*w, C]", CHANNELS_LAST: "[B, H, W, C]"}

# Known target layers by name for models outside the torchvision families (e.g. xgate's tiny_cnn).
NAMED_DEFAULTS: tuple[str, ...] = ("layer4", "features", "features.denseblock4", "trunk_output")


@dataclass(frozen=True)
class Layout:
    """How a layer's output holds its grid; ``prefix`` and ``grid`` are for tokens only."""

    kind: str
    prefix: int = 0  # leading class/register tokens
    grid: tuple[int, int] = (0, 0)  # patch rows and columns

    def to_grid(self, x: Tensor) -> Tensor:
        """The activation (or its gradient) as ``[B, C, h, w]``: a view, differentiable."""
        if self.kind == CHANNELS_LAST:
            return x.permute(0, 3, 1, 2)
        if self.kind == TOKENS:
            rows, cols = self.grid
            patches = x[:, self.prefix :, :]
            return patches.reshape(x.shape[0], rows, cols, x.shape[2]).permute(0, 3, 1, 2)
        return x

    def describe(self) -> str:
        """``spatial [B, C, H, W]``-style label for outputs and listings."""
        if self.kind == TOKENS:
            return f"tokens [B, {self.prefix}+{self.grid[0]}x{self.grid[1]}, C]"
        return f"{self.kind} {LAYOUT_SHAPES[self.kind]}"


# ----------------------------------------------------------------------------------------------- layouts


def layout_of(model: nn.Module, name: str, output: object, input_shape: tuple[int, ...]) -> Layout:
    """The layout of layer ``name``'s ``output`` for an input batch of ``input_shape`` [B, 3, H, W].

    Raises CandidateError (field target_layer) when the output gives no map or its layout cannot be known.
    """
    if not isinstance(output, Tensor):
        raise _no_map(name, f"it outputs a {type(output).__name__}, not a tensor")
    if output.dim() == 4:
        if output.shape[0] != input_shape[0]:
            raise _no_map(name, f"its output {list(output.shape)} does not start with the batch size")
        return Layout(CHANNELS_LAST) if is_channels_last(model, name) else Layout(SPATIAL)
    if output.dim() == 3:
        return _token_layout(model, name, tuple(output.shape), input_shape)
    raise _no_map(name, f"its output {list(output.shape)} has no spatial or token grid")


def _no_map(name: str, why: str) -> CandidateError:
    return CandidateError(
        f"target layer {name!r} gives no Grad-CAM map: {why}; name a layer with a [B, C, H, W], "
        "ViT token or channels-last output (`xgate layers CANDIDATE` lists them)", field="target_layer")


def patch_size(model: nn.Module) -> tuple[int, int] | None:
    """Pixels per token of a ViT-style model (``patch_size``, ``patch_embed`` or ``conv_proj``), else None."""
    for owner in (model, getattr(model, "patch_embed", None)):
        size = getattr(owner, "patch_size", None)
        if isinstance(size, int):
            return (size, size)
        if isinstance(size, tuple | list) and len(size) == 2 and all(isinstance(v, int) for v in size):
            return (int(size[0]), int(size[1]))
    modules = dict(model.named_modules())
    for name in ("conv_proj", "patch_embed.proj", "patch_embed"):
        conv = modules.get(name)
        if isinstance(conv, nn.Conv2d) and conv.kernel_size == conv.stride:
            return (int(conv.stride[0]), int(conv.stride[1]))
    return layers_sources.patch_size(model)  # transformers: from the config


def _token_layout(model: nn.Module, name: str, shape: tuple[int, ...], input_shape: tuple[int, ...]) -> Layout:
    patch = patch_size(model)
    if patch is None:
        raise _no_map(name, f"it outputs tokens {list(shape)} but the model shows no patch size "
                            "(patch_size, patch_embed or conv_proj) to lay them on a grid")
    if shape[0] != input_shape[0]:
        raise _no_map(name, f"its output {list(shape)} is not batch-first [B, N, C]")
    grid = layers_sources.token_grid(model, name, input_shape) or (
        int(input_shape[-2]) // patch[0], int(input_shape[-1]) // patch[1])
    declared = layers_sources.prefix_tokens(model)  # timm's num_prefix_tokens, transformers' by model type
    prefix = declared if isinstance(declared, int) else shape[1] - grid[0] * grid[1]
    if prefix < 0 or shape[1] != prefix + grid[0] * grid[1]:
        raise _no_map(name, f"its {shape[1]} tokens do not hold the {grid[0]}x{grid[1]} patch grid of a "
                            f"{input_shape[-2]}x{input_shape[-1]} input with {patch[0]}x{patch[1]} patches")
    return Layout(TOKENS, prefix=prefix, grid=grid)


def _swin_types() -> tuple[type[nn.Module], ...]:
    from torchvision.models import swin_transformer as swin

    return (swin.SwinTransformerBlock, swin.SwinTransformerBlockV2, swin.PatchMerging, swin.PatchMergingV2)


def _passes_layout_through(module: nn.Module) -> bool:
    """Element-wise modules: their output has their input's layout."""
    from torchvision.ops import StochasticDepth

    elementwise = (nn.Identity, nn.Dropout, nn.Dropout2d, nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish,
                   nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.Mish, nn.ELU, StochasticDepth)
    return isinstance(module, elementwise)


def _evidence(module: nn.Module) -> bool | None:
    """True: this module's 4-D output is channels-last; False: channels-first; None: it does not say."""
    from torchvision.ops.misc import Permute

    if isinstance(module, _swin_types()) or layers_sources.channels_last(module):
        return True
    if isinstance(module, Permute):
        dims = list(module.dims)
        return True if dims == [0, 2, 3, 1] else False if dims == [0, 3, 1, 2] else None
    if isinstance(module, nn.LayerNorm) and type(module).forward is nn.LayerNorm.forward:
        # nn.LayerNorm normalises the last dim; subclasses that override forward (ConvNeXt's LayerNorm2d
        # permutes around it) keep [B, C, H, W].
        return True if len(module.normalized_shape) == 1 else None
    if isinstance(module, nn.Linear):
        return True  # a Linear on a 4-D tensor mixes its last dim: channels-last
    if isinstance(module, nn.Conv2d | nn.BatchNorm2d | nn.GroupNorm | nn.MaxPool2d | nn.AvgPool2d
                  | nn.AdaptiveAvgPool2d | nn.AdaptiveMaxPool2d | nn.LayerNorm):
        return False
    if isinstance(module, nn.Sequential):  # its output is its last child's, by definition
        for child in reversed(list(module)):
            said = _evidence(child)
            if said is not None or not _passes_layout_through(child):
                return said
    return None


def is_channels_last(model: nn.Module, name: str) -> bool:
    """Whether layer ``name``'s 4-D output is ``[B, H, W, C]``, from module types alone.

    Evidence, in order: the module itself (a Swin block or patch merging, ``nn.LayerNorm``, ``nn.Linear``,
    a ``Permute``, or a Sequential ending in one); for an element-wise module in a Sequential, the
    siblings before it; a ``Permute([0, 3, 1, 2])`` right after it. Without evidence: ``[B, C, H, W]``.
    """
    modules = dict(model.named_modules())
    module = modules[name]
    said = _evidence(module)
    if said is not None:
        return said
    parent_name, _, child_name = name.rpartition(".")
    parent = modules.get(parent_name)
    if not isinstance(parent, nn.Sequential):
        return False
    siblings = list(parent.named_children())
    position = [n for n, _ in siblings].index(child_name)
    if _passes_layout_through(module):
        for _, before in reversed(siblings[:position]):
            said = _evidence(before)
            if said is not None:
                return said
            if not _passes_layout_through(before):
                break  # an unknown module before: what follows may still tell
    from torchvision.ops.misc import Permute

    after = siblings[position + 1][1] if position + 1 < len(siblings) else None
    return isinstance(after, Permute) and list(after.dims) == [0, 3, 1, 2]


def expected_layout(model: nn.Module, name: str) -> str:
    """The layout layer ``name`` will have, from module types only (no forward): for result.json and reports.

    ``layout_of`` decides at run time from the same evidence plus the output's rank; the two agree on the
    torchvision families (tested). In a model with a patch size, layers past the patch embedding are tokens.
    """
    if patch_size(model) is not None:
        module = dict(model.named_modules())[name]
        grid_modules = (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
        if isinstance(module, grid_modules) or (isinstance(module, nn.Sequential) and _evidence(module) is False):
            return SPATIAL  # the patch embedding itself (a Conv2d, or a conv stem ending in one)
        return TOKENS
    return CHANNELS_LAST if is_channels_last(model, name) else SPATIAL


# ---------------------------------------------------------------------------------------------- defaults


def _family_layer(model: nn.Module) -> str | None:
    """The default layer of a torchvision family: the last block that still has a grid."""
    from torchvision import models

    by_class: tuple[tuple[type[nn.Module], str], ...] = (
        (models.ResNet, "layer4"),  # resnet, resnext, wide_resnet
        (models.DenseNet, "features"),  # ends in norm5; forward's F.relu(inplace=True) follows (hooks survive)
        (models.MobileNetV2, "features"), (models.MobileNetV3, "features"), (models.EfficientNet, "features"),
        (models.ConvNeXt, "features"), (models.VGG, "features"), (models.AlexNet, "features"),
        (models.SqueezeNet, "features"), (models.RegNet, "trunk_output"), (models.ShuffleNetV2, "conv5"),
        (models.MNASNet, "layers"), (models.GoogLeNet, "inception5b"), (models.Inception3, "Mixed_7c"),
        (models.SwinTransformer, "features"),  # channels-last [B, H, W, C]
    )
    for cls, layer in by_class:
        if isinstance(model, cls):
            return layer
    if isinstance(model, models.MaxVit):
        return f"blocks.{len(model.blocks) - 1}"
    return _transformer_layer(model)


def _transformer_layer(model: nn.Module) -> str | None:
    """ViT-style: the pre-attention norm of the last block, as pytorch-grad-cam's ViT example (blocks[-1].norm1).

    After the last attention only the class token reaches the head, so later token layers give zero maps.
    """
    if patch_size(model) is None:
        return None
    from torchvision.models.vision_transformer import EncoderBlock

    last: str | None = None
    for name, module in model.named_modules():
        if isinstance(module, EncoderBlock):
            last = f"{name}.ln_1"
        elif isinstance(module, nn.TransformerEncoderLayer) and module.norm_first:
            last = f"{name}.norm1"
        elif type(module).__name__.endswith("Block") and isinstance(getattr(module, "norm1", None), nn.LayerNorm):
            last = f"{name}.norm1"  # timm-style pre-norm blocks
    return last


def default_layer(model: nn.Module) -> str:
    """The family's layer (timm, transformers: gate.engine.layers_sources), else a known name, else the last Conv2d."""
    family = layers_sources.default_layer(model) or _family_layer(model)
    if family is not None:
        return family
    names = dict(model.named_modules())
    for name in NAMED_DEFAULTS:
        if name in names:
            return name
    convs: list[str] = [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise CandidateError("model has no Conv2d layer to explain; give target_layer", field="target_layer")
    return convs[-1]


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The module called ``name``; an unknown name is an input error listing close matches."""
    modules: dict[str, nn.Module] = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else "; `xgate layers CANDIDATE` lists them"
    raise CandidateError(f"model has no layer {name!r}{hint}", field="target_layer")


# ----------------------------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class LayerRow:
    """One module in a listing: its output shape and layout (None: no map, ``note`` says why)."""

    name: str
    module: str
    shape: tuple[int, ...] | None
    layout: Layout | None
    note: str = ""
    calls: int = 1

    @property
    def gives_map(self) -> bool:
        """True when Grad-CAM at this layer has a grid the gradient can reach."""
        return self.layout is not None and not self.note


def list_layers(model: nn.Module, input_size: tuple[int, int]) -> list[LayerRow]:
    """Run one forward on a sample batch [2, 3, H, W] and describe every module's output, in call order."""
    seen: dict[str, tuple[object, int]] = {}
    order: list[str] = []

    def record(name: str) -> object:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            calls = seen[name][1] + 1 if name in seen else 1
            seen[name] = (_shape_only(output), calls)  # a later call replaces an earlier one (as in explain)
            if name in order:
                order.remove(name)
            order.append(name)

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules() if n]
    was_training = model.training
    sample = torch.randn(2, 3, *input_size, generator=torch.Generator().manual_seed(0))
    try:
        model.eval()
        with torch.no_grad():
            model(sample.to(_device_of(model)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    modules = dict(model.named_modules())
    last_attention = max((order.index(n) for n in order if _is_attention(modules[n])), default=-1)
    return [_row(model, name, modules[name], *seen[name], tuple(sample.shape), order.index(name) > last_attention)
            for name in order]


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _shape_only(output: object) -> object:
    # Keep a meta tensor: the shape is all a listing needs, and real activations would pile up in memory.
    return output.to("meta") if isinstance(output, Tensor) else output


def _is_attention(module: nn.Module) -> bool:
    return isinstance(module, nn.MultiheadAttention) or "Attention" in type(module).__name__


def _row(model: nn.Module, name: str, module: nn.Module, output: object, calls: int,
         input_shape: tuple[int, ...], after_attention: bool) -> LayerRow:
    shape = tuple(output.shape) if isinstance(output, Tensor) else None
    try:
        layout = layout_of(model, name, output, input_shape)
    except CandidateError as exc:
        why = exc.message.split(": ", 1)[-1].split("; name a layer")[0]
        return LayerRow(name, type(module).__name__, shape, None, why, calls)
    note = ""
    if layout.kind == TOKENS and layout.prefix and after_attention:
        note = "after the last attention only the class token reaches the head: zero map"
    return LayerRow(name, type(module).__name__, shape, layout, note, calls)


def check_layer(rows: list[LayerRow], name: str) -> LayerRow:
    """The row of ``name`` when it gives a map; else an input error listing close matches that do."""
    by_name = {row.name: row for row in rows}
    row = by_name.get(name)
    if row is not None and row.gives_map:
        return row
    candidates = [r.name for r in rows if r.gives_map]
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.5)
    hint = f"; close matches that give a map: {', '.join(close)}" if close else ""
    if row is None:
        raise CandidateError(f"model has no layer {name!r} (or it does not run){hint}", field="target_layer")
    raise CandidateError(f"layer {name!r} gives no map ({row.note}){hint}", field="target_layer")


def listing_lines(rows: list[LayerRow], default: str, chosen: str | None = None, maps_only: bool = False) -> list[str]:
    """A plain-text table of ``rows`` (batch shown as B), marking the default and the chosen layer."""
    shown = [row for row in rows if row.gives_map or not maps_only]
    table = [("layer", "module", "output", "map")]
    for row in shown:
        shape = "[B, " + ", ".join(str(v) for v in row.shape[1:]) + "]" if row.shape else "(not a tensor)"
        kind = _short(row.layout) if row.gives_map and row.layout is not None else f"- ({row.note})"
        marks = [mark for mark, name in (("default", default), ("chosen", chosen)) if name == row.name]
        calls = f" (called {row.calls}x: the last call)" if row.calls > 1 and row.gives_map else ""
        table.append((row.name, row.module, shape, kind + calls + (f"  <- {', '.join(marks)}" if marks else "")))
    widths = [max(len(cells[i]) for cells in table) for i in range(3)]
    return ["  ".join(cell.ljust(width) for cell, width in zip(cells[:3], widths, strict=True)) + "  " + cells[3]
            for cells in table]


def _short(layout: Layout) -> str:
    if layout.kind == TOKENS:
        return f"tokens ({layout.prefix}+{layout.grid[0]}x{layout.grid[1]})"
    return layout.kind

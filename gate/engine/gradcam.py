"""Grad-CAM in one forward: logits and maps of the predicted class together.

Parameters are frozen and a forward hook hands the rest of the network a
detached copy of the target layer's output that requires grad, so autograd
differentiates only the head above the target layer; the backbone runs like
inference (about 1× a plain forward, against ~3× for a full backward). The same
holds for transformers: the token activations are hooked alike and only laid on
their grid after the gradient is taken.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gate.engine.layers import SPATIAL, Layout, find_layer, layout_of
from gate.errors import CandidateError


@dataclass(frozen=True)
class Explained:
    """Logits [B, C] and ReLU'd Grad-CAM maps [B, h, w] on the target layer's grid."""

    logits: Tensor
    cam: Tensor
    target: Tensor  # class index each map explains, [B]
    layout: Layout = Layout(SPATIAL)  # how the target layer's output held its grid


@dataclass
class Capture:
    """What the hook saw: the activation leaf of the layer's last call, and how often it was called."""

    activation: Tensor | None = None
    calls: int = 0
    other: object = None  # the last non-tensor output (a tuple from attention), for the error message


@contextmanager
def hooked(model: nn.Module, layer_name: str) -> Iterator[Capture]:
    """Freeze parameters, eval mode, hook ``layer_name``; restore flags, mode and hooks on exit, even on error.

    A module called more than once per forward (a shared ReLU) is explained at its LAST call, the one
    nearest the head: each call's output is cut from the graph below, and the last one is kept.
    """
    layer = find_layer(model, layer_name)
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    capture = Capture()

    def keep_activation(_module: nn.Module, _inputs: object, output: object) -> object:
        if not isinstance(output, Tensor):
            capture.other = output  # explain() refuses it, naming the layer and what it gave
            return output
        leaf = output.detach().requires_grad_(True)
        capture.activation = leaf
        capture.calls += 1
        # A clone goes on, so later in-place ops (DenseNet's F.relu(inplace=True)) cannot touch the leaf;
        # clone keeps the memory format (channels_last stays channels_last).
        return leaf.clone()

    handle = layer.register_forward_hook(keep_activation)
    try:
        for param in model.parameters():
            param.requires_grad_(False)
        model.eval()
        yield capture
    finally:
        handle.remove()
        for param, flag in zip(model.parameters(), flags, strict=True):
            param.requires_grad_(flag)
        model.train(was_training)


def explain(
    model: nn.Module, layer_name: str, inputs: Tensor, target: Tensor | None = None, layout: Layout | None = None
) -> Explained:
    """One forward: logits and the Grad-CAM of ``target`` (default: the predicted class) per sample.

    The layer's output may be spatial, ViT tokens or channels-last (gate.engine.layers); the map is computed on
    its grid, with class/register tokens dropped. ``layout``: the layer's layout when known (a randomised
    copy's tail, whose input is an activation, not the images the layout is read against).
    """
    with hooked(model, layer_name) as capture, torch.enable_grad():
        logits = model(inputs)
        output = capture.activation
        if output is None and capture.other is not None:
            layout_of(model, layer_name, capture.other, tuple(inputs.shape))  # raises: not a tensor
        if output is None:
            layer = find_layer(model, layer_name)
            raise CandidateError(f"target layer {layer_name!r} ({type(layer).__name__}) did not run in the "
                                 "forward", field="target_layer")
        if layout is None:
            layout = layout_of(model, layer_name, output, tuple(inputs.shape))
        chosen = logits.argmax(1) if target is None else target.to(logits.device)
        # Summing over the batch is exact in eval mode: no op mixes samples.
        objective = logits.gather(1, chosen[:, None]).sum()
        (grads,) = torch.autograd.grad(objective, output, allow_unused=True)
    if grads is None:
        raise CandidateError(f"target layer {layer_name!r} does not feed the logits", field="target_layer")
    # The map in float32 whatever the forward ran in: under bf16 autocast the layer's output and its
    # gradient are bf16, and averaging and summing C channels in 8 bits of mantissa loses the map.
    activation = layout.to_grid(output.detach()).float()
    grads = layout.to_grid(grads).float()
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(1))
    return Explained(logits=logits.detach(), cam=cam, target=chosen, layout=layout)


def upsample(cam: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of maps [B, h, w] to ``size`` (never min-subtracted or normalised)."""
    if tuple(cam.shape[-2:]) == tuple(size):
        return cam
    return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].clamp_min(0)

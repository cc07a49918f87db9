"""Grad-CAM in one forward: logits and maps of the predicted class together.

Parameters are frozen and a forward hook hands the rest of the network a
detached copy of the target layer's output that requires grad, so autograd
differentiates only the head above the target layer; the backbone runs like
inference (about 1× a plain forward, against ~3× for a full backward).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gate.errors import CandidateError


@dataclass(frozen=True)
class Explained:
    """Logits [B, C] and ReLU'd Grad-CAM maps [B, h, w] at the target layer's resolution."""

    logits: Tensor
    cam: Tensor
    target: Tensor  # class index each map explains, [B]


@contextmanager
def hooked(model: nn.Module, layer_name: str) -> Iterator[dict[str, Tensor]]:
    """Freeze parameters, eval mode, hook ``layer_name``; restore flags, mode and hooks on exit, even on error."""
    layers = dict(model.named_modules())
    if layer_name not in layers:
        raise CandidateError(f"model has no layer {layer_name!r}", field="target_layer")
    flags = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    store: dict[str, Tensor] = {}

    def keep_activation(_module: nn.Module, _inputs: object, output: object) -> Tensor:
        if not isinstance(output, Tensor) or output.dim() != 4:
            raise CandidateError(f"target layer {layer_name!r} must output a [B, C, H, W] tensor",
                                 field="target_layer")
        leaf = output.detach().requires_grad_(True)
        store["activation"] = leaf
        return leaf.clone()  # later in-place ops (ReLU(inplace=True)) must not touch the leaf

    handle = layers[layer_name].register_forward_hook(keep_activation)
    try:
        for param in model.parameters():
            param.requires_grad_(False)
        model.eval()
        yield store
    finally:
        handle.remove()
        for param, flag in zip(model.parameters(), flags, strict=True):
            param.requires_grad_(flag)
        model.train(was_training)


def explain(model: nn.Module, layer_name: str, inputs: Tensor, target: Tensor | None = None) -> Explained:
    """One forward: logits and the Grad-CAM of ``target`` (default: the predicted class) per sample."""
    with hooked(model, layer_name) as store, torch.enable_grad():
        logits = model(inputs)
        activation = store["activation"]
        chosen = logits.argmax(1) if target is None else target.to(logits.device)
        # Summing over the batch is exact in eval mode: no op mixes samples.
        objective = logits.gather(1, chosen[:, None]).sum()
        (grads,) = torch.autograd.grad(objective, activation)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation.detach()).sum(1))
    return Explained(logits=logits.detach(), cam=cam, target=chosen)


def upsample(cam: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of maps [B, h, w] to ``size`` (never min-subtracted or normalised)."""
    if tuple(cam.shape[-2:]) == tuple(size):
        return cam
    return F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0].clamp_min(0)

"""Grad-CAM cost: ours (one forward, head-only autograd) vs a plain forward, captum and pytorch-grad-cam.

Models: resnet18 and resnet50 (``layer4``) and vit_b_16 (tokens at the last block's ln_1; pytorch-grad-cam
with its reshape_transform), random weights, each at its default target layer.

Run by hand (`make benchmarks`); write the printed table into benchmarks/RESULTS.md with the machine and
date. Ratios are measured in one run, so they hold across machines better than absolute times.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from gate.engine import layers
from gate.engine.gradcam import explain
from gate.inputs.archs import build_model


def timed(call: Callable[[], object]) -> float:
    """Wall seconds of one call (CUDA synchronised)."""
    start = time.perf_counter()
    call()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def best_of(repeats: int, call: Callable[[], object]) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    call()
    return statistics.median(timed(call) for _ in range(repeats))


def interleaved(repeats: int, calls: dict[str, Callable[[], object]],
                warmups: int = 2) -> dict[str, float]:
    """Median seconds per call, the calls taken in turn (A B C A B C ...) after ``warmups`` of each.

    Timing one method's repeats back to back and the next method's after them charges the first
    method with the process's warm-up (oneDNN primitive caches, allocator growth): on resnet50 the
    first no-grad forwards ran 16% slower than the same forwards a minute later. Warming every call
    and taking them in turn spreads any drift evenly over the methods.
    """
    for call in calls.values():
        for _ in range(warmups):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            times[name].append(timed(call))
    return {name: statistics.median(values) for name, values in times.items()}


def _reshape(model: torch.nn.Module, layout: layers.Layout) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """pytorch-grad-cam's reshape_transform for the layer's layout (None for [B, C, H, W])."""
    if layout.kind == layers.SPATIAL:
        return None
    return layout.to_grid


def time_model(arch: str, batch_size: int, size: int, repeats: int,
               device: str) -> tuple[str, dict[str, float | None]]:
    """The default target layer and seconds per method there (None: the method does not apply)."""
    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM

    torch.manual_seed(0)
    kwargs: dict[str, object] = {"num_classes": 1000}
    if arch.startswith("vit_"):
        kwargs["image_size"] = size  # torchvision's ViT is built for one input size
    model = build_model(arch, kwargs).eval().to(device)
    layer_name = layers.default_layer(model)
    layer = dict(model.named_modules())[layer_name]
    batch = torch.randn(batch_size, 3, size, size, device=device)
    with torch.no_grad():
        targets = model(batch).argmax(1)
    layout = explain(model, layer_name, batch[:1]).layout

    def plain() -> object:
        with torch.no_grad():
            return model(batch)

    def captum() -> object:
        return LayerGradCam(model, layer).attribute(batch, target=targets, relu_attributions=True)

    def grad_cam() -> object:
        with GradCAM(model=model, target_layers=[layer], reshape_transform=_reshape(model, layout)) as cam:
            return cam(input_tensor=batch, targets=None)

    calls: dict[str, Callable[[], object]] = {
        "plain forward (no_grad)": plain,
        "xgate explain (logits + maps)": lambda: explain(model, layer_name, batch),
        "pytorch-grad-cam GradCAM": grad_cam,
    }
    # captum's LayerGradCam averages gradients over every dim after the 2nd: not Grad-CAM on tokens
    if layout.kind == layers.SPATIAL:
        calls["captum LayerGradCam"] = captum
    seconds = interleaved(repeats, calls)
    order = ("plain forward (no_grad)", "xgate explain (logits + maps)", "captum LayerGradCam",
             "pytorch-grad-cam GradCAM")
    return layer_name, {name: seconds.get(name) for name in order}


def main() -> None:
    """Time each method on one batch per model and print ratios to the plain forward."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="resnet18,resnet50,vit_b_16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    print(f"{args.batch}×{args.size}², {args.device}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, threads {torch.get_num_threads()}, median of {args.repeats}, "
          "methods interleaved after 2 warm-ups each")
    print("| model (layer) | method | seconds | × plain forward | × xgate |")
    print("|---|---|---|---|---|")
    for arch in args.models.split(","):
        layer_name, timings = time_model(arch, args.batch, args.size, args.repeats, args.device)
        label = f"{arch} (`{layer_name}`)"
        base = timings["plain forward (no_grad)"]
        ours = timings["xgate explain (logits + maps)"]
        assert base is not None and ours is not None
        for name, seconds in timings.items():
            if seconds is None:
                print(f"| {label} | {name} | n/a | | |")
            else:
                print(f"| {label} | {name} | {seconds:.3f} | {seconds / base:.2f} | {seconds / ours:.2f} |")


if __name__ == "__main__":
    main()

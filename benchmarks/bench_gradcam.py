"""Grad-CAM cost: ours (one forward, head-only autograd) vs a plain forward, captum and pytorch-grad-cam.

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
from torchvision.models import resnet18

from gate.gradcam import explain


def best_of(repeats: int, call: Callable[[], object]) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    """Time each method on one batch and print ratios to the plain forward."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    from captum.attr import LayerGradCam
    from pytorch_grad_cam import GradCAM

    torch.manual_seed(0)
    model = resnet18(weights=None, num_classes=1000).eval().to(args.device)
    batch = torch.randn(args.batch, 3, args.size, args.size, device=args.device)
    targets = model(batch).argmax(1)

    def plain() -> object:
        with torch.no_grad():
            return model(batch)

    def captum() -> object:
        return LayerGradCam(model, model.layer4).attribute(batch, target=targets, relu_attributions=True)

    def grad_cam() -> object:
        with GradCAM(model=model, target_layers=[model.layer4]) as cam:
            return cam(input_tensor=batch, targets=None)

    timings = {
        "plain forward (no_grad)": best_of(args.repeats, plain),
        "xgate explain (logits + maps)": best_of(args.repeats, lambda: explain(model, "layer4", batch)),
        "captum LayerGradCam": best_of(args.repeats, captum),
        "pytorch-grad-cam GradCAM": best_of(args.repeats, grad_cam),
    }
    base = timings["plain forward (no_grad)"]
    ours = timings["xgate explain (logits + maps)"]
    print(f"ResNet-18, {args.batch}×{args.size}², {args.device}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, threads {torch.get_num_threads()}, median of {args.repeats}")
    print("| method | seconds | × plain forward | × xgate |")
    print("|---|---|---|---|")
    for name, seconds in timings.items():
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f} | {seconds / ours:.2f} |")


if __name__ == "__main__":
    main()

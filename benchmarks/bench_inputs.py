"""Input costs: JPEG decode + the model's preprocessing per image vs a ResNet-50 forward, and the size of
the report of a 1000-class model.

Run by hand (`make benchmarks`); write the printed tables into benchmarks/RESULTS.md with the machine and
date. Both sides of each ratio are measured in the same process, so ratios hold across machines better
than absolute times.

1. Decode + preprocess: generated JPEG photos of common camera-export sizes, read the way the gate reads
   them (``gate.inputs.images.read_rgb``: EXIF, modes) and brought into the model's frame
   (``gate.inputs.preprocess``: shorter side 256, centre crop 224, bilinear, antialias), then normalised;
   the same with the mask (nearest). Against ResNet-50 (random weights) forwards of 224x224 batches.
2. Report size: a randomly initialised 1000-class tiny_cnn gated (with background probes) on a review set
   that covers all 1000 classes, and on one that covers 30 of them.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_gradcam import best_of  # run as a script: benchmarks/ is on sys.path
from PIL import Image

PHOTO_SIZES = ((640, 480), (480, 640), (1024, 768), (800, 533), (500, 375), (1280, 960))


def write_photos(folder: Path, count: int) -> list[tuple[Path, Path]]:
    """JPEG 'photos' (smooth content plus sensor-like noise, quality 90) and PNG masks of the same size."""
    rng = np.random.default_rng(0)
    pairs = []
    for index in range(count):
        width, height = PHOTO_SIZES[index % len(PHOTO_SIZES)]
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
        pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        image, mask = folder / f"{index:03d}.jpg", folder / f"{index:03d}.png"
        Image.fromarray(pixels).save(image, quality=90)
        disc = np.zeros((height, width), dtype=np.uint8)
        disc[height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 255
        Image.fromarray(disc).save(mask)
        pairs.append((image, mask))
    return pairs


def bench_preprocess(count: int, repeats: int, batch: int, device: str) -> dict[str, float]:
    """Seconds per image: decode, decode + preprocess, + mask; and one ResNet-50 forward per image."""
    from torchvision.models import resnet50

    from gate.inputs.images import read_mask, read_rgb
    from gate.inputs.preprocess import Geometry, image_to_frame, mask_to_frame

    geometry = Geometry(size=(224, 224), resize=256, interpolation="bilinear")
    mean = torch.tensor((0.485, 0.456, 0.406))[:, None, None]
    std = torch.tensor((0.229, 0.224, 0.225))[:, None, None]
    with tempfile.TemporaryDirectory() as tmp:
        pairs = write_photos(Path(tmp), count)

        def decode() -> object:
            return [read_rgb(image) for image, _ in pairs]

        def decode_preprocess() -> object:
            return [(image_to_frame(read_rgb(image), geometry) - mean) / std for image, _ in pairs]

        def with_masks() -> object:
            return [((image_to_frame(read_rgb(image), geometry) - mean) / std,
                     mask_to_frame(read_mask(mask), geometry)) for image, mask in pairs]

        times = {"decode": best_of(repeats, decode) / count,
                 "decode + preprocess": best_of(repeats, decode_preprocess) / count,
                 "decode + preprocess + mask": best_of(repeats, with_masks) / count}
    torch.manual_seed(0)
    model = resnet50(weights=None).eval().to(device)
    inputs = torch.randn(batch, 3, 224, 224, device=device)

    def forward() -> object:
        with torch.no_grad():
            return model(inputs)

    times[f"ResNet-50 forward (batch {batch})"] = best_of(repeats, forward) / batch
    return times


def bench_report(listed: int, per_class: int, device: str) -> dict[str, float]:
    """Gate a random 1000-class tiny_cnn on a review set covering ``listed`` classes; report size and time."""
    import yaml

    import gate
    from gate.inputs import candidate
    from gate.inputs.archs import tiny_cnn
    from gate.inputs.review_set import build
    from gate.outputs.report import render_report

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for k in range(listed):
            name = f"c{k * (1000 // listed):04d}"
            for folder in ("images", "masks"):
                (root / "plain" / folder / name).mkdir(parents=True)
            for j in range(per_class):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    root / "plain" / "images" / name / f"{j}.png")
                disc = np.zeros((32, 32), dtype=np.uint8)
                disc[8:24, 8:24] = 255
                Image.fromarray(disc).save(root / "plain" / "masks" / name / f"{j}.png")
        pinned = build(root / "plain", root / "set")
        torch.manual_seed(0)
        path = candidate.save(root / "c1000.pt", tiny_cnn(num_classes=1000, width=8), arch="tiny_cnn",
                              arch_kwargs={"num_classes": 1000, "width": 8},
                              classes=[f"c{i:04d}" for i in range(1000)], input_size=(32, 32))
        policy = root / "policy.yaml"
        policy.write_text(yaml.safe_dump({"name": "bench", "review_set": {"path": str(pinned.root),
                                                                          "digest": pinned.digest},
                                          "probes": ["background"], "rules": [{"score": "accuracy", "min": 0.0}]}))
        started = time.perf_counter()
        result = gate.check(path, policy, device=device, batch_size=64, workers=0)
        gated = time.perf_counter() - started
        started = time.perf_counter()
        html = render_report(result)
        rendered = time.perf_counter() - started
    return {"samples": float(pinned.size), "kept samples": float(len(result.candidates[0].records.kept)),
            "gate s": gated, "render s": rendered, "report MB": len(html.encode("utf-8")) / 1e6}


RENDER_GOAL_S = 30.0


def main() -> None:
    """Print both tables as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    import PIL
    import torchvision

    print(f"{platform.machine()}, {torch.get_num_threads()} threads, device {args.device}, torch {torch.__version__}, "
          f"torchvision {torchvision.__version__}, Pillow {PIL.__version__}")
    times = bench_preprocess(args.photos, args.repeats, args.batch, args.device)
    forward = next(v for k, v in times.items() if k.startswith("ResNet-50"))
    print("\n| per image (224x224 from JPEG) | ms | x ResNet-50 forward |\n|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds * 1e3:.2f} | {seconds / forward:.2f} |")
    print(f"\nGoal: a report renders in under {RENDER_GOAL_S:g} s (once a wall-clock assert in tests/test_report.py)")
    print("\n| 1000-class model, review set | samples | kept samples | gate s | render s | report MB |\n"
          "|---|---|---|---|---|---|")
    for listed, per_class in ((1000, 2), (30, 4)):
        row = bench_report(listed, per_class, args.device)
        print(f"| {listed} classes x {per_class} | {row['samples']:.0f} | {row['kept samples']:.0f} | "
              f"{row['gate s']:.1f} | {row['render s']:.1f}{'' if row['render s'] < RENDER_GOAL_S else ' MISSED'} | "
              f"{row['report MB']:.2f} |")


if __name__ == "__main__":
    main()

"""Stand-ins for what a team brings to xgate, for the README's "Gate your own model" walkthrough.

    python scripts/own_model_example.py my-model

writes into my-model/:
- ``finetuned.pt``: ``model.state_dict()`` of a torchvision ResNet-18 with 3 outputs (cat, dog, fox),
  randomly initialised (seeded): nothing is downloaded, and it stands in for a fine-tuned model;
- ``classes.txt``: its class names, one per line, in output order;
- ``photos/<class>/*.jpg`` and ``instances.json``: a COCO export of 12 JPEG "photos" of mixed sizes and
  aspect ratios for two of the model's three classes, annotated with polygons, RLE, boxes only, two
  instances of one class in one photo, and photos left without any annotation.

With ``--timm`` it writes ``convnext.pt`` (a timm ConvNeXt-Atto state_dict), with ``--hf`` the folder ``vit/``
(a Hugging Face ViT saved with ``save_pretrained``), both with random weights and the same three classes.

Deterministic for a given torch/Pillow version (seeded content, fixed JPEG quality).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask
from torchvision.models import resnet18

MODEL_CLASSES = ("cat", "dog", "fox")
CATEGORIES = {1: "cat", 2: "dog"}  # the review set covers two of the model's three classes
OBJECT_RGB = {"cat": (232, 142, 40), "dog": (120, 72, 40)}
# (width, height) and how each photo is annotated.
PHOTOS: tuple[tuple[int, int, str], ...] = (
    (200, 150, "polygon"), (120, 180, "rle"), (160, 160, "box"), (180, 120, "two"), (140, 100, "none"),
    (96, 144, "polygon"),
)


def scene(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A smooth random background, like a blurred photo."""
    small = rng.integers(30, 220, size=(3, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)


def polygon_in(rng: np.random.Generator, box: tuple[int, int, int, int]) -> list[float]:
    """A convex-ish hexagon inside box (x0, y0, x1, y1), as a flat COCO polygon."""
    x0, y0, x1, y1 = box
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    angles = np.sort(rng.uniform(0, 2 * np.pi, 6))
    radius = rng.uniform(0.7, 1.0, 6)
    points = np.stack([cx + rx * radius * np.cos(angles), cy + ry * radius * np.sin(angles)], axis=1)
    return [round(float(v), 1) for v in points.ravel()]


def object_box(rng: np.random.Generator, width: int, height: int) -> tuple[int, int, int, int]:
    w, h = int(width * rng.uniform(0.3, 0.5)), int(height * rng.uniform(0.3, 0.5))
    x0, y0 = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
    return x0, y0, x0 + w, y0 + h


def rle_of(mask: np.ndarray) -> dict[str, Any]:
    encoded = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def draw_photo(rng: np.random.Generator, name: str, width: int, height: int, kind: str,
               image_id: int) -> tuple[Image.Image, list[dict[str, Any]]]:
    """One photo with its object(s) drawn, and its COCO annotations (none for kind 'none')."""
    image = scene(rng, width, height)
    draw = ImageDraw.Draw(image)
    category = next(k for k, v in CATEGORIES.items() if v == name)
    annotations = []
    for _ in range(2 if kind == "two" else 1):
        box = object_box(rng, width, height)
        if kind == "box":
            draw.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), fill=OBJECT_RGB[name])
            ann: dict[str, Any] = {"bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]}
        else:
            polygon = polygon_in(rng, box)
            draw.polygon(list(zip(polygon[::2], polygon[1::2], strict=True)), fill=OBJECT_RGB[name])
            ann = {"segmentation": [polygon], "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]}
            if kind == "rle":
                mask = coco_mask.decode(coco_mask.frPyObjects([polygon], height, width)).any(axis=2)
                ann = {"segmentation": rle_of(mask), "iscrowd": 1}
        annotations.append({"image_id": image_id, "category_id": category, "iscrowd": 0, "area": 1.0, **ann})
    return image, [] if kind == "none" else annotations


def write_example(out: Path) -> None:
    """Write the model, class list and COCO export into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(resnet18(weights=None, num_classes=len(MODEL_CLASSES)).state_dict(), out / "finetuned.pt")
    (out / "classes.txt").write_text("\n".join(MODEL_CLASSES) + "\n")
    rng = np.random.default_rng(2026)
    images, annotations = [], []
    for name in CATEGORIES.values():
        for index, (width, height, kind) in enumerate(PHOTOS):
            image_id = len(images) + 1
            file_name = f"{name}/{index + 1:04d}.jpg"
            image, anns = draw_photo(rng, name, width, height, kind, image_id)
            (out / "photos" / name).mkdir(parents=True, exist_ok=True)
            image.save(out / "photos" / file_name, quality=90)
            images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
            annotations.extend(anns)
    for number, ann in enumerate(annotations, start=1):
        ann["id"] = number
    doc = {"images": images, "annotations": annotations,
           "categories": [{"id": k, "name": v} for k, v in CATEGORIES.items()]}
    (out / "instances.json").write_text(json.dumps(doc, indent=1))


def write_timm(out: Path) -> Path:
    """A timm ConvNeXt-Atto state_dict with 3 outputs (random weights), as ``torch.save(model.state_dict())``."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("convnext_atto", pretrained=False, num_classes=len(MODEL_CLASSES))
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "convnext.pt")
    return out / "convnext.pt"


def write_hf(out: Path) -> Path:
    """A small ViT for image classification saved with save_pretrained, next to its image processor."""
    import transformers

    torch.manual_seed(0)
    labels = dict(enumerate(MODEL_CLASSES))
    config = transformers.ViTConfig(image_size=224, patch_size=32, hidden_size=64, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=128, id2label=labels,
                                    label2id={name: index for index, name in labels.items()})
    folder = out / "vit"
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 224, "width": 224}, image_mean=[0.5] * 3,
                                   image_std=[0.5] * 3).save_pretrained(folder)
    return folder


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) == 2 and args[1] in ("--timm", "--hf"):
        written = (write_timm if args[1] == "--timm" else write_hf)(Path(args[0]))
        print(f"wrote {written}")
        sys.exit(0)
    if len(args) != 1:
        sys.exit("usage: python scripts/own_model_example.py OUT_DIR [--timm | --hf]")
    write_example(Path(sys.argv[1]))
    print(f"wrote {sys.argv[1]}/: finetuned.pt, classes.txt, photos/ (12 JPEGs), instances.json")

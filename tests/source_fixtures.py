"""Shared by test_timm.py and test_hf.py: photos of several sizes, a gate run, and the library's own answers.

The photos are smooth random JPEGs (so resampling matters as in real photos) with an ellipse mask each; the
reference runs the library's own eval pipeline on the file opened with PIL, as a team's script would.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage
from torch import Tensor, nn

from gate.engine import core as engine
from gate.engine.layers import Layout
from gate.inputs.candidate import Candidate
from gate.inputs.review_set import ReviewSet, build
from gate.records import Records

CLASSES = ("cat", "dog", "fox")
# (height, width): landscape, portrait, square, odd sides, smaller and larger than the models' inputs
# (73, 75) puts an odd margin of 11 before a 64 px crop: torchvision rounds the offset to 6, transformers floors it
PHOTO_SIZES = ((48, 64), (70, 50), (64, 64), (90, 121), (33, 57), (101, 80), (73, 75))


def write_photos(root: Path) -> ReviewSet:
    """Seven JPEG photos (two or three per class) of the sizes above with ellipse masks, pinned as a review set."""
    rng = np.random.default_rng(5)
    for index, (height, width) in enumerate(PHOTO_SIZES):
        name = CLASSES[index % len(CLASSES)]
        noise = rng.random((height, width, 3)) * 255
        pixels = ndimage.gaussian_filter(noise, (2, 2, 0)).clip(0, 255)
        pixels = ((pixels - pixels.min()) / (np.ptp(pixels) + 1e-9) * 255).astype(np.uint8)
        for folder in ("images", "masks"):
            (root / "plain" / folder / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "plain" / "images" / name / f"p{index}.jpg", quality=90)
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).ellipse((width // 5, height // 4, width * 3 // 4, height * 4 // 5), fill=255)
        mask.save(root / "plain" / "masks" / name / f"p{index}.png")
    return build(root / "plain", root / "set", name="photos")


def gate_run(candidate: Candidate, review_set: ReviewSet) -> Records:
    """The engine over the review set, every sample's map kept."""
    options = engine.EngineOptions(batch_size=4, device="cpu", fixed_per_class=10, fixed_total=100)
    (run,) = engine.run([candidate.aligned_to(review_set.classes)], review_set, options)
    return run.records


def reference_inputs(review_set: ReviewSet, records: Records, transform: Callable[[Image.Image], Tensor]) -> Tensor:
    """The library's own pipeline on each photo, in the records' order: [N, 3, H, W]."""
    by_id = {sample.sample_id: sample for sample in review_set.samples}
    photos = [Image.open(review_set.root / by_id[i].image).convert("RGB") for i in records.ids]
    return torch.stack([transform(photo) for photo in photos])


def assert_same_as_library(model: nn.Module, layer: str, layout: Layout, inputs: Tensor, records: Records) -> None:
    """Probabilities to 1e-5, predictions exactly, maps (min-max, as pytorch-grad-cam) to 1e-4."""
    from pytorch_grad_cam import GradCAM

    with torch.no_grad():
        probs = torch.softmax(model(inputs), dim=1)
    np.testing.assert_allclose(records.probs, probs.numpy(), atol=1e-5, rtol=0)
    assert records.pred is not None
    np.testing.assert_array_equal(records.pred, probs.argmax(1).numpy())

    def reshape(tokens: Tensor) -> Tensor:  # pytorch-grad-cam's ViT recipe, with the layout's grid and prefix
        if layout.kind == "channels_last":
            return tokens.permute(0, 3, 1, 2)
        rows, cols = layout.grid
        return tokens[:, layout.prefix :, :].reshape(tokens.size(0), rows, cols, tokens.size(2)).permute(0, 3, 1, 2)

    target = dict(model.named_modules())[layer]
    with GradCAM(model=model, target_layers=[target], reshape_transform=None if layout.kind == "spatial"
                 else reshape) as cam:
        theirs = cam(input_tensor=inputs, targets=None)
    for param in model.parameters():
        param.grad = None
    ours = np.stack([records.kept[i].cam for i in records.ids])
    # pytorch-grad-cam min-max normalises at the layer's resolution (its 1e-7 is then negligible) and again
    # after resizing; the same without the epsilon on our raw, upsampled maps (whose scale can be ~1e-3)
    shifted = ours - ours.min(axis=(1, 2), keepdims=True)
    ours = shifted / np.maximum(shifted.max(axis=(1, 2), keepdims=True), 1e-30)
    assert np.ptp(theirs) > 0  # maps that are not all zero
    np.testing.assert_allclose(ours, theirs, atol=1e-4)

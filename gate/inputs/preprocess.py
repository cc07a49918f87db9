"""The model's own preprocessing: decoded uint8 images (and their masks) into the frame the model sees.

Two geometries, both done by ``torchvision.transforms.v2.functional`` on the
uint8 image so that the pixels equal a team's own torchvision evaluation:

- with ``resize``: torchvision's ``ImageClassification`` eval transform, i.e.
  ``Resize(resize)`` (shorter side, antialiased) then ``CenterCrop(size)``;
- without it: a squash to ``size`` (``Resize((H, W))``), the gate's old default.

``pipeline`` names whose eval pipeline the pixels equal: ``torchvision`` (above), ``timm`` (the same
steps on a PIL image, as timm's ``create_transform`` does: PIL's resampling differs from torch's by a
grey level here and there) or ``transformers`` (the Hugging Face image processor: torch resampling, but
a centre crop whose offset is floored, not rounded).

Then ``ToDtype(float32, scale=True)`` gives [0, 1] pixels; mean/std
normalisation is left to the caller (probes work on [0, 1] pixels). Masks go
through the same geometry with nearest interpolation, so alignment and probes
are computed in the frame the model saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF
from torchvision.transforms.v2.functional import InterpolationMode

PIPELINES = ("torchvision", "timm", "transformers")
INTERPOLATIONS: dict[str, InterpolationMode] = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class Geometry:
    """Where pixels go: output ``size`` (H, W), optional shorter-side ``resize``, the interpolation and
    whose implementation of those steps (``pipeline``, see the module doc)."""

    size: tuple[int, int]
    resize: int | None = None
    interpolation: str = "bilinear"
    pipeline: str = "torchvision"

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}")
        if self.pipeline not in PIPELINES:
            raise ValueError(f"pipeline must be one of {list(PIPELINES)}, got {self.pipeline!r}")


def image_to_pixels(image: np.ndarray, geometry: Geometry) -> Tensor:
    """A decoded uint8 [H, W, 3] image in the model's frame, still uint8: [3, h, w]."""
    if geometry.pipeline == "timm":
        return _pil_geometry(Image.fromarray(np.ascontiguousarray(image)), geometry, geometry.interpolation)
    pixels = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)  # channels-last, like v2.ToImage
    return _geometry(pixels, geometry, INTERPOLATIONS[geometry.interpolation])


def pixels_to_frame(pixels: Tensor) -> Tensor:
    """Framed uint8 pixels [..., 3, h, w] as float32 in [0, 1] (``ToDtype(float32, scale=True)``)."""
    frame: Tensor = TF.to_dtype(pixels, torch.float32, scale=True)
    return frame


def image_to_frame(image: np.ndarray, geometry: Geometry) -> Tensor:
    """A decoded uint8 [H, W, 3] image as float32 [3, h, w] in [0, 1] in the model's frame."""
    return pixels_to_frame(image_to_pixels(image, geometry))


def mask_to_frame(mask: np.ndarray, geometry: Geometry) -> Tensor:
    """A bool [H, W] mask through the image's geometry with nearest interpolation: bool [h, w]."""
    if geometry.pipeline == "timm":
        framed_pil = _pil_geometry(Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8)), geometry, "nearest")
        return framed_pil[0] > 0
    pixels = tv_tensors.Mask(torch.from_numpy(np.ascontiguousarray(mask, dtype=np.uint8))[None])
    framed = _geometry(pixels, geometry, InterpolationMode.NEAREST)
    return framed.as_subclass(Tensor)[0] > 0


def _geometry(pixels: Tensor, geometry: Geometry, mode: InterpolationMode) -> Tensor:
    height, width = geometry.size
    framed: Tensor
    if geometry.resize is None:
        # Antialias as torchvision does by default (ignored for nearest).
        framed = TF.resize(pixels, [height, width], interpolation=mode, antialias=True)
        return framed
    resized: Tensor = TF.resize(pixels, [geometry.resize], interpolation=mode, antialias=True)
    if geometry.pipeline == "transformers":
        return _floored_crop(resized, height, width)
    framed = TF.center_crop(resized, [height, width])
    return framed


def _floored_crop(pixels: Tensor, height: int, width: int) -> Tensor:
    # The Hugging Face image processor floors the offset (torchvision rounds it): one pixel apart on odd margins.
    if pixels.shape[-2] < height or pixels.shape[-1] < width:
        padded: Tensor = TF.center_crop(pixels, [height, width])  # padding: both pad alike
        return padded
    top = (pixels.shape[-2] - height) // 2
    left = (pixels.shape[-1] - width) // 2
    return pixels[..., top : top + height, left : left + width]


def _pil_geometry(image: Image.Image, geometry: Geometry, interpolation: str) -> Tensor:
    """timm's eval transform: torchvision's Resize and CenterCrop on a PIL image (PIL resampling), as uint8."""
    height, width = geometry.size
    mode = INTERPOLATIONS[interpolation]
    if geometry.resize is None:
        framed = TF.resize(image, [height, width], interpolation=mode)
    else:
        framed = TF.center_crop(TF.resize(image, [geometry.resize], interpolation=mode), [height, width])
    pixels: Tensor = TF.pil_to_tensor(framed)
    return pixels if pixels.dim() == 3 else pixels[None]

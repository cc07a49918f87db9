"""Pictures of samples for the report: image data URIs, thumbnails, mask outlines and Grad-CAM overlays.

Sample pictures are PNG or JPEG, whichever is smaller (see ``image_uri``), inline ``data:`` URIs so the report
opens from a CI artifact with no network and no files beside it. The matplotlib plots are in
``gate.outputs.report.plots``.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from PIL import Image

# Pictures are shown with their longest side in [MIN_SIDE, MAX_SIDE] pixels. Larger images are downscaled,
# so 24 kept samples with a few pictures each keep the report small even for 224x224 review sets. Smaller
# ones (a 64x64 review set) are enlarged for display by a whole factor (64 -> 192): the photo and the probe
# variants are stored at their own size and the page enlarges them (CSS image-rendering: pixelated, the
# same nearest-neighbour blocks, a ninth of the pixels to store); the Grad-CAM overlay is stored enlarged,
# because its bilinearly upsampled map has detail finer than the photo's pixels.
MIN_SIDE = 160
MAX_SIDE = 192
# JPEG qualities, both with full-resolution colour (4:4:4): with halved colour (4:2:0) the 1-px cyan outline
# is off by ~80 grey levels, with 4:4:4 by ~5. On the shipped review set the photos decode at PSNR >= 32 dB
# (noisy scenes) and the overlays at >= 35 dB (the palette PNGs they replace: >= 37 dB), 3-5x smaller.
PHOTO_QUALITY = 90  # stored small and enlarged 3x by the page, so artefacts are magnified: a high quality
OVERLAY_QUALITY = 85  # stored at the shown size; smooth colour blends are what JPEG compresses best
CAM_COLORMAP = "inferno"  # perceptually uniform; readable in greyscale
OUTLINE_RGB = (0, 255, 255)  # cyan: the history's map panels (gate.tracking.outbox)
OUTLINE_LIGHT, OUTLINE_DARK = (255, 255, 255), (0, 0, 0)  # the report's two-tone outline: white inside, black out
OVERLAY_ALPHA = 0.55


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _encode(picture: Image.Image, image_format: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def image_uri(image: np.ndarray, quality: int = PHOTO_QUALITY) -> str:
    """A uint8 HxWx3 array (at its stored size) as a data URI: PNG or JPEG, whichever is smaller.

    Photos and Grad-CAM blends come out 3-5x smaller as JPEG; flat synthetic pictures (a few colours, large
    areas) are smaller as PNG, and then lose nothing.
    """
    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    png = _encode(picture, "PNG", optimize=True)
    jpeg = _encode(picture, "JPEG", quality=quality, subsampling=0, optimize=True)
    if len(png) <= len(jpeg):
        return png_data_uri(png)
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def thumbnail_size(height: int, width: int, max_side: int = MAX_SIDE, min_side: int = MIN_SIDE) -> tuple[int, int]:
    """(height, width) for display: shrunk so the longest side is ``max_side``, or enlarged by the smallest
    whole factor that makes it at least ``min_side``; aspect kept."""
    longest = max(height, width)
    if longest > max_side:
        scale = max_side / longest
        return max(1, round(height * scale)), max(1, round(width * scale))
    factor = max(1, -(-min_side // longest))  # ceil: 64 -> 3 (192 px), 16 -> 10 (160 px)
    return height * factor, width * factor


def thumbnail(image: np.ndarray, max_side: int = MAX_SIDE, enlarge: bool = True) -> np.ndarray:
    """A uint8 HxWx3 image at display size: Lanczos when shrinking, nearest neighbour when enlarging.

    ``enlarge=False``: a small image is kept at its own size, for the page to enlarge.
    """
    height, width = thumbnail_size(image.shape[0], image.shape[1], max_side=max_side)
    if not enlarge and height >= image.shape[0]:
        return np.asarray(image, dtype=np.uint8)
    if (height, width) == image.shape[:2]:
        return np.asarray(image, dtype=np.uint8)
    shrink = height < image.shape[0]
    method = Image.Resampling.LANCZOS if shrink else Image.Resampling.NEAREST
    resized = Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((width, height), method)
    return np.asarray(resized)


def _resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if mask.shape == size:
        return np.asarray(mask, dtype=bool)
    pixels = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255)
    resized = pixels.resize((size[1], size[0]), Image.Resampling.NEAREST)
    return np.asarray(resized) > 127


def _resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if values.shape == size:
        return np.asarray(values, dtype=np.float32)
    pixels = Image.fromarray(np.asarray(values, dtype=np.float32))  # mode "F": 32-bit float
    resized = pixels.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """Object pixels with at least one 4-neighbour outside the object (the image border counts as outside)."""
    inside = np.pad(np.asarray(mask, dtype=bool), 1, constant_values=False)
    interior = inside[1:-1, 1:-1] & inside[:-2, 1:-1] & inside[2:, 1:-1] & inside[1:-1, :-2] & inside[1:-1, 2:]
    edge: np.ndarray = np.asarray(mask, dtype=bool) & ~interior
    return edge


def ring_outside(mask: np.ndarray) -> np.ndarray:
    """Pixels outside the object with at least one 4-neighbour inside it."""
    inside = np.pad(np.asarray(mask, dtype=bool), 1, constant_values=False)
    touches = inside[:-2, 1:-1] | inside[2:, 1:-1] | inside[1:-1, :-2] | inside[1:-1, 2:]
    return np.asarray(touches & ~np.asarray(mask, dtype=bool))


def draw_outline(image: np.ndarray, mask: np.ndarray, two_tone: bool = False) -> np.ndarray:
    """A copy of ``image`` with the mask's outline painted in ``OUTLINE_RGB``; ``two_tone``: white on the
    object's edge and black just outside it, a line that shows on any colour (cyan vanishes on cyan objects)."""
    out = np.array(image, dtype=np.uint8, copy=True)
    if two_tone:
        out[ring_outside(mask)] = OUTLINE_DARK
        out[mask_outline(mask)] = OUTLINE_LIGHT
        return out
    out[mask_outline(mask)] = OUTLINE_RGB
    return out


def greyscale(image: np.ndarray) -> np.ndarray:
    """``image`` (uint8 HxWx3) as grey in three channels (ITU-R 601 luma, as PIL's "L")."""
    luma = np.asarray(image, dtype=np.float64) @ np.array([0.299, 0.587, 0.114])
    grey: np.ndarray = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def cam_overlay(
    image: np.ndarray, cam: np.ndarray, mask: np.ndarray | None = None, *, grey: bool = False,
    two_tone: bool = False,
) -> np.ndarray:
    """The Grad-CAM map blended over the image in a perceptual colormap, with the mask outline on top.

    ``grey``: over a greyscale copy, so a bright object does not read as heat. The map is scaled by its
    maximum for display only; scores are computed on the raw map upstream.
    """
    size = image.shape[:2]
    values = np.nan_to_num(_resize_map(np.asarray(cam, dtype=np.float32), size), nan=0.0, posinf=0.0, neginf=0.0)
    values = np.clip(values, 0.0, None)
    peak = float(values.max()) if values.size else 0.0
    scaled = values / peak if peak > 0 else values
    colours = matplotlib.colormaps[CAM_COLORMAP](scaled)[..., :3] * 255.0
    base = greyscale(image) if grey else image
    blended = (1.0 - OVERLAY_ALPHA) * base.astype(np.float64) + OVERLAY_ALPHA * colours
    out = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out if mask is None else draw_outline(out, mask, two_tone)


@dataclass(frozen=True)
class SamplePictures:
    """Data URIs for one kept sample: the image with its mask outline, and the Grad-CAM overlay."""

    image: str
    overlay: str


def sample_pictures(image: np.ndarray, mask: np.ndarray, cam: np.ndarray) -> SamplePictures:
    """Pictures of a kept sample: the photo at its stored size, the overlay at display size."""
    photo = thumbnail(image, enlarge=False)
    shown = thumbnail(image)
    shown_mask = _resize_mask(mask, shown.shape[:2])
    shown_cam = _resize_map(np.asarray(cam, dtype=np.float32), shown.shape[:2])
    return SamplePictures(
        image=image_uri(draw_outline(photo, _resize_mask(mask, photo.shape[:2]), two_tone=True)),
        overlay=image_uri(cam_overlay(shown, shown_cam, shown_mask, grey=True, two_tone=True),
                          quality=OVERLAY_QUALITY),
    )


def variant_uri(image: np.ndarray) -> str:
    """A probe variant (uint8 HxWx3) as a data URI at its stored size."""
    return image_uri(thumbnail(image, enlarge=False))

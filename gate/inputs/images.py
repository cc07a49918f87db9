"""Decoding review-set images and masks the way people see them.

Every image comes back as uint8 RGB [H, W, 3] in its display orientation (the
EXIF orientation tag applied, as a photo viewer does). Modes PIL leaves to the
caller are converted here, not by ``Image.convert("RGB")`` alone:

- grayscale (L, 1) is repeated over the three channels;
- images with transparency (RGBA, LA, PA, P with a transparent index) are
  composited on WHITE, as a browser or viewer shows them on a page; the colour
  hidden under fully transparent pixels is never shown to the model;
- CMYK (e.g. print JPEGs) goes through PIL's CMYK -> RGB conversion
  (R = (255 - C)(255 - K) / 255; ICC profiles are not applied);
- 16-bit grayscale (I;16, I;16B, I;16L and I, the mode PIL gives 16-bit PNGs)
  is scaled to 8 bits (v * 255 / 65535, rounded), never clipped to white.

A pixel limit (``MAX_PIXELS`` by default) is checked from the header before
any pixel is decoded; PIL's own decompression-bomb warning or error is turned
into the same one-line ``ReviewSetError`` naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from gate.errors import ReviewSetError

MAX_PIXELS = 50_000_000  # 50 MP: a large DSLR photo; a bigger "image" is a mistake or a bomb
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# EXIF orientations 5-8 swap width and height (a quarter turn, with or without a mirror).
_TRANSPOSING = {5, 6, 7, 8}
_ORIENTATION_TAG = 0x0112
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)


def read_rgb(path: str | Path, *, max_pixels: int | None = MAX_PIXELS, what: str = "image") -> np.ndarray:
    """The image at ``path`` as uint8 RGB [H, W, 3], EXIF-oriented and mode-converted (see module doc)."""
    with _open(path, max_pixels, what) as image:
        try:
            return _to_rgb(_oriented(image))
        except _DECODE_ERRORS as exc:
            raise ReviewSetError(f"unreadable {what} ({_why(exc)})", path=path) from None


def read_mask_values(path: str | Path, *, max_pixels: int | None = MAX_PIXELS, what: str = "mask") -> np.ndarray:
    """The raw values of a mask file as a 2-D integer array in display orientation.

    Single-band masks keep their values (a palette PNG gives its palette indices,
    as Pascal VOC uses them: 0 background, 255 void); a colour mask is reduced to
    its grey level, so any non-black pixel is nonzero.
    """
    with _open(path, max_pixels, what) as image:
        try:
            image = _oriented(image)
            if image.mode in ("1", "L", "P") or image.mode in SIXTEEN_BIT_MODES:
                values = np.asarray(image)
            else:
                values = np.asarray(image.convert("L"))
        except _DECODE_ERRORS as exc:
            raise ReviewSetError(f"unreadable {what} ({_why(exc)})", path=path) from None
    if values.ndim != 2:
        raise ReviewSetError(f"{what} must have one band, got shape {values.shape}", path=path)
    return values


def read_mask(path: str | Path, *, max_pixels: int | None = MAX_PIXELS, what: str = "mask") -> np.ndarray:
    """A mask file as bool [H, W]: nonzero = True."""
    mask: np.ndarray = read_mask_values(path, max_pixels=max_pixels, what=what) != 0
    return mask


def display_size(path: str | Path, *, max_pixels: int | None = MAX_PIXELS, what: str = "image") -> tuple[int, int]:
    """(height, width) of the image as displayed (EXIF orientation applied), from its header only.

    Checks the pixel limit too, so a build refuses a bomb without decoding it.
    """
    with _open(path, max_pixels, what) as image:
        try:
            if image.format not in ("JPEG", "PNG"):
                # TIFF and others may apply their own orientation while decoding: ask the decoded image.
                # A pinned set holds JPEG and PNG only, so this runs at build time.
                width, height = _oriented(image).size
                return height, width
            width, height = image.size
            orientation = _orientation(image)
        except _DECODE_ERRORS as exc:
            raise ReviewSetError(f"unreadable {what} ({_why(exc)})", path=path) from None
    return (width, height) if orientation in _TRANSPOSING else (height, width)


def format_and_mode(path: str | Path) -> tuple[str, str]:
    """PIL's name for the file's format ("JPEG", "PNG", ...) and its mode ("RGB", "L", ...), from the header."""
    with _open(path, None, "image") as image:
        return str(image.format or ""), str(image.mode)


def _open(path: str | Path, max_pixels: int | None, what: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # PIL warns (and past twice its limit raises) on huge images; both are input errors here.
            # Its other warnings (a corrupt EXIF block, an odd TIFF tag) are noise: what matters raises.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ReviewSetError(f"{what} is too large, a decompression bomb? ({_why(exc)})", path=path) from None
    except FileNotFoundError:
        raise ReviewSetError(f"{what} file not found", path=path) from None
    except _DECODE_ERRORS as exc:
        raise ReviewSetError(f"unreadable {what} ({_why(exc)})", path=path) from None
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise ReviewSetError(
            f"{what} has {width}x{height} = {width * height} pixels, over the limit of {max_pixels}", path=path
        )
    return image


def _orientation(image: Image.Image) -> int:
    # PNG keeps EXIF in an eXIf chunk; PIL only knows it without decoding when the chunk
    # precedes the pixels (where writers put it). Other formats carry it in the header.
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a malformed EXIF block is read as "no orientation", not an error
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    return int(value) if isinstance(value, int) else 1


def _oriented(image: Image.Image) -> Image.Image:
    # The orientation is read before decoding, as display_size reads it, so both agree even for a
    # PNG whose eXIf chunk comes after the pixels (then ignored, as browsers ignore it).
    orientation = _orientation(image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a malformed EXIF block is read as "no orientation", not an error
        image.load()
        return ImageOps.exif_transpose(image) if orientation != 1 else image


def _to_rgb(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "RGB":
        return np.asarray(image).copy()
    if mode in SIXTEEN_BIT_MODES:
        grey = _scale_16_bit(np.asarray(image))
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        raise ValueError("floating-point images are not supported; save as 8- or 16-bit")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info) or (
        mode in ("L", "RGB") and "transparency" in image.info
    ):
        return _on_white(np.asarray(image.convert("RGBA")))
    return np.asarray(image.convert("RGB")).copy()


def _scale_16_bit(values: np.ndarray) -> np.ndarray:
    # Mode I holds 32-bit ints; PIL uses it for 16-bit PNGs, so its range is taken as 0..65535.
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _on_white(rgba: np.ndarray) -> np.ndarray:
    colour = rgba[:, :, :3].astype(np.uint32)
    alpha = rgba[:, :, 3:].astype(np.uint32)
    # out = c * a / 255 + 255 * (255 - a) / 255, rounded to nearest.
    mixed = (colour * alpha + 255 * (255 - alpha) + 127) // 255
    return mixed.astype(np.uint8)


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}"[:200] if text else type(exc).__name__

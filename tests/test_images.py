"""Decoding images as people see them: 16-bit, CMYK, EXIF orientation, transparency, grayscale, bombs.

Every file is written with PIL here; expected pixels are computed by hand from the values written.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gate.errors import ReviewSetError
from gate.inputs import images

ORIENTATION = 0x0112


def grey3(values: list[list[int]]) -> np.ndarray:
    """A grey image as the RGB array it must decode to."""
    grey = np.array(values, dtype=np.uint8)
    return np.repeat(grey[:, :, None], 3, axis=2)


# ----------------------------------------------------------------------------- 16-bit


def test_16_bit_png_is_scaled_not_clipped_to_white(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    # 257 * k is exactly k at 8 bits (65535 / 255 = 257).
    Image.fromarray(np.array([[0, 257 * 10], [257 * 200, 65535]], dtype=np.uint16)).save(path)
    with Image.open(path) as raw:
        assert raw.mode == "I;16"
        # what a plain convert gives: every value over 255 clipped to white
        assert np.asarray(raw.convert("RGB"))[:, :, 0].tolist() == [[0, 255], [255, 255]]
    assert np.array_equal(images.read_rgb(path), grey3([[0, 10], [200, 255]]))


def test_16_bit_rounds_to_nearest(tmp_path: Path) -> None:
    path = tmp_path / "round.png"
    # 128 / 257 = 0.498 -> 0; 129 / 257 = 0.502 -> 1; 32768 / 257 = 127.502 -> 128
    Image.fromarray(np.array([[128, 129, 32768]], dtype=np.uint16)).save(path)
    assert np.array_equal(images.read_rgb(path), grey3([[0, 1, 128]]))


def test_16_bit_big_endian_tiff(tmp_path: Path) -> None:
    path = tmp_path / "deep.tif"
    raw = struct.pack(">4H", 0, 257 * 3, 257 * 77, 65535)
    Image.frombytes("I;16B", (2, 2), raw).save(path)
    with Image.open(path) as check:
        assert check.mode == "I;16B"
    assert np.array_equal(images.read_rgb(path), grey3([[0, 3], [77, 255]]))


def test_32_bit_integer_mode_is_read_as_16_bit_range(tmp_path: Path) -> None:
    path = tmp_path / "wide.tif"
    Image.fromarray(np.array([[-5, 257 * 9], [65535, 90000]], dtype=np.int32), mode="I").save(path)
    with Image.open(path) as check:
        assert check.mode == "I"
    # Below 0 is 0 and above 65535 is white: the range PIL gives 16-bit PNGs in mode I.
    assert np.array_equal(images.read_rgb(path), grey3([[0, 9], [255, 255]]))


def png_bytes(width: int, height: int, depth: int, colour_type: int, rows: list[bytes]) -> bytes:
    """A PNG file by hand (PIL cannot write 16-bit colour): signature, IHDR, one IDAT, IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\0" + row for row in rows))  # filter type 0 on every row
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("colour_type", "samples", "want"), [
    (2, [65535, 32896, 0, 257 * 10, 257 * 20, 257 * 30], [[255, 128, 0], [10, 20, 30]]),  # RGB
    (6, [65535, 0, 0, 65535, 0, 65535, 0, 0], [[255, 0, 0], [255, 255, 255]]),  # RGBA: opaque red, clear
    (4, [257 * 10, 65535, 51400, 0], [[10, 10, 10], [255, 255, 255]]),  # grey + alpha
], ids=["rgb", "rgba", "la"])
def test_16_bit_colour_pngs(tmp_path: Path, colour_type: int, samples: list[int], want: list[list[int]]) -> None:
    path = tmp_path / "deep.png"
    path.write_bytes(png_bytes(2, 1, 16, colour_type, [struct.pack(f">{len(samples)}H", *samples)]))
    assert np.array_equal(images.read_rgb(path), np.array([want], dtype=np.uint8))


# ----------------------------------------------------------------------------- CMYK


def cmyk_to_rgb(c: int, m: int, y: int, k: int) -> tuple[int, int, int]:
    return tuple(round((255 - v) * (255 - k) / 255) for v in (c, m, y))  # type: ignore[return-value]


def test_cmyk_tiff_exact(tmp_path: Path) -> None:
    path = tmp_path / "print.tif"
    Image.new("CMYK", (3, 2), (10, 20, 30, 40)).save(path)
    # (255-10)(255-40)/255 = 206.57 -> 207; 235*215/255 = 198.14 -> 198; 225*215/255 = 189.7 -> 190
    assert cmyk_to_rgb(10, 20, 30, 40) == (207, 198, 190)
    assert np.array_equal(images.read_rgb(path), np.full((2, 3, 3), (207, 198, 190), dtype=np.uint8))


def test_cmyk_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    colours = [(0, 0, 0, 0), (0, 255, 255, 0), (50, 100, 150, 25)]
    strip = Image.new("CMYK", (48, 16))
    for index, colour in enumerate(colours):
        strip.paste(colour, (16 * index, 0, 16 * index + 16, 16))
    strip.save(path, quality=100)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    rgb = images.read_rgb(path)
    assert rgb.shape == (16, 48, 3) and rgb.dtype == np.uint8
    # white, red, and (205, 155, 105) * 230 / 255 = (184.9, 139.8, 94.7); JPEG is lossy: a small tolerance
    for index, want in enumerate([(255, 255, 255), (255, 0, 0), (185, 140, 95)]):
        assert cmyk_to_rgb(*colours[index]) == want
        centre = rgb[8, 16 * index + 8].astype(int)
        assert np.abs(centre - np.array(want)).max() <= 3, (index, centre, want)


# ----------------------------------------------------------------------------- EXIF orientation

QUADRANTS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]  # top-left, top-right, bottom-left, bottom-right


def quadrant_jpeg(path: Path, orientation: int, size: tuple[int, int] = (32, 16)) -> None:
    width, height = size
    image = Image.new("RGB", size)
    for index, colour in enumerate(QUADRANTS):
        x, y = (index % 2) * width // 2, (index // 2) * height // 2
        image.paste(colour, (x, y, x + width // 2, y + height // 2))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    image.save(path, quality=95, exif=exif)


def quadrant_colours(rgb: np.ndarray) -> list[tuple[int, ...]]:
    """Colours at the centres of the four quadrants (tl, tr, bl, br), rounded to 0/255."""
    h, w = rgb.shape[:2]
    points = [(h // 4, w // 4), (h // 4, 3 * w // 4), (3 * h // 4, w // 4), (3 * h // 4, 3 * w // 4)]
    return [tuple(int(v > 127) * 255 for v in rgb[y, x]) for y, x in points]


R, G, B, Y = QUADRANTS


@pytest.mark.parametrize(("orientation", "shape", "expected"), [
    (1, (16, 32), [R, G, B, Y]),
    (3, (16, 32), [Y, B, G, R]),  # rotated 180
    (6, (32, 16), [B, R, Y, G]),  # stored lying on its side: display turns it 90 degrees clockwise
    (8, (32, 16), [G, Y, R, B]),  # 90 degrees counter-clockwise
    (2, (16, 32), [G, R, Y, B]),  # mirrored left-right
], ids=["upright", "180", "cw90", "ccw90", "mirror"])
def test_exif_orientation_is_applied(
    tmp_path: Path, orientation: int, shape: tuple[int, int], expected: list[tuple[int, ...]]
) -> None:
    path = tmp_path / "photo.jpg"
    quadrant_jpeg(path, orientation)
    rgb = images.read_rgb(path)
    assert rgb.shape[:2] == shape
    assert images.display_size(path) == shape
    assert quadrant_colours(rgb) == [tuple(c) for c in expected]


@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
def test_tiff_orientation_and_its_size_agree(tmp_path: Path, compression: str | None) -> None:
    path = tmp_path / "photo.tif"
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.new("RGB", (6, 4)).save(path, exif=exif, **({"compression": compression} if compression else {}))
    assert images.read_rgb(path).shape == (6, 4, 3)  # shown a quarter turn: 4 wide, 6 high
    assert images.display_size(path) == (6, 4)


def test_a_tiff_with_a_raw_exif_block_reports_the_size_it_decodes_to(tmp_path: Path) -> None:
    path = tmp_path / "odd.tif"
    # orientation 5 in a big-endian block with an "Exif" prefix (found by fuzzing): PIL reads no
    # orientation from the header but turns the pixels while decoding; the size must follow the pixels.
    block = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x05\x00\x00"
    Image.new("RGB", (6, 4), (1, 2, 3)).save(path, exif=block)
    assert images.display_size(path) == images.read_rgb(path).shape[:2]


@pytest.mark.parametrize("before_pixels", [True, False])
def test_png_exif_chunk_read_only_before_the_pixels(tmp_path: Path, before_pixels: bool) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    data = png_bytes(3, 2, 8, 0, [bytes([10, 20, 30]), bytes([40, 50, 60])])  # grey 3 wide, 2 high
    iend = data.rindex(b"IEND") - 4
    idat = data.index(b"IDAT") - 4
    at = idat if before_pixels else iend
    block = exif.tobytes()
    chunk = struct.pack(">I", len(block)) + b"eXIf" + block + struct.pack(">I", zlib.crc32(b"eXIf" + block))
    path = tmp_path / "exif.png"
    path.write_bytes(data[:at] + chunk + data[at:])
    want = np.array([[10, 20, 30], [40, 50, 60]], dtype=np.uint8)
    if before_pixels:
        want = np.rot90(want, k=-1)  # a quarter turn clockwise
    assert images.display_size(path) == want.shape
    assert np.array_equal(images.read_rgb(path)[:, :, 0], want)


def test_masks_follow_their_own_orientation(tmp_path: Path) -> None:
    path = tmp_path / "mask.png"
    mask = np.zeros((2, 4), dtype=np.uint8)
    mask[0, 0] = 255  # top-left of the stored pixels
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    Image.fromarray(mask).save(path, exif=exif)
    shown = images.read_mask(path)
    assert shown.shape == (4, 2)
    assert np.argwhere(shown).tolist() == [[0, 1]]  # turned clockwise: top-left goes to top-right


# ----------------------------------------------------------------------------- transparency and grey


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    path = tmp_path / "cutout.png"
    pixels = np.array([[[200, 100, 50, 0], [200, 100, 50, 255], [200, 100, 50, 128]]], dtype=np.uint8)
    Image.fromarray(pixels, mode="RGBA").save(path)
    # alpha 0 -> white whatever the hidden colour; 255 -> the colour;
    # 128 -> c*128/255 + 255*127/255: 200 -> 227.39, 100 -> 177.20, 50 -> 152.10
    want = np.array([[[255, 255, 255], [200, 100, 50], [227, 177, 152]]], dtype=np.uint8)
    assert np.array_equal(images.read_rgb(path), want)


def test_grey_with_alpha_is_composited_on_white(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    Image.fromarray(np.array([[[100, 128], [7, 255], [0, 0]]], dtype=np.uint8), mode="LA").save(path)
    # 100*128/255 + 127 = 177.2
    assert np.array_equal(images.read_rgb(path), grey3([[177, 7, 255]]))


def test_palette_with_a_transparent_index(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    image = Image.fromarray(np.array([[0, 1, 2]], dtype=np.uint8), mode="P")
    image.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90] + [0] * (256 * 3 - 9))
    image.save(path, transparency=0)
    assert np.array_equal(images.read_rgb(path), np.array([[[255, 255, 255], [40, 50, 60], [70, 80, 90]]]))


def test_palette_without_transparency(tmp_path: Path) -> None:
    path = tmp_path / "palette.png"
    image = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), mode="P")
    image.putpalette([10, 20, 30, 40, 50, 60] + [0] * (256 * 3 - 6))
    image.save(path)
    assert np.array_equal(images.read_rgb(path), np.array([[[10, 20, 30], [40, 50, 60]]]))


def test_grayscale_and_bilevel(tmp_path: Path) -> None:
    grey, bilevel = tmp_path / "grey.png", tmp_path / "bilevel.png"
    Image.fromarray(np.array([[0, 37], [128, 255]], dtype=np.uint8), mode="L").save(grey)
    Image.fromarray(np.array([[True, False]])).save(bilevel)
    assert np.array_equal(images.read_rgb(grey), grey3([[0, 37], [128, 255]]))
    assert np.array_equal(images.read_rgb(bilevel), grey3([[255, 0]]))


def test_rgb_png_is_exact(tmp_path: Path) -> None:
    path = tmp_path / "rgb.png"
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 13
    Image.fromarray(pixels).save(path)
    out = images.read_rgb(path)
    assert out.dtype == np.uint8 and np.array_equal(out, pixels)


def test_float_images_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    Image.fromarray(np.zeros((2, 2), dtype=np.float32), mode="F").save(path)
    with pytest.raises(ReviewSetError, match="floating-point") as info:
        images.read_rgb(path)
    assert info.value.path == str(path)


# ----------------------------------------------------------------------------- limits and broken files


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height pixels with a tiny (wrong) pixel stream: what a bomb looks like."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_a_pixel_bomb_is_an_input_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    png_header_only(path, 100_000, 100_000)  # 10 gigapixels
    for read in (images.read_rgb, images.read_mask, images.display_size):
        with pytest.raises(ReviewSetError) as info:
            read(path)
        assert info.value.path == str(path) and info.value.exit_code == 2
        assert "\n" not in str(info.value)


def test_our_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    png_header_only(path, 8000, 7000)  # 56 MP: over the 50 MP default, under PIL's own limit
    assert images.MAX_PIXELS < 8000 * 7000
    with pytest.raises(ReviewSetError, match="56000000 pixels, over the limit of 50000000") as info:
        images.read_rgb(path)
    assert info.value.path == str(path)
    small = tmp_path / "small.png"
    Image.new("RGB", (10, 10)).save(small)
    with pytest.raises(ReviewSetError, match="over the limit of 99"):
        images.read_rgb(small, max_pixels=99)
    assert images.read_rgb(small, max_pixels=100).shape == (10, 10, 3)


def test_pils_bomb_warning_becomes_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "warn.png"
    Image.new("RGB", (40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1600 pixels: a warning in PIL, not yet its error
    with pytest.raises(ReviewSetError, match="decompression bomb") as info:
        images.read_rgb(path, max_pixels=None)
    assert info.value.path == str(path)


def test_truncated_and_non_image_files(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for path in (truncated, text, tmp_path / "absent.png"):
        with pytest.raises(ReviewSetError) as info:
            images.read_rgb(path)
        assert info.value.path == str(path)

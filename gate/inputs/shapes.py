"""Coloured shapes on textured scenes, with exact object masks.

The generator behind ``review_sets/shapes-v1`` and the ``synth:shapes`` training
sources. Each sample is one shape (the class) on one scene texture; ``bias``
ties the scene to the class, like junkyards to damaged cars, so a model can
learn either the shape (honest) or the scene (a cheater).

Every sample draws from its own generator seeded by ``(seed, index)``, so a
sample does not depend on how many others were asked for, and labels come from
a shuffled block of the four classes per four samples, so classes stay balanced.

``shortcut`` adds one of the mask-free shortcuts the swap probes look for: a
class-coloured ``frame`` round the image, a class-coloured ``tag`` in the
bottom-right corner, or a class-coded colour ``cast`` over the whole image.
``shortcut_bias`` is the share of samples whose shortcut matches their class
(the others carry a random class's), so 0 gives the artefact without the cue.
Several kinds, comma-separated ("frame,tag,cast"), draw their cues independently.
The shortcut draws from a generator of its own: the image under it, and every
sample without one, stay byte-identical to the plain stream.

``palette`` says what colours a scene: ``"scene"`` (the default, as in shapes-v1:
each scene has its own palette, so the scene's colour and its texture are one cue)
or ``"random"`` (each sample's palette drawn independently of its scene, from a
generator of its own: the scene is then told by its texture alone, and a scene
reader is not a colour reader).
"""

from __future__ import annotations

import colorsys
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np

from gate.errors import DataError

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
SCENES: tuple[str, ...] = ("stripes", "dots", "checker", "waves")
PALETTE_MODES: tuple[str, ...] = ("scene", "random")
SHORTCUTS: tuple[str, ...] = ("frame", "tag", "cast")
# Seeds whose samples ship as review sets; training sources must never use them.
REVIEW_SEED = 20260
RESERVED_SEEDS: frozenset[int] = frozenset({REVIEW_SEED})
# Digests of the review sets made from those seeds (review_sets/shapes-v1): `xgate train` refuses them too.
RESERVED_DIGESTS: frozenset[str] = frozenset({
    "sha256:0cbc2680a27c291cbd5d13ea17f40ebe8a1835aaa9d758a10ad4be1d9e8eb67c",
})

# Muted two-colour palettes, one per scene. Object colours are saturated and bright
# (see _object_colour), so an object never blends into its scene.
_PALETTES: tuple[tuple[tuple[int, int, int], tuple[int, int, int]], ...] = (
    ((70, 90, 140), (150, 165, 200)),  # stripes: blue-grey
    ((60, 110, 70), (150, 190, 140)),  # dots: green
    ((120, 90, 60), (190, 160, 120)),  # checker: brown
    ((110, 70, 120), (180, 140, 185)),  # waves: purple
)
_AREA_RANGE = (0.09, 0.22)  # object area as a share of the image, before rasterisation
_MAX_TILT = math.radians(20.0)  # shapes are rotated "a bit", never enough to turn a square into a diamond
_NOISE = 6  # ± uniform pixel noise on scene and object
_SOURCE_RE = re.compile(r"^synth:shapes(?:\?(?P<query>.*))?$")
_SOURCE_KEYS: dict[str, type] = {"bias": float, "n": int, "seed": int, "size": int, "shortcut": str,
                                  "shortcut_bias": float, "palette": str}
# Shortcut colours, one per class: saturated and far apart, so a small CNN reads them at a glance.
_CUE_COLOURS = np.array([(230, 40, 40), (40, 200, 60), (50, 80, 230), (240, 220, 40)], dtype=np.float64)
# Colour casts, one per class: an additive shift of the channels (0-255), about one scene palette step.
_CASTS = np.array([(30, -15, -15), (-15, 30, -15), (-15, -15, 30), (22, 22, -30)], dtype=np.float64)
FRAME_WIDTH = 0.05  # share of the side: inside the swap probe's 6% band
TAG_SIZE = 0.15  # share of each side: the corners probe's patch (15%, rounded up) covers it
_TAG_BLACK, _TAG_WHITE = 15.0, 240.0


@dataclass(frozen=True)
class ShapeSample:
    """One generated image with its exact object mask."""

    sample_id: str  # "s<seed>-<index:06d>", unique within a seed
    image: np.ndarray  # uint8 [size, size, 3]
    mask: np.ndarray  # bool [size, size], True = object pixels
    label: int  # index into CLASSES
    scene: int  # index into SCENES
    cue: int = -1  # the class whose shortcut the sample carries (-1: none)


def generate(n: int, *, bias: float, seed: int, size: int = 64, shortcut: str | None = None,
             shortcut_bias: float = 1.0, palette: str = "scene") -> list[ShapeSample]:
    """``n`` samples; the same arguments always give byte-identical samples."""
    return list(iter_generate(n, bias=bias, seed=seed, size=size, shortcut=shortcut, shortcut_bias=shortcut_bias,
                              palette=palette))


def iter_generate(n: int, *, bias: float, seed: int, size: int = 64, shortcut: str | None = None,
                  shortcut_bias: float = 1.0, palette: str = "scene") -> Iterator[ShapeSample]:
    """The samples of :func:`generate`, one at a time."""
    _validate(n, bias, seed, size)
    _validate_shortcut(shortcut, shortcut_bias)
    _validate_palette(palette)
    kinds = () if shortcut is None else tuple(shortcut.split(","))
    for index in range(n):
        sample = make_sample(index, bias=bias, seed=seed, size=size, palette=palette)
        for kind in kinds:
            sample = with_shortcut(sample, kind, shortcut_bias, seed=seed, index=index)
        yield sample


def with_shortcut(sample: ShapeSample, kind: str, shortcut_bias: float, *, seed: int, index: int) -> ShapeSample:
    """``sample`` with a ``kind`` shortcut: its class's with probability ``shortcut_bias``, else a random class's.

    A frame or tag drawn over the object takes those pixels out of the mask (they are no longer object).
    """
    _validate_shortcut(kind, shortcut_bias)
    if kind not in SHORTCUTS:
        raise DataError(f"expected one shortcut of {list(SHORTCUTS)}, got {kind!r}", field="shortcut")
    # One stream per kind: several kinds on one sample draw their cues independently.
    rng = np.random.default_rng([seed, index, 2 + SHORTCUTS.index(kind)])
    cue = sample.label if rng.random() < shortcut_bias else int(rng.integers(len(CLASSES)))
    image = sample.image.astype(np.float64)
    size = image.shape[0]
    if kind == "cast":
        image = image + _CASTS[cue]
        return replace(sample, image=np.clip(np.rint(image), 0, 255).astype(np.uint8), cue=cue)
    region = shortcut_region(kind, size)
    painted = tag_pattern(cue, region) if kind == "tag" else np.broadcast_to(_CUE_COLOURS[cue], image.shape)
    image[region] = painted[region] + rng.integers(-_NOISE, _NOISE + 1, size=(int(region.sum()), 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    return replace(sample, image=image, mask=sample.mask & ~region, cue=cue)


def shortcut_region(kind: str, size: int) -> np.ndarray:
    """bool [size, size]: the pixels a ``frame`` (outer band) or ``tag`` (bottom-right square) covers."""
    region = np.zeros((size, size), dtype=bool)
    if kind == "frame":
        band = max(2, round(FRAME_WIDTH * size))
        region[:band] = region[-band:] = True
        region[:, :band] = region[:, -band:] = True
    elif kind == "tag":
        side = max(2, round(TAG_SIZE * size))
        region[-side:, -side:] = True
    else:
        raise DataError(f"expected a shortcut in {list(SHORTCUTS)} with a region, got {kind!r}", field="shortcut")
    return region


def tag_pattern(cue: int, region: np.ndarray) -> np.ndarray:
    """float [H, W, 3]: the tag of class ``cue`` over the bounding box of ``region`` (black and white).

    Black, white, black|white (split left-right) or black/white (split top-bottom): achromatic, so that no
    object (always saturated and bright) nor scene (muted mid-tones) looks like one; a left-right flip of
    the third is still a left-right split.
    """
    ys, xs = np.nonzero(region)
    y0, x0 = ys.min(), xs.min()
    h, w = ys.max() + 1 - y0, xs.max() + 1 - x0
    yy, xx = np.mgrid[0:region.shape[0], 0:region.shape[1]]
    white = {0: np.zeros(region.shape, dtype=bool), 1: np.ones(region.shape, dtype=bool),
             2: (xx - x0) >= w / 2, 3: (yy - y0) >= h / 2}[cue]
    return np.where(white[:, :, None], _TAG_WHITE, _TAG_BLACK).astype(np.float64)


def make_sample(index: int, *, bias: float, seed: int, size: int = 64, palette: str = "scene") -> ShapeSample:
    """Sample number ``index`` of the stream for ``seed`` (independent of how many are drawn)."""
    _validate_palette(palette)
    label = int(np.random.default_rng([seed, index // 4, 1]).permutation(len(CLASSES))[index % 4])
    rng = np.random.default_rng([seed, index, 0])
    own_scene = rng.random() < bias
    scene = label if own_scene else int(rng.integers(len(SCENES)))
    # Its own stream: with palette="scene" nothing is drawn from it and the sample is byte-identical to before.
    colours = scene if palette == "scene" else int(np.random.default_rng([seed, index, 9]).integers(len(_PALETTES)))
    background = render_scene(scene, size, rng, palette=colours)
    mask = render_mask(label, size, rng)
    colour = _object_colour(rng)
    noise = rng.integers(-_NOISE, _NOISE + 1, size=(size, size, 3))
    obj = np.clip(colour[None, None, :] + noise, 0, 255).astype(np.uint8)
    image = np.where(mask[:, :, None], obj, background)
    return ShapeSample(sample_id=f"s{seed}-{index:06d}", image=image, mask=mask, label=label, scene=scene)


def render_scene(scene: int, size: int, rng: np.random.Generator, palette: int | None = None) -> np.ndarray:
    """A uint8 [size, size, 3] texture of scene ``scene`` with random phase, scale and colour jitter.

    ``palette``: the index of the palette to paint it with (default: the scene's own).
    """
    ys, xs = _grid(size)
    scale = size / 64.0
    texture = _TEXTURES[scene]
    t = texture(xs / scale, ys / scale, rng)
    low, high = (np.asarray(c, dtype=np.float64) for c in _PALETTES[scene if palette is None else palette])
    shift = rng.uniform(-20, 20)  # shared brightness jitter keeps the palette's contrast
    low = low + shift + rng.uniform(-12, 12, size=3)
    high = high + shift + rng.uniform(-12, 12, size=3)
    rgb = low + t[:, :, None] * (high - low)
    rgb += rng.integers(-_NOISE, _NOISE + 1, size=rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def render_mask(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The bool mask of shape ``label``: random area, small tilt, fully inside the image."""
    ys, xs = _grid(size)
    area = rng.uniform(*_AREA_RANGE) * size * size
    tilt = rng.uniform(-_MAX_TILT, _MAX_TILT)
    inside, extent = _SHAPES[label](area)
    cx, cy = rng.uniform(extent + 1, size - extent - 1, size=2)  # a 1-pixel margin of scene all round
    cos, sin = math.cos(tilt), math.sin(tilt)
    dx, dy = xs - cx, ys - cy
    u = dx * cos + dy * sin
    v = -dx * sin + dy * cos
    return np.asarray(inside(u, v), dtype=bool)


def write_plain(samples: Iterable[ShapeSample], out_dir: Path) -> Path:
    """Write ``out_dir/images/<class>/<id>.png`` (RGB) and ``out_dir/masks/<class>/<id>.png`` (L, 255 = object)."""
    from PIL import Image

    out_dir = Path(out_dir)
    for sample in samples:
        name = CLASSES[sample.label]
        image_dir = out_dir / "images" / name
        mask_dir = out_dir / "masks" / name
        image_dir.mkdir(parents=True, exist_ok=True)
        mask_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample.image).save(image_dir / f"{sample.sample_id}.png")
        mask = np.where(sample.mask, 255, 0).astype(np.uint8)
        Image.fromarray(mask).save(mask_dir / f"{sample.sample_id}.png")
    return out_dir


def parse_synth_source(source: str) -> dict[str, float | int | str]:
    """``"synth:shapes?bias=1.0&n=6000&seed=7"`` -> ``{"bias": 1.0, "n": 6000, "seed": 7, "size": 64}``.

    ``bias``, ``n`` and ``seed`` are required, ``size`` defaults to 64; ``shortcut`` (frame, tag or cast)
    and ``shortcut_bias`` (default 1.0, only with a shortcut) and ``palette`` (scene or random) are
    optional; anything else, or a value out of range, is a :class:`DataError` naming the field.
    """
    match = _SOURCE_RE.match(source.strip())
    if match is None:
        raise DataError("expected synth:shapes?bias=B&n=N&seed=S[&size=P][&shortcut=frame|tag|cast&shortcut_bias=T]"
                        "[&palette=scene|random]",
                        path=source, field="source")
    values: dict[str, float | int | str] = {"size": 64}
    for part in filter(None, (match.group("query") or "").split("&")):
        key, sep, raw = part.partition("=")
        if not sep or key not in _SOURCE_KEYS:
            raise DataError(f"unknown parameter {part!r} (expected {sorted(_SOURCE_KEYS)})", path=source, field=key)
        try:
            values[key] = _SOURCE_KEYS[key](raw)
        except ValueError:
            kind = _SOURCE_KEYS[key].__name__
            raise DataError(f"expected {kind}, got {raw!r}", path=source, field=key) from None
    for key in ("bias", "n", "seed"):
        if key not in values:
            raise DataError("missing parameter", path=source, field=key)
    if "shortcut_bias" in values and "shortcut" not in values:
        raise DataError("shortcut_bias needs a shortcut (frame, tag or cast)", path=source, field="shortcut_bias")
    try:
        _validate(int(values["n"]), float(values["bias"]), int(values["seed"]), int(values["size"]))
        shortcut = values.get("shortcut")
        _validate_shortcut(None if shortcut is None else str(shortcut), float(values.get("shortcut_bias", 1.0)))
        _validate_palette(str(values.get("palette", "scene")))
    except DataError as exc:
        raise DataError(exc.message, path=source, field=exc.field) from None
    return values


def _validate(n: int, bias: float, seed: int, size: int) -> None:
    if n < 1:
        raise DataError(f"expected n >= 1, got {n}", field="n")
    if not 0.0 <= bias <= 1.0:
        raise DataError(f"expected bias in [0, 1], got {bias}", field="bias")
    if seed < 0:
        raise DataError(f"expected seed >= 0, got {seed}", field="seed")
    if size < 16:
        raise DataError(f"expected size >= 16, got {size}", field="size")


def _validate_shortcut(shortcut: str | None, shortcut_bias: float) -> None:
    kinds = [] if shortcut is None else shortcut.split(",")
    if shortcut is not None and (not set(kinds) <= set(SHORTCUTS) or len(set(kinds)) != len(kinds)):
        raise DataError(f"expected shortcut in {list(SHORTCUTS)} (or several, comma-separated, once each), "
                        f"got {shortcut!r}", field="shortcut")
    if not 0.0 <= shortcut_bias <= 1.0:
        raise DataError(f"expected shortcut_bias in [0, 1], got {shortcut_bias}", field="shortcut_bias")


def _validate_palette(palette: str) -> None:
    if palette not in PALETTE_MODES:
        raise DataError(f"expected palette in {list(PALETTE_MODES)}, got {palette!r}", field="palette")


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    # Pixel centres; cached because every sample of a size uses the same grid.
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    ys.flags.writeable = False
    xs.flags.writeable = False
    return ys, xs


def _object_colour(rng: np.random.Generator) -> np.ndarray:
    # Saturated and bright, any hue: far from every (muted) scene palette, and independent of the class.
    hue, sat, val = rng.random(), rng.uniform(0.75, 1.0), rng.uniform(0.85, 1.0)
    return np.asarray(colorsys.hsv_to_rgb(hue, sat, val)) * 255.0


# Textures on a 64-pixel frame: each returns t in [0, 1], the blend from the low to the high palette colour.


def _stripes(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    period, angle, phase = rng.uniform(6, 11), rng.uniform(0, math.pi), rng.uniform(0, 2 * math.pi)
    along = x * math.cos(angle) + y * math.sin(angle)
    return np.asarray(0.5 + 0.5 * np.sin(2 * math.pi * along / period + phase))


def _dots(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    spacing = rng.uniform(8, 13)
    radius = spacing * rng.uniform(0.22, 0.35)
    ox, oy = rng.uniform(0, spacing, size=2)
    dx = (x + ox) % spacing - spacing / 2
    dy = (y + oy) % spacing - spacing / 2
    dots: np.ndarray = (dx * dx + dy * dy <= radius * radius).astype(np.float64)
    return dots


def _checker(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cell = rng.uniform(5, 10)
    ox, oy = rng.uniform(0, 2 * cell, size=2)
    board: np.ndarray = ((np.floor((x + ox) / cell) + np.floor((y + oy) / cell)) % 2).astype(np.float64)
    return board


def _waves(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    period, wavelength = rng.uniform(7, 12), rng.uniform(14, 24)
    amplitude = rng.uniform(2.0, 3.5)
    p1, p2 = rng.uniform(0, 2 * math.pi, size=2)
    if rng.random() < 0.5:  # horizontal or vertical waves
        x, y = y, x
    phase = 2 * math.pi * y / period + amplitude * np.sin(2 * math.pi * x / wavelength + p1) + p2
    return np.asarray(0.5 + 0.5 * np.sin(phase))


_TEXTURES = (_stripes, _dots, _checker, _waves)


# Shapes of equal area (so size says nothing about the class): each returns (inside(u, v), circumradius).

_Inside = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _circle(area: float) -> tuple[_Inside, float]:
    r = math.sqrt(area / math.pi)
    return (lambda u, v: u * u + v * v <= r * r), r


def _square(area: float) -> tuple[_Inside, float]:
    half = math.sqrt(area) / 2
    return (lambda u, v: np.maximum(np.abs(u), np.abs(v)) <= half), half * math.sqrt(2)


def _triangle(area: float) -> tuple[_Inside, float]:
    # Equilateral, centroid at the origin, apex up; the inradius is half the circumradius.
    big_r = math.sqrt(4 * area / (3 * math.sqrt(3)))
    normals = [(math.cos(a), math.sin(a)) for a in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)]

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        ok = np.ones(u.shape, dtype=bool)
        for nx, ny in normals:
            ok &= u * nx + v * ny <= big_r / 2
        return ok

    return inside, big_r


def _cross(area: float) -> tuple[_Inside, float]:
    # Plus sign with arm half-width w = L/3 (half-length L): area = 8Lw - 4w² = 20L²/9.
    half_len = math.sqrt(9 * area / 20)
    half_w = half_len / 3

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        au, av = np.abs(u), np.abs(v)
        arms: np.ndarray = ((au <= half_len) & (av <= half_w)) | ((av <= half_len) & (au <= half_w))
        return arms

    return inside, math.hypot(half_len, half_w)


_SHAPES = (_circle, _square, _triangle, _cross)

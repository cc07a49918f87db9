"""Review-set sources: what people have, turned into samples to pin.

Each importer reads one kind of source and returns an ``ImportResult``: the
samples in a fixed order (``Entry``: image file, class, and how to get the
masks) plus notes for the person (what was skipped and why). The writer,
``gate.inputs.review_set.build_from``, copies the images and writes 8-bit PNG masks.

- ``plain``: ``images/<class>/<name>`` + ``masks/<class>/<stem>.*`` (nonzero =
  object); with ``voc``, the masks are Pascal-VOC palette PNGs (0 background,
  255 void, any other index object, or with a class list only the class's own
  index, other objects void); with ``allow_missing_masks``, an image without a
  mask file is a sample without a mask.
- ``coco`` (in :mod:`gate.inputs.coco`): a COCO JSON (polygons, RLE compressed
  or not, boxes), decoded by pycocotools. The class is the category of the
  image's objects, the mask the union of that category's instances.
- ``boxes``: a CSV ``image,label,x0,y0,x1,y1`` (pixel corners, x0 <= x < x1);
  an image's boxes of one label are united; a row with the four coordinates
  empty gives a sample without a mask.

An image with objects of several classes is skipped (``multi_class="skip"``,
counted in the notes) or gives one sample per class (``"split"``).
Annotation coordinates are in the image as displayed (EXIF orientation applied).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np

from gate.errors import ReviewSetError
from gate.inputs import images

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
MULTI_CLASS = ("skip", "split")
UNLABELLED = ("skip", "folder", "error")
VOID_INDEX = 255  # Pascal VOC: object boundaries and ambiguous pixels


@dataclass(frozen=True)
class Drawn:
    """Masks drawn from annotations: bool [H, W] each, None when absent."""

    mask: np.ndarray | None
    void: np.ndarray | None = None


@dataclass(frozen=True)
class Entry:
    """One sample to pin.

    ``name`` is the image's path under ``images/<class>/`` in the pinned set.
    The object mask comes from ``mask_file`` (nonzero = object, copied when it is
    already an 8-bit PNG) or from ``draw``; neither means a sample without a mask.
    ``source`` names the annotation for errors ("file: field").
    """

    sample_id: str
    label: str
    image: Path
    name: str
    mask_file: Path | None = None
    draw: Callable[[], Drawn] | None = None
    source: str = ""


@dataclass(frozen=True)
class ImportResult:
    """The samples of a source, in order, and what the person should know about it."""

    entries: tuple[Entry, ...]
    notes: tuple[str, ...] = field(default=())


# ----------------------------------------------------------------------------- plain and VOC


def plain(
    source: str | Path, *, allow_missing_masks: bool = False, voc: bool = False,
    voc_classes: Sequence[str] | None = None, no_masks: bool = False,
) -> ImportResult:
    """``source/images/<class>/*`` with masks in ``source/masks/<class>/<stem>.*``.

    ``voc_classes`` (palette order, index 1 first) makes the object of an image in
    ``<class>/`` that class's palette index only; other objects become void.
    ``no_masks``: a plain folder of class subfolders, ``source/<class>/*`` (or ``source/images/<class>/*``),
    every image pinned without a mask (the mask-free scores: accuracy, calibration, sanity, swap probes).
    """
    source = Path(source)
    if no_masks:
        if voc or voc_classes:
            raise ReviewSetError("--no-masks pins no mask: --voc and --voc-classes do not apply", path=source)
        images_dir = source / "images" if (source / "images").is_dir() else source
        return _unmasked(source, images_dir)
    images_dir, masks_dir = source / "images", source / "masks"
    if not images_dir.is_dir() or (not masks_dir.is_dir() and not allow_missing_masks):
        raise ReviewSetError("expected images/<class>/<image> and masks/<class>/<mask>", path=source)
    try:
        return _plain(source, images_dir, masks_dir, allow_missing_masks, voc, voc_classes)
    except OSError as exc:  # a folder that cannot be listed
        raise ReviewSetError(f"cannot read ({type(exc).__name__}: {exc.strerror})", path=exc.filename or source) \
            from None


def _unmasked(source: Path, images_dir: Path) -> ImportResult:
    if not source.is_dir():
        raise ReviewSetError("expected a folder of class subfolders (<class>/<image>)", path=source)
    try:
        found = _plain(source, images_dir, None, True, False, None)
    except OSError as exc:
        raise ReviewSetError(f"cannot read ({type(exc).__name__}: {exc.strerror})", path=exc.filename or source) \
            from None
    return ImportResult(found.entries, ("no masks: alignment and background probes do not apply",))


def _plain(
    source: Path, images_dir: Path, masks_dir: Path | None, allow_missing_masks: bool, voc: bool,
    voc_classes: Sequence[str] | None,
) -> ImportResult:
    entries, unmasked = [], 0
    for class_dir in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        index = _voc_index(class_dir, voc_classes)
        masks = _files_by_stem(masks_dir / class_dir.name) if masks_dir is not None else {}
        for image in _image_files(class_dir):
            mask = masks.get(image.stem)
            if mask is None and not allow_missing_masks:
                raise ReviewSetError("no mask for image (--allow-missing-masks pins it without one)",
                                     path=image, field="mask")
            if mask is not None and images.format_and_mode(mask)[0] == "JPEG":
                # JPEG artefacts make background pixels near zero but not zero: object, by the nonzero rule.
                raise ReviewSetError("a mask must be lossless (PNG); JPEG noise would turn background into object",
                                     path=mask, field="mask")
            unmasked += mask is None
            entry = Entry(sample_id=f"{class_dir.name}/{image.stem}", label=class_dir.name, image=image,
                          name=image.name, source=str(mask or image))
            if mask is not None and (voc or index is not None):
                entry = replace(entry, draw=_voc_reader(mask, index))
            elif mask is not None:
                entry = replace(entry, mask_file=mask)
            entries.append(entry)
    if not entries:
        raise ReviewSetError("no images found under images/<class>/", path=source)
    notes = (f"{unmasked} of {len(entries)} images have no mask (scored for metrics only)",) if unmasked else ()
    return ImportResult(tuple(entries), notes)


def voc_masks(values: np.ndarray, index: int | None = None) -> Drawn:
    """Pascal-VOC palette indices -> object and void masks (void None when no pixel is void).

    Without ``index``: object = nonzero and not 255, void = 255. With the class's
    ``index``: object = that index; void = 255 and every other object, which is
    neither the labelled object nor background.
    """
    if index is None:
        void = values == VOID_INDEX
        mask = (values != 0) & ~void
    else:
        mask = values == index
        void = (values != 0) & ~mask
    return Drawn(mask=mask, void=void if void.any() else None)


def read_class_list(path: str | Path) -> tuple[str, ...]:
    """Class names in palette order, one per line (index 1 first; a first line 'background' is index 0)."""
    try:
        names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ReviewSetError(f"unreadable class list ({type(exc).__name__})", path=path) from None
    if names and names[0].lower() in ("background", "__background__", "_background_"):
        names = names[1:]
    if not names or len(names) >= VOID_INDEX or len(set(names)) != len(names):
        raise ReviewSetError("want 1 to 254 distinct class names, one per line", path=path)
    return tuple(names)


def _voc_index(class_dir: Path, voc_classes: Sequence[str] | None) -> int | None:
    if voc_classes is None:
        return None
    if class_dir.name not in voc_classes:
        raise ReviewSetError(f"class folder {class_dir.name!r} is not in the VOC class list", path=class_dir,
                             field="class")
    return list(voc_classes).index(class_dir.name) + 1


def _voc_reader(path: Path, index: int | None) -> Callable[[], Drawn]:
    def draw() -> Drawn:
        mode = images.format_and_mode(path)[1]
        if mode not in ("P", "L"):
            raise ReviewSetError(f"a VOC mask holds class indices (palette or 8-bit grey PNG), not mode {mode}",
                                 path=path, field="mask")
        return voc_masks(images.read_mask_values(path), index)
    return draw


def _image_files(folder: Path) -> list[Path]:
    # Hidden files (".x.jpg", macOS "._x.jpg" forks) are not photos of the set.
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _files_by_stem(folder: Path) -> dict[str, Path]:
    """stem -> the mask file of that name (a .png first, when several suffixes share a stem)."""
    if not folder.is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: (p.suffix.lower() != ".png", p.name)):
        if path.is_file() and not path.name.startswith("."):
            found.setdefault(path.stem, path)
    return found


def inside_folder(folder: Path, rel: str, json_path: Path, where: str) -> Path:
    """``folder / rel`` for a relative path that stays inside ``folder``, else an error naming the annotation file."""
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or "\\" in rel:
        raise ReviewSetError(f"{rel!r} must be a path inside {folder}", path=json_path, field=where)
    file = folder / pure
    if not file.is_file():
        raise ReviewSetError(f"image {file} not found", path=json_path, field=where)
    if not file.resolve().is_relative_to(folder.resolve()):
        raise ReviewSetError(f"{rel!r} resolves outside {folder}", path=json_path, field=where)
    return file


# ----------------------------------------------------------------------------- boxes CSV

BOX_COLUMNS = ("image", "label", "x0", "y0", "x1", "y1")


def boxes(csv_path: str | Path, images_dir: str | Path, *, multi_class: str = "skip") -> ImportResult:
    """Samples from a CSV of boxes ``image,label,x0,y0,x1,y1`` (image paths relative to ``images_dir``)."""
    csv_path, images_dir = Path(csv_path), Path(images_dir)
    rows = _box_rows(csv_path, images_dir)
    entries: list[Entry] = []
    skipped = 0
    for rel, by_label in rows.items():
        if len(by_label) > 1 and multi_class == "skip":
            skipped += 1
            continue
        stem = str(PurePosixPath(rel).with_suffix(""))
        for label, (first_line, image, found) in sorted(by_label.items()):
            source = f"{csv_path}:{first_line}"
            draw = _box_reader(csv_path, image, found) if found else None
            entries.append(Entry(f"{label}/{stem}", label, image, rel, draw=draw, source=source))
    if not entries:
        raise ReviewSetError("no samples", path=csv_path)
    notes = (f"{csv_path}: {skipped} images with boxes of several labels skipped "
             "(--multi-class split gives one sample per label)",) if skipped else ()
    return ImportResult(tuple(entries), notes)


_Box = tuple[int, tuple[float, float, float, float]]  # (line, (x0, y0, x1, y1))


def _box_rows(path: Path, images_dir: Path) -> dict[str, dict[str, tuple[int, Path, list[_Box]]]]:
    rows: dict[str, dict[str, tuple[int, Path, list[_Box]]]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in BOX_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ReviewSetError(f"missing columns {missing} (want {','.join(BOX_COLUMNS)})", path=path,
                                     field=missing[0])
            for line, row in enumerate(reader, start=2):
                where = f"{path}:{line}"
                rel, label = row.get("image") or "", (row.get("label") or "").strip()
                if not label:
                    raise ReviewSetError("empty label", path=where, field="label")
                image = inside_folder(images_dir, rel, Path(where), "image")
                _, _, found = rows.setdefault(rel, {}).setdefault(label, (line, image, []))
                box = _box_of(where, row)
                if box is not None:
                    found.append((line, box))
    except OSError as exc:
        raise ReviewSetError(f"unreadable boxes CSV ({type(exc).__name__})", path=path) from None
    return rows


def _box_of(where: str, row: dict[str, str]) -> tuple[float, float, float, float] | None:
    texts = [(row.get(c) or "").strip() for c in BOX_COLUMNS[2:]]
    if not any(texts):
        return None  # a known label without a box: a sample without a mask
    values = []
    for column, text in zip(BOX_COLUMNS[2:], texts, strict=True):
        try:
            value = float(text)
        except ValueError:
            raise ReviewSetError(f"not a number: {text!r}", path=where, field=column) from None
        if not math.isfinite(value) or value < 0:
            raise ReviewSetError(f"must be a finite number >= 0, got {text!r}", path=where, field=column)
        values.append(value)
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise ReviewSetError(f"empty box ({x0}, {y0}) - ({x1}, {y1})", path=where, field="x1" if x1 <= x0 else "y1")
    return x0, y0, x1, y1


def _box_reader(path: Path, image: Path, found: Iterable[_Box]) -> Callable[[], Drawn]:
    def draw() -> Drawn:
        from pycocotools import mask as coco_mask

        height, width = images.display_size(image)
        union = np.zeros((height, width), dtype=bool)
        for line, (x0, y0, x1, y1) in found:
            if x1 > width or y1 > height:
                raise ReviewSetError(f"box ({x0}, {y0}) - ({x1}, {y1}) leaves the {width}x{height} image",
                                     path=f"{path}:{line}", field="x1" if x1 > width else "y1")
            # pycocotools rasterises the box as COCO does (x, y, width, height), like the COCO importer.
            rle = coco_mask.frPyObjects(np.array([[x0, y0, x1 - x0, y1 - y0]], dtype=np.float64), height, width)
            union |= np.asarray(coco_mask.decode(rle)[:, :, 0], dtype=bool)
        return Drawn(union)
    return draw

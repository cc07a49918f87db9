"""COCO instances JSON as a review-set source (``xgate review-set build --coco``).

Polygons, RLE (compressed or not) and boxes are decoded by pycocotools; an
image's class is the category of its objects and its mask the union of that
category's instances. What to do with images of several categories or none is
the caller's choice (see :mod:`gate.inputs.importers`, which holds the shared
``Entry``/``ImportResult`` types and the other sources).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from gate.errors import ReviewSetError
from gate.inputs import files, images
from gate.inputs.importers import Drawn, Entry, ImportResult, inside_folder


def coco(
    json_path: str | Path, images_dir: str | Path, *, multi_class: str = "skip", unlabelled: str = "skip"
) -> ImportResult:
    """Samples from a COCO instances JSON whose ``file_name``s are relative to ``images_dir``.

    ``unlabelled`` says what to do with an image that has no annotation: "skip"
    it (counted in the notes), "folder" (its label is the first folder of its
    file_name, which must name a category; it has no mask), or "error".
    """
    json_path, images_dir = Path(json_path), Path(images_dir)
    data = _read_json(json_path)
    categories = _coco_categories(json_path, data)
    images_by_id = _coco_images(json_path, data, images_dir)
    objects = _coco_objects(json_path, data, categories, images_by_id)
    entries: list[Entry] = []
    skipped_multi = skipped_unlabelled = 0
    for image_id, image in images_by_id.items():
        by_label = objects.get(image_id, {})
        stem = str(PurePosixPath(image.file_name).with_suffix(""))
        if not by_label:
            label = _unlabelled_label(json_path, image, unlabelled, set(categories.values()))
            skipped_unlabelled += label is None
            if label is not None:
                entries.append(Entry(f"{label}/{stem}", label, image.path, image.file_name,
                                     source=f"{json_path}: {image.where}"))
            continue
        if len(by_label) > 1 and multi_class == "skip":
            skipped_multi += 1
            continue
        for label, anns in sorted(by_label.items()):
            where = f"{json_path}: {image.where}"
            entries.append(Entry(f"{label}/{stem}", label, image.path, image.file_name,
                                 draw=_coco_reader(json_path, image, anns), source=where))
    notes = []
    if skipped_multi:
        notes.append(f"{json_path}: {skipped_multi} images with objects of several categories skipped "
                     "(--multi-class split gives one sample per category)")
    if skipped_unlabelled:
        notes.append(f"{json_path}: {skipped_unlabelled} images without annotations skipped "
                     "(--unlabelled folder takes their class from their folder)")
    if not entries:
        raise ReviewSetError("no samples: no image has an annotation", path=json_path, field="annotations")
    return ImportResult(tuple(entries), tuple(notes))


def _coco_objects(
    json_path: Path, data: dict[str, Any], categories: dict[int, str], images_by_id: dict[int, _CocoImage]
) -> dict[int, dict[str, list[tuple[int, Any]]]]:
    """image id -> label -> [(index in annotations, annotation)], each annotation checked."""
    objects: dict[int, dict[str, list[tuple[int, Any]]]] = {}
    for index, ann in enumerate(_list(json_path, data, "annotations")):
        where = f"annotations[{index}]"
        if not isinstance(ann, dict):
            raise ReviewSetError("must be an object", path=json_path, field=where)
        image_id, category_id = ann.get("image_id"), ann.get("category_id")
        if not _is_int(image_id) or image_id not in images_by_id:
            raise ReviewSetError(f"image_id {image_id!r} is not in images", path=json_path, field=f"{where}.image_id")
        if not _is_int(category_id) or category_id not in categories:
            raise ReviewSetError(f"category_id {category_id!r} is not in categories", path=json_path,
                                 field=f"{where}.category_id")
        _check_annotation(json_path, where, ann, images_by_id[image_id])
        objects.setdefault(image_id, {}).setdefault(categories[category_id], []).append((index, ann))
    return objects


@dataclass(frozen=True)
class _CocoImage:
    where: str  # "images[i]"
    file_name: str
    path: Path
    height: int
    width: int


def _read_json(path: Path) -> dict[str, Any]:
    data = files.read_json(path, error=ReviewSetError)
    if not isinstance(data, dict):
        raise ReviewSetError("a COCO file is a JSON object with images, annotations and categories", path=path)
    return data


def _list(path: Path, data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    if not isinstance(value, list):
        raise ReviewSetError("must be a list", path=path, field=key)
    return value


def _coco_categories(path: Path, data: dict[str, Any]) -> dict[int, str]:
    categories: dict[int, str] = {}
    for index, cat in enumerate(_list(path, data, "categories")):
        where = f"categories[{index}]"
        if not isinstance(cat, dict) or not _is_int(cat.get("id")):
            raise ReviewSetError("needs an integer id", path=path, field=f"{where}.id")
        name = cat.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ReviewSetError("needs a name", path=path, field=f"{where}.name")
        if int(cat["id"]) in categories:  # kept, the second name would silently relabel the first one's objects
            raise ReviewSetError(f"category id {cat['id']} listed twice ({categories[int(cat['id'])]!r} and "
                                 f"{name!r})", path=path, field=f"{where}.id")
        categories[int(cat["id"])] = name
    return categories


def _coco_images(path: Path, data: dict[str, Any], images_dir: Path) -> dict[int, _CocoImage]:
    found: dict[int, _CocoImage] = {}
    names: set[str] = set()
    for index, item in enumerate(_list(path, data, "images")):
        where = f"images[{index}]"
        if not isinstance(item, dict) or not _is_int(item.get("id")):
            raise ReviewSetError("needs an integer id", path=path, field=f"{where}.id")
        for key in ("width", "height"):
            if not _is_int(item.get(key)) or item[key] < 1:
                raise ReviewSetError("must be a positive integer", path=path, field=f"{where}.{key}")
        file_name = item.get("file_name")
        if not isinstance(file_name, str) or not file_name:
            raise ReviewSetError("needs a file_name", path=path, field=f"{where}.file_name")
        image_path = inside_folder(images_dir, file_name, path, f"{where}.file_name")
        if item["id"] in found or file_name in names:
            raise ReviewSetError("listed twice", path=path, field=f"{where}.id" if item["id"] in found
                                 else f"{where}.file_name")
        names.add(file_name)
        height, width = images.display_size(image_path)
        if (height, width) != (item["height"], item["width"]):
            raise ReviewSetError(f"says {item['width']}x{item['height']} but {image_path} is {width}x{height} "
                                 "(as displayed, EXIF orientation applied)", path=path, field=f"{where}.width")
        found[int(item["id"])] = _CocoImage(where, file_name, image_path, height, width)
    return found


# Annotation coordinates may leave the image a little (COCO polygons do), never by more than this many image
# sides: pycocotools rasterises in C with int arithmetic, and coordinates of 1e9 crash it (a segfault).
COORDINATE_MARGIN = 1.0


def _check_annotation(path: Path, where: str, ann: dict[str, Any], image: _CocoImage) -> None:
    """Everything pycocotools will be given, checked first (it does not check, and some inputs crash it)."""
    segm = ann.get("segmentation")
    if isinstance(segm, list) and segm:
        for number, polygon in enumerate(segm):
            if (not isinstance(polygon, list) or len(polygon) < 6 or len(polygon) % 2
                    or not all(_finite(v) for v in polygon)):
                raise ReviewSetError("a polygon is a list of at least 3 x,y pairs of finite numbers", path=path,
                                     field=f"{where}.segmentation[{number}]")
            _check_coordinates(path, f"{where}.segmentation[{number}]", polygon, image)
    elif isinstance(segm, dict):
        _check_rle(path, f"{where}.segmentation", segm, image)
    elif segm in (None, []):
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_finite(v) for v in bbox)
                and bbox[2] > 0 and bbox[3] > 0):
            raise ReviewSetError("no segmentation and no usable bbox [x, y, width, height]", path=path,
                                 field=f"{where}.bbox")
        x, y, width, height = bbox
        _check_coordinates(path, f"{where}.bbox", [x, y, x + width, y + height], image)
    else:
        raise ReviewSetError("must be polygons, an RLE object or empty", path=path, field=f"{where}.segmentation")


def _check_coordinates(path: Path, where: str, values: list[Any], image: _CocoImage) -> None:
    """x, y pairs within COORDINATE_MARGIN image sides of the image."""
    for index, value in enumerate(values):
        side = image.width if index % 2 == 0 else image.height
        low, high = -COORDINATE_MARGIN * side, (1 + COORDINATE_MARGIN) * side
        if not low <= value <= high:
            axis = "x" if index % 2 == 0 else "y"
            raise ReviewSetError(f"{axis} = {value!r} is far outside the {image.width}x{image.height} image "
                                 f"(allowed {low:g} to {high:g})", path=path, field=where)


def _check_rle(path: Path, where: str, segm: dict[str, Any], image: _CocoImage) -> None:
    size, counts = segm.get("size"), segm.get("counts")
    if size != [image.height, image.width]:
        raise ReviewSetError(f"RLE size {size!r} differs from the image's [{image.height}, {image.width}]",
                             path=path, field=f"{where}.size")
    pixels = image.height * image.width
    if isinstance(counts, str):
        runs = compressed_counts(counts)
        if runs is None:
            raise ReviewSetError("RLE counts is not a COCO compressed string", path=path, field=f"{where}.counts")
    elif isinstance(counts, list) and all(_is_int(c) and c >= 0 for c in counts):
        runs = counts
    else:
        raise ReviewSetError("RLE counts must be a string or a list of integers >= 0", path=path,
                             field=f"{where}.counts")
    # Empty counts ("") decode to uninitialised memory in pycocotools: the runs must cover the image exactly.
    if sum(runs) != pixels:
        raise ReviewSetError(f"RLE counts sum to {sum(runs)} pixels, not the image's {pixels}", path=path,
                             field=f"{where}.counts")


def compressed_counts(text: str) -> list[int] | None:
    """The run lengths of a COCO compressed RLE string (pycocotools' rleFrString), None if malformed.

    Each count is 6-bit groups (character - 48), 5 data bits and a continuation bit, the last group's
    fifth bit the sign; from the third count on, the value is a difference to the count two before.
    """
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(text) or not 48 <= ord(text[position]) < 48 + 64:
                return None
            group = ord(text[position]) - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position, shift = position + 1, shift + 5
            if not more and group & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        if value < 0:
            return None
        counts.append(value)
    return counts


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _coco_reader(path: Path, image: _CocoImage, anns: list[tuple[int, Any]]) -> Callable[[], Drawn]:
    def draw() -> Drawn:
        union = np.zeros((image.height, image.width), dtype=bool)
        for index, ann in anns:
            union |= _coco_mask(path, f"annotations[{index}]", ann, image)
        if not union.any():
            raise ReviewSetError("the objects of this image cover no pixel", path=path,
                                 field=f"annotations[{anns[0][0]}]")
        return Drawn(union)
    return draw


def _coco_mask(path: Path, where: str, ann: dict[str, Any], image: _CocoImage) -> np.ndarray:
    from pycocotools import mask as coco_mask  # a C extension: paid only when a COCO file is read

    height, width, segm = image.height, image.width, ann.get("segmentation")
    try:
        if isinstance(segm, list) and segm:
            rle = coco_mask.merge(coco_mask.frPyObjects(segm, height, width))
        elif isinstance(segm, dict) and isinstance(segm["counts"], list):
            rle = coco_mask.frPyObjects(segm, height, width)  # uncompressed RLE -> compressed
        elif isinstance(segm, dict):
            rle = segm
        else:
            boxes = np.array([ann["bbox"]], dtype=np.float64)
            rle = coco_mask.merge(coco_mask.frPyObjects(boxes, height, width))
        return np.asarray(coco_mask.decode(rle), dtype=bool)
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as exc:
        raise ReviewSetError(f"cannot decode ({type(exc).__name__}: {exc})", path=path,
                             field=f"{where}.segmentation") from None


def _unlabelled_label(path: Path, image: _CocoImage, unlabelled: str, names: set[str]) -> str | None:
    if unlabelled == "skip":
        return None
    if unlabelled == "error":
        raise ReviewSetError("image has no annotation (--unlabelled skip or folder)", path=path,
                             field=f"{image.where}.file_name")
    parts = PurePosixPath(image.file_name).parts
    if len(parts) < 2 or parts[0] not in names:
        raise ReviewSetError(f"image has no annotation and its folder {parts[0] if len(parts) > 1 else ''!r} "
                             "names no category (--unlabelled folder)", path=path, field=f"{image.where}.file_name")
    return parts[0]

"""What ``xgate train`` trains on: a synthetic shapes source, an image folder or a review set, in memory."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gate.errors import DataError
from gate.inputs import shapes

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class TrainData:
    """A training source loaded into memory."""

    images: np.ndarray  # uint8 [N, H, W, 3]
    masks: np.ndarray | None  # bool [N, H, W]
    labels: np.ndarray  # int64 [N]
    classes: tuple[str, ...]
    digest: str  # "sha256:...": the review set's digest, else sha256 over the arrays


def load_data(source: str, image_size: int, *, need_masks: bool = False) -> TrainData:
    """Load ``synth:shapes?...``, an ImageFolder tree (optionally ``images/`` + ``masks/``) or a review-set folder."""
    if source.startswith("synth:"):
        return _load_synth(source, image_size)
    root = Path(source)
    if not root.is_dir():
        raise DataError("no such folder (expected a folder or synth:shapes?bias=..&n=..&seed=..[&shortcut=..])",
                        path=source)
    if (root / "review.yaml").is_file():
        data = _load_review_set(root, image_size)
    else:
        data = _load_folder(root, image_size, need_masks)
    if need_masks and data.masks is None:
        raise DataError("recipe bgmix needs masks: none found (expected DIR/images/<class>/*.png "
                        "+ DIR/masks/<class>/*.png)", path=source)
    return data


def _load_synth(source: str, image_size: int) -> TrainData:
    params = shapes.parse_synth_source(source)
    seed, size = int(params["seed"]), int(params["size"])
    if seed in shapes.RESERVED_SEEDS:
        raise DataError(f"seed {seed} is reserved for the shipped review set; train on another seed",
                        path=source, field="seed")
    shortcut = params.get("shortcut")
    samples = shapes.generate(int(params["n"]), bias=float(params["bias"]), seed=seed, size=size,
                              shortcut=None if shortcut is None else str(shortcut),
                              shortcut_bias=float(params.get("shortcut_bias", 1.0)),
                              palette=str(params.get("palette", "scene")))
    images = np.stack([_fit_image(s.image, image_size) for s in samples])
    masks = np.stack([_fit_mask(s.mask, image_size) for s in samples])
    labels = np.asarray([s.label for s in samples], dtype=np.int64)
    return _finish(images, masks, labels, shapes.CLASSES, source, digest=None)


def _load_folder(root: Path, image_size: int, need_masks: bool) -> TrainData:
    image_root = root / "images" if (root / "images").is_dir() else root
    mask_root = root / "masks" if image_root != root and (root / "masks").is_dir() else None
    classes = tuple(sorted(d.name for d in image_root.iterdir() if d.is_dir() and not d.name.startswith(".")))
    files = {name: sorted(p for p in (image_root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
             for name in classes}
    if not any(files.values()):
        raise DataError("no images found (expected DIR/<class>/*.png or DIR/images/<class>/*.png)", path=root)
    empty = [name for name in classes if not files[name]]
    if empty:
        raise DataError(f"class folder(s) {empty} hold no images", path=image_root)
    paths = [(p, label) for label, name in enumerate(classes) for p in files[name]]
    images = np.stack([_read_image(p, image_size) for p, _ in paths])
    labels = np.asarray([label for _, label in paths], dtype=np.int64)
    masks = None
    if mask_root is not None:
        mask_paths = [mask_root / p.parent.name / f"{p.stem}.png" for p, _ in paths]
        missing = [m for m in mask_paths if not m.is_file()]
        if missing and need_masks:
            raise DataError(f"recipe bgmix needs masks: {len(missing)} missing, e.g. {missing[0]}", path=root)
        if not missing:
            masks = np.stack([_read_mask(m, image_size) for m in mask_paths])
    return _finish(images, masks, labels, classes, str(root), digest=None)


def _load_review_set(root: Path, image_size: int) -> TrainData:
    # The review set's own reader: the pin, the path rules and the image decoding (EXIF, 16-bit, ...) are the
    # gate's, and its class order is kept so the candidate matches it without remapping.
    from gate.inputs.review_set import open_review_set

    review = open_review_set(root)
    if review.digest in shapes.RESERVED_DIGESTS:
        raise DataError("this is the shipped review set; a candidate trained on it would be gated on its own "
                        "training data", path=root)
    images = np.stack([_fit_image(review.load_image(i), image_size) for i in range(review.size)])
    loaded = [review.load_mask(i) for i in range(review.size)]
    masks = None if any(m is None for m in loaded) else np.stack([_fit_mask(m, image_size) for m in loaded
                                                                  if m is not None])
    return _finish(images, masks, review.labels(), review.classes, str(root), review.digest)


def _finish(
    images: np.ndarray,
    masks: np.ndarray | None,
    labels: np.ndarray,
    classes: Sequence[str],
    source: str,
    digest: str | None,
) -> TrainData:
    present = np.unique(labels)
    if len(present) < 2:
        only = classes[int(present[0])] if len(present) else "none"
        raise DataError(f"found a single class ({only!r}); training needs at least two", path=source)
    return TrainData(images=images, masks=masks, labels=labels, classes=tuple(classes),
                     digest=digest or array_digest(images, masks, labels, classes))


def array_digest(images: np.ndarray, masks: np.ndarray | None, labels: np.ndarray, classes: Sequence[str]) -> str:
    """``sha256:`` over the class names, labels, images and masks as loaded."""
    digest = hashlib.sha256()
    digest.update("\n".join(classes).encode())
    digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    digest.update(np.ascontiguousarray(images).tobytes())
    if masks is not None:
        digest.update(np.packbits(masks).tobytes())
    return f"sha256:{digest.hexdigest()}"


def _read_image(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return _fit_image(np.asarray(img.convert("RGB")), size)
    except OSError as exc:
        raise DataError(f"cannot read image: {exc}".splitlines()[0], path=path) from None


def _read_mask(path: Path, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return _fit_mask(np.asarray(img.convert("L")) > 0, size)
    except OSError as exc:
        raise DataError(f"cannot read mask: {exc}".splitlines()[0], path=path) from None


def _fit_image(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _fit_mask(mask: np.ndarray, size: int) -> np.ndarray:
    if mask.shape == (size, size):
        return mask
    from PIL import Image

    small = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(small) > 0

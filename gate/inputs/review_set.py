"""Review sets: the checksum-pinned ``xgate.review_set/v1`` folder, opened and verified.

A review set is a folder with review.yaml, samples.csv (id,image,mask,label
[,slice][,void]; an empty mask = a sample without one), images/, masks/ (void/
when some pixels are void) and SHA256SUMS; its digest is the sha256 of
SHA256SUMS. Every file is checked against SHA256SUMS before use, and every path
samples.csv names must stay inside the folder and be listed there, so a changed
byte, an added file or a file read from elsewhere is an input error, never a
silent pass. Images are decoded by gate.inputs.images; sources people have
(COCO, VOC, boxes) are read by gate.inputs.importers and written by build_from.
"""

from __future__ import annotations

import csv
import hashlib
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import yaml
from PIL import Image

from gate.errors import ReviewSetError
from gate.inputs import images, importers
from gate.inputs.review_files import (
    SUMS,
    Sample,
    check_inside,
    check_relative,
    file_sha256,
    ignored,
    is_file,
    normal_digest,
    read_meta,
    read_samples,
    read_sums,
)

FORMAT = "xgate.review_set/v1"


@dataclass(frozen=True)
class ReviewSet:
    """An opened, verified review set."""

    root: Path
    name: str
    version: str
    description: str
    classes: tuple[str, ...]
    samples: tuple[Sample, ...]
    digest: str  # "sha256:<hex>"

    @property
    def size(self) -> int:
        """Number of samples."""
        return len(self.samples)

    @property
    def has_mask(self) -> np.ndarray:
        """bool [N]: which samples have an object mask (no file is decoded)."""
        return np.array([bool(s.mask) for s in self.samples], dtype=bool)

    def load_image(self, index: int) -> np.ndarray:
        """The image of sample ``index`` as uint8 RGB [H, W, 3] (EXIF-oriented; see gate.inputs.images)."""
        return images.read_rgb(self.root / self.samples[index].image)

    def load_mask(self, index: int) -> np.ndarray | None:
        """The object mask of sample ``index`` as bool [H, W] (nonzero = object); None when it has none."""
        return self._load_aligned(index, self.samples[index].mask, "mask")

    def load_void(self, index: int) -> np.ndarray | None:
        """The void mask of sample ``index`` as bool [H, W] (True = void); None when it has none."""
        return self._load_aligned(index, self.samples[index].void, "void")

    def _load_aligned(self, index: int, rel: str, field: str) -> np.ndarray | None:
        if not rel:
            return None
        mask = images.read_mask(self.root / rel, what=field)
        size = images.display_size(self.root / self.samples[index].image)
        if mask.shape != size:
            raise ReviewSetError(f"{field} size {mask.shape[::-1]} differs from image size {size[::-1]} (w, h)",
                                 path=self.root / rel, field=field)
        return mask

    def labels(self) -> np.ndarray:
        """Labels of all samples, int64 [N]."""
        return np.array([s.label for s in self.samples], dtype=np.int64)


def digest_of(root: str | Path) -> str:
    """``sha256:<hex>`` of the folder's SHA256SUMS file."""
    path = Path(root) / SUMS
    try:
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        raise ReviewSetError(f"missing {SUMS}; pin the folder with `xgate review-set build`", path=root) from None


def verify(root: str | Path, expected_digest: str | None = None) -> str:
    """Check every file against SHA256SUMS (and the digest if given); return the digest."""
    root = Path(root)
    if not root.is_dir():
        raise ReviewSetError("review set folder not found", path=root)
    digest = digest_of(root)
    if expected_digest is not None and normal_digest(expected_digest) != digest:
        raise ReviewSetError(
            f"digest {digest} does not match the pinned {expected_digest} (the review set changed)",
            path=root, field="digest",
        )
    listed = read_sums(root)
    for rel, want in listed.items():
        file = root / rel
        if not is_file(file):
            raise ReviewSetError(f"file listed in {SUMS} is missing", path=file)
        check_inside(root, rel, path=file, field=SUMS)
        try:
            actual = file_sha256(file)
        except OSError as exc:
            raise ReviewSetError(f"unreadable ({type(exc).__name__})", path=file) from None
        if actual != want:
            raise ReviewSetError(f"checksum mismatch (file changed since the set was pinned; {SUMS})", path=file)
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root).as_posix()
        if file.is_file() and rel != SUMS and rel not in listed and not ignored(rel):
            raise ReviewSetError(f"file not listed in {SUMS} (added after pinning)", path=file)
    return digest


def open_review_set(root: str | Path, *, expected_digest: str | None = None, check: bool = True) -> ReviewSet:
    """Open a review set; with ``check`` every file is verified first (and the digest if given)."""
    root = Path(root)
    digest = verify(root, expected_digest) if check else digest_of(root)
    listed = read_sums(root)
    for rel in ("review.yaml", "samples.csv"):
        if rel not in listed:
            raise ReviewSetError(f"{rel} is not listed in {SUMS}", path=root / SUMS, field=rel)
    meta = read_meta(root)
    classes: tuple[str, ...] = tuple(meta["classes"])  # type: ignore[arg-type]  # validated by read_meta
    samples = read_samples(root, classes, listed)
    return ReviewSet(
        root=root, name=str(meta.get("name") or root.name), version=str(meta.get("version", "1")),
        description=str(meta.get("description", "")), classes=classes, samples=samples, digest=digest,
    )


def build(
    source: str | Path, out: str | Path, *, name: str | None = None, version: str = "1", description: str = "",
    allow_missing_masks: bool = False, voc: bool = False,
) -> ReviewSet:
    """Pin ``source/images/<class>/*`` + ``source/masks/<class>/*`` as a v1 review set in ``out``.

    ``voc``: the masks are Pascal-VOC palette PNGs (255 = void); ``allow_missing_masks``:
    an image without a mask is pinned as a sample without one (see gate.inputs.importers).
    """
    found = importers.plain(source, allow_missing_masks=allow_missing_masks, voc=voc)
    return build_from(found.entries, out, source=source, name=name, version=version, description=description)


def build_from(
    entries: Sequence[importers.Entry], out: str | Path, *, source: str | Path, name: str | None = None,
    version: str = "1", description: str = "",
) -> ReviewSet:
    """Pin the samples of an importer in ``out``: images copied byte for byte (JPEG, PNG; other formats
    re-encoded as PNG), masks written as 8-bit PNGs, then SHA256SUMS. ``out`` appears only when complete."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReviewSetError("output folder exists and is not empty", path=out)
    classes = tuple(sorted({entry.label for entry in entries}))
    if len(classes) < 2:
        raise ReviewSetError(f"a review set needs at least two classes, found {list(classes)}", path=source,
                             field="classes")
    meta: dict[str, object] = {"format": FORMAT, "name": name or out.name, "version": str(version),
                               "description": description, "classes": list(classes)}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        raise ReviewSetError(f"cannot write here ({type(exc).__name__}: {exc.strerror})", path=out) from None
    try:
        rows = _pin_entries(entries, partial)
        _write_manifest(partial, rows, meta)
        write_sums(partial)
        if out.exists():
            out.rmdir()
        partial.rename(out)
    except OSError as exc:  # a source file that cannot be read, a full disk: name the file, no traceback
        raise ReviewSetError(f"cannot build the review set ({type(exc).__name__}: {exc.strerror})",
                             path=exc.filename or out) from None
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return open_review_set(out)


def _pin_entries(entries: Sequence[importers.Entry], root: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    ids: dict[str, str] = {}
    used: set[str] = set()
    for entry in entries:
        if entry.sample_id in ids:
            raise ReviewSetError(f"sample id {entry.sample_id!r} twice (also {ids[entry.sample_id]})",
                                 path=entry.source or entry.image, field="id")
        ids[entry.sample_id] = entry.source or str(entry.image)
        row = _pin_entry(entry, root)
        for rel in (row["image"], row["mask"], row["void"]):
            if rel and rel in used:
                raise ReviewSetError(f"two samples would both be written to {rel}", path=entry.image, field="image")
            used.add(rel)
        rows.append(row)
    return rows


def _pin_entry(entry: importers.Entry, root: Path) -> dict[str, str]:
    folder = _folder_name(entry.label)
    check_relative(entry.name, path=entry.image, field="image")
    stem = PurePosixPath(entry.name).with_suffix("").as_posix()
    size = images.display_size(entry.image)
    image_format, _ = images.format_and_mode(entry.image)
    row = {"id": entry.sample_id, "image": f"images/{folder}/{entry.name}", "mask": "", "label": entry.label,
           "void": ""}
    if image_format in ("JPEG", "PNG"):
        _copy(entry.image, root / row["image"])
    else:  # the pinned set holds JPEG/PNG only, so any reader decodes it the same way
        row["image"] = f"images/{folder}/{stem}.png"
        _save(Image.fromarray(images.read_rgb(entry.image)), root / row["image"])
    if entry.mask_file is not None:
        row["mask"] = f"masks/{folder}/{stem}.png"
        values = images.read_mask_values(entry.mask_file)
        _check_size(values.shape, size, entry.mask_file, "mask")
        if images.format_and_mode(entry.mask_file) == ("PNG", "L"):
            _copy(entry.mask_file, root / row["mask"])
        else:
            _save_mask(values != 0, root / row["mask"])
    elif entry.draw is not None:
        drawn = entry.draw()
        for field, mask, tree in (("mask", drawn.mask, "masks"), ("void", drawn.void, "void")):
            if mask is not None:
                _check_size(mask.shape, size, entry.source or entry.image, field)
                row[field] = f"{tree}/{folder}/{stem}.png"
                _save_mask(mask, root / row[field])
    return row


def _write_manifest(root: Path, rows: list[dict[str, str]], meta: dict[str, object]) -> None:
    (root / "review.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    # The void column only when a sample has one, so sets without void pixels keep v1's four columns.
    columns = ["id", "image", "mask", "label"] + (["void"] if any(row["void"] for row in rows) else [])
    with open(root / "samples.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([row[c] for c in columns] for row in rows)


def _folder_name(label: str) -> str:
    # The label itself is kept in samples.csv; the folder only has to be a safe, portable name.
    safe = re.sub(r"[^\w.\- ]", "_", label).strip()
    return safe if safe and not safe.startswith(".") else "_" + safe


def _check_size(shape: tuple[int, ...], size: tuple[int, int], path: str | Path, field: str) -> None:
    if tuple(shape) != size:
        raise ReviewSetError(f"{field} size {(shape[1], shape[0])} differs from image size {(size[1], size[0])} "
                             "(width, height)", path=path, field=field)


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)


def _save(image: Image.Image, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, format="PNG")


def _save_mask(mask: np.ndarray, target: Path) -> None:
    _save(Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), mode="L"), target)


def write_sums(root: Path) -> str:
    """(Re)write SHA256SUMS over every file of the folder; return the new digest."""
    lines = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        if rel != SUMS and not ignored(rel):
            lines.append(f"{file_sha256(file)}  {rel}\n")
    (root / SUMS).write_text("".join(lines))
    return digest_of(root)

"""Review sets: the checksum-pinned ``xgate.review_set/v1`` folder, opened and verified.

A review set is a folder with review.yaml, samples.csv, images/, masks/ and
SHA256SUMS; its digest is the sha256 of SHA256SUMS. Every file is checked
against SHA256SUMS before use, so a changed byte or an added file is an input
error, never a silent pass.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import yaml
from PIL import Image

from gate.errors import ReviewSetError
from gate.inputs import images

FORMAT = "xgate.review_set/v1"
SUMS = "SHA256SUMS"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


@dataclass(frozen=True)
class Sample:
    """One row of samples.csv; paths are relative to the review set's folder."""

    sample_id: str
    image: str
    mask: str  # "" = no mask: scored for metrics, left out of alignment and probes
    label: int
    slice: str = ""
    void: str = ""  # "" = none; else a mask whose nonzero pixels are void (e.g. VOC 255), left out of alignment


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
    if expected_digest is not None and _normal_digest(expected_digest) != digest:
        raise ReviewSetError(
            f"digest {digest} does not match the pinned {expected_digest} (the review set changed)",
            path=root, field="digest",
        )
    listed = _read_sums(root)
    for rel, want in listed.items():
        file = root / rel
        if not file.is_file():
            raise ReviewSetError(f"file listed in {SUMS} is missing", path=file)
        _check_inside(root, rel, path=file, field=SUMS)
        if _sha256(file) != want:
            raise ReviewSetError(f"checksum mismatch (file changed since the set was pinned; {SUMS})", path=file)
    for file in sorted(root.rglob("*")):
        rel = file.relative_to(root).as_posix()
        if file.is_file() and rel != SUMS and rel not in listed and not _ignored(rel):
            raise ReviewSetError(f"file not listed in {SUMS} (added after pinning)", path=file)
    return digest


def open_review_set(root: str | Path, *, expected_digest: str | None = None, check: bool = True) -> ReviewSet:
    """Open a review set; with ``check`` every file is verified first (and the digest if given)."""
    root = Path(root)
    digest = verify(root, expected_digest) if check else digest_of(root)
    listed = _read_sums(root)
    for rel in ("review.yaml", "samples.csv"):
        if rel not in listed:
            raise ReviewSetError(f"{rel} is not listed in {SUMS}", path=root / SUMS, field=rel)
    meta = _read_meta(root)
    classes: tuple[str, ...] = tuple(meta["classes"])  # type: ignore[arg-type]  # validated by _read_meta
    samples = _read_samples(root, classes, listed)
    return ReviewSet(
        root=root, name=str(meta.get("name") or root.name), version=str(meta.get("version", "1")),
        description=str(meta.get("description", "")), classes=classes, samples=samples, digest=digest,
    )


def build(
    source: str | Path, out: str | Path, *, name: str | None = None, version: str = "1", description: str = ""
) -> ReviewSet:
    """Pin ``source/images/<class>/*.png`` + ``source/masks/<class>/*.png`` as a v1 review set in ``out``."""
    source, out = Path(source), Path(out)
    pairs = _plain_pairs(source)
    classes = tuple(sorted({cls for cls, _, _ in pairs}))
    if out.exists() and any(out.iterdir()):
        raise ReviewSetError("output folder exists and is not empty", path=out)
    rows = []
    for cls, image, mask in pairs:
        sample_id = f"{cls}/{image.stem}"
        _check_pair(image, mask)
        rel_image, rel_mask = f"images/{cls}/{image.name}", f"masks/{cls}/{mask.name}"
        for src, rel in ((image, rel_image), (mask, rel_mask)):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out / rel)
        rows.append((sample_id, rel_image, rel_mask, cls))
    meta = {"format": FORMAT, "name": name or out.name, "version": str(version), "description": description,
            "classes": list(classes)}
    (out / "review.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    with open(out / "samples.csv", "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "image", "mask", "label"])
        writer.writerows(rows)
    write_sums(out)
    return open_review_set(out)


def write_sums(root: Path) -> str:
    """(Re)write SHA256SUMS over every file of the folder; return the new digest."""
    lines = []
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        if rel != SUMS and not _ignored(rel):
            lines.append(f"{_sha256(file)}  {rel}\n")
    (root / SUMS).write_text("".join(lines))
    return digest_of(root)


def _plain_pairs(source: Path) -> list[tuple[str, Path, Path]]:
    images_dir, masks_dir = source / "images", source / "masks"
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise ReviewSetError("expected images/<class>/*.png and masks/<class>/*.png", path=source)
    pairs = []
    for class_dir in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        for image in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
            candidates = sorted((masks_dir / class_dir.name).glob(image.stem + ".*"))
            if not candidates:
                raise ReviewSetError("no mask for image", path=image, field="mask")
            pairs.append((class_dir.name, image, candidates[0]))
    if not pairs:
        raise ReviewSetError("no images found under images/<class>/", path=source)
    if len({cls for cls, _, _ in pairs}) < 2:
        raise ReviewSetError("a review set needs at least two classes", path=source, field="classes")
    return pairs


def _check_pair(image: Path, mask: Path) -> None:
    try:
        with Image.open(image) as im, Image.open(mask) as mk:
            if im.size != mk.size:
                raise ReviewSetError(f"mask size {mk.size} differs from image size {im.size}", path=mask)
    except OSError as exc:
        raise ReviewSetError(f"unreadable image ({exc})", path=image) from None


def _read_meta(root: Path) -> dict[str, object]:
    path = root / "review.yaml"
    try:
        meta = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ReviewSetError(f"unreadable review.yaml ({type(exc).__name__})", path=path) from None
    if not isinstance(meta, dict):
        raise ReviewSetError("review.yaml must be a mapping", path=path)
    classes = meta.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise ReviewSetError("'classes' must list at least two class names", path=path, field="classes")
    if len(set(classes)) != len(classes):
        raise ReviewSetError("duplicate class names", path=path, field="classes")
    return meta


def _read_samples(root: Path, classes: Sequence[str], listed: dict[str, str]) -> tuple[Sample, ...]:
    path = root / "samples.csv"
    index = {name: i for i, name in enumerate(classes)}
    samples, seen = [], set()
    try:
        with open(path, newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                sample = _sample_from_row(path, line, row, index)
                _check_sample_files(root, f"{path}:{line}", sample, listed)
                if sample.sample_id in seen:
                    raise ReviewSetError(f"duplicate id {sample.sample_id!r}", path=f"{path}:{line}", field="id")
                seen.add(sample.sample_id)
                samples.append(sample)
    except OSError:
        raise ReviewSetError("missing samples.csv", path=path) from None
    if not samples:
        raise ReviewSetError("no samples", path=path)
    return tuple(samples)


def _sample_from_row(path: Path, line: int, row: dict[str, str], index: dict[str, int]) -> Sample:
    where = f"{path}:{line}"
    if "mask" not in row:
        raise ReviewSetError("missing column 'mask' (it may be empty for a sample without a mask)",
                             path=where, field="mask")
    for column in ("id", "image", "label"):
        if not row.get(column):
            raise ReviewSetError(f"missing value in column {column!r}", path=where, field=column)
    if row["label"] not in index:
        raise ReviewSetError(f"label {row['label']!r} is not a class of review.yaml", path=where, field="label")
    return Sample(row["id"], row["image"], row["mask"] or "", index[row["label"]], row.get("slice") or "",
                  row.get("void") or "")


def _check_sample_files(root: Path, where: str, sample: Sample, listed: dict[str, str]) -> None:
    # The pin covers everything read: a path that leaves the folder, or a file SHA256SUMS does not
    # list (an ignored name such as Thumbs.db included), could change without changing the digest.
    for field, rel in (("image", sample.image), ("mask", sample.mask), ("void", sample.void)):
        if not rel:
            continue
        _check_relative(rel, path=where, field=field)
        if rel not in listed:
            raise ReviewSetError(f"{rel!r} is not listed in {SUMS}", path=where, field=field)
        _check_inside(root, rel, path=where, field=field)


def _check_relative(rel: str, *, path: str | Path, field: str) -> None:
    """Refuse a path that is absolute, climbs out with '..', or is not in plain a/b/c form."""
    posix = PurePosixPath(rel)
    if "\\" in rel or posix.is_absolute() or PureWindowsPath(rel).drive:
        raise ReviewSetError(f"path {rel!r} must be relative to the review set, with '/' separators",
                             path=path, field=field)
    if ".." in posix.parts:
        raise ReviewSetError(f"path {rel!r} leaves the review set ('..')", path=path, field=field)
    if posix.as_posix() != rel or "." in posix.parts:
        raise ReviewSetError(f"path {rel!r} is not in plain form ({posix.as_posix()!r})", path=path, field=field)


def _check_inside(root: Path, rel: str, *, path: str | Path, field: str) -> None:
    """Refuse a file that resolves (through symlinks) outside the review set's folder."""
    real_root = root.resolve()
    target = (root / rel).resolve()
    if not target.is_relative_to(real_root) or target == real_root:
        raise ReviewSetError(f"{rel!r} resolves outside the review set (a symlink to {target})",
                             path=path, field=field)


def _read_sums(root: Path) -> dict[str, str]:
    listed = {}
    for number, line in enumerate((root / SUMS).read_text().splitlines(), start=1):
        digest, sep, rel = line.partition("  ")
        where = f"{root / SUMS}:{number}"
        if not sep or len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise ReviewSetError("malformed line (want '<64 hex digits>  <path>')", path=where)
        _check_relative(rel, path=where, field="path")
        listed[rel] = digest
    return listed


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _normal_digest(digest: str) -> str:
    return digest if digest.startswith("sha256:") else "sha256:" + digest


def _ignored(rel: str) -> bool:
    # Files a file manager or OS drops into folders are not part of the set.
    return rel.split("/")[-1] in {".DS_Store", "Thumbs.db"}

"""The pinned files of a review set read and checked: SHA256SUMS, review.yaml and samples.csv.

Every path a review set names must be relative, in plain a/b/c form, stay inside the folder (symlinks
resolved) and be listed in SHA256SUMS; gate.inputs.review_set opens, verifies and builds sets with these.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import yaml

from gate.errors import ReviewSetError
from gate.inputs import strict_yaml

SUMS = "SHA256SUMS"


@dataclass(frozen=True)
class Sample:
    """One row of samples.csv; paths are relative to the review set's folder."""

    sample_id: str
    image: str
    mask: str  # "" = no mask: scored for metrics, left out of alignment and probes
    label: int
    slice: str = ""
    void: str = ""  # "" = none; else a mask whose nonzero pixels are void (e.g. VOC 255), left out of alignment


def read_meta(root: Path) -> dict[str, object]:
    path = root / "review.yaml"
    try:
        meta = strict_yaml.load_path(path, ReviewSetError)  # duplicate keys, aliases, depth, size refused
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


def read_samples(root: Path, classes: Sequence[str], listed: dict[str, str]) -> tuple[Sample, ...]:
    path = root / "samples.csv"
    index = {name: i for i, name in enumerate(classes)}
    samples, seen = [], set()
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                sample = _sample_from_row(path, line, row, index)
                _check_sample_files(root, f"{path}:{line}", sample, listed)
                if sample.sample_id in seen:
                    raise ReviewSetError(f"duplicate id {sample.sample_id!r}", path=f"{path}:{line}", field="id")
                seen.add(sample.sample_id)
                samples.append(sample)
    except OSError:
        raise ReviewSetError("missing samples.csv", path=path) from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ReviewSetError(f"unreadable samples.csv ({type(exc).__name__}: {exc})"[:300], path=path) from None
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
        check_relative(rel, path=where, field=field)
        if rel not in listed:
            raise ReviewSetError(f"{rel!r} is not listed in {SUMS}", path=where, field=field)
        check_inside(root, rel, path=where, field=field)


def check_relative(rel: str, *, path: str | Path, field: str) -> None:
    """Refuse a path that is absolute, climbs out with '..', or is not in plain a/b/c form."""
    if not rel or any(ord(c) < 32 for c in rel):
        raise ReviewSetError(f"path {rel!r} is empty or has control characters", path=path, field=field)
    posix = PurePosixPath(rel)
    if "\\" in rel or posix.is_absolute() or PureWindowsPath(rel).drive:
        raise ReviewSetError(f"path {rel!r} must be relative to the review set, with '/' separators",
                             path=path, field=field)
    if ".." in posix.parts:
        raise ReviewSetError(f"path {rel!r} leaves the review set ('..')", path=path, field=field)
    if posix.as_posix() != rel or "." in posix.parts:
        raise ReviewSetError(f"path {rel!r} is not in plain form ({posix.as_posix()!r})", path=path, field=field)


def check_inside(root: Path, rel: str, *, path: str | Path, field: str) -> None:
    """Refuse a file that resolves (through symlinks) outside the review set's folder."""
    try:
        real_root, target = root.resolve(), (root / rel).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long
        raise ReviewSetError(f"{rel!r} cannot be resolved ({type(exc).__name__})", path=path, field=field) from None
    if not target.is_relative_to(real_root) or target == real_root:
        raise ReviewSetError(f"{rel!r} resolves outside the review set (a symlink to {target})",
                             path=path, field=field)


def read_sums(root: Path) -> dict[str, str]:
    listed: dict[str, str] = {}
    try:
        text = (root / SUMS).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReviewSetError(f"unreadable {SUMS} ({type(exc).__name__})", path=root / SUMS) from None
    for number, line in enumerate(text.removesuffix("\n").split("\n"), start=1):
        digest, sep, rel = line.partition("  ")
        where = f"{root / SUMS}:{number}"
        if not sep or len(digest) != 64 or digest.strip("0123456789abcdef"):
            raise ReviewSetError("malformed line (want '<64 hex digits>  <path>')", path=where)
        check_relative(rel, path=where, field="path")
        if rel in listed:
            raise ReviewSetError(f"{rel!r} is listed twice", path=where, field="path")
        listed[rel] = digest
    return listed


def is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the file system: not a file of the set
        return False


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def normal_digest(digest: str) -> str:
    return digest if digest.startswith("sha256:") else "sha256:" + digest


def ignored(rel: str) -> bool:
    # Files a file manager or OS drops into folders are not part of the set.
    return rel.split("/")[-1] in {".DS_Store", "Thumbs.db"}

"""Framed review sets kept on disk between gates on the same runner (``--frame-cache DIR``).

With real photos on a GPU, decoding (not the forwards) can set a gate's pace. This cache keeps the framed
uint8 pixels and masks of a whole review set, one entry per (review-set digest, geometry, torch/torchvision/
Pillow versions), so the next gate on the runner reads frames instead of decoding; they are the bytes the
decoding gave (the float frame is ``pixels / 255``, as :func:`gate.inputs.preprocess.image_to_frame`), so a
cached gate's records equal an uncached one's bit for bit.

Safety (docs/security.md, "The frame cache"): entries are complete or absent (written in a temporary
folder, renamed into place), checked by sha256 when opened (a bad one is decoded around and replaced), and
only folders the cache made are ever removed. The folder is as trusted as the runner's disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from threading import Lock
from typing import BinaryIO

import numpy as np
import PIL
import torch
import torchvision
from torch import Tensor

from gate.errors import UsageError
from gate.inputs.preprocess import Geometry, pixels_to_frame

FORMAT = 1
IMAGES, MASKS, META = "images.u8", "masks.u8", "meta.json"
MAX_META_BYTES = 64 * 1024  # ours is < 1 KB
PART_PREFIX = "part-"  # a rank's record of the rows it wrote into a shared entry
STALE_AFTER_S = 6 * 3600  # an unfinished entry untouched this long belongs to a gate that died
MARKER = ".xgate-frame-cache"  # in every folder a gate makes, from its first moment (see ours)
_OURS = re.compile(r"[0-9a-f]{32}|\.tmp-[0-9a-f]{32}-(?:\d+-[0-9a-f]{8}|shared-[A-Za-z0-9_-]{1,64})")
_CHUNK = 1 << 20


def entry_key(digest: str, geometry: Geometry) -> dict[str, object]:
    """What an entry's frames depend on: the review set, the geometry and the libraries that framed it."""
    return {"format": FORMAT, "digest": digest, "size": list(geometry.size), "resize": geometry.resize,
            "interpolation": geometry.interpolation, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "pillow": PIL.__version__,
            # torchvision's pipeline is left out so that entries written before timm/transformers keep their name
            **({"pipeline": geometry.pipeline} if geometry.pipeline != "torchvision" else {})}


def entry_name(key: dict[str, object]) -> str:
    """The entry's folder name: a hash of its key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return _sha256_of(handle)


def _sha256_of(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class _Layout:
    """Byte sizes of one sample's row in each file."""

    count: int
    height: int
    width: int

    @property
    def image_bytes(self) -> int:
        return 3 * self.height * self.width

    @property
    def mask_bytes(self) -> int:
        return 2 * ((self.height * self.width + 7) // 8)  # object mask and void mask, one bit per pixel

    def packed(self, masks: Tensor, void: Tensor) -> np.ndarray:
        """bool [B, h, w] masks and void masks as [B, mask_bytes] bits."""
        flat = torch.stack([masks, void], dim=1).reshape(len(masks), 2, -1).numpy()
        return np.packbits(flat, axis=2).reshape(len(masks), -1)

    def unpacked(self, bits: np.ndarray) -> tuple[Tensor, Tensor]:
        pixels = self.height * self.width
        flat = np.unpackbits(bits.reshape(len(bits), 2, -1), axis=2, count=pixels).astype(bool)
        both = torch.from_numpy(flat).reshape(len(bits), 2, self.height, self.width)
        return both[:, 0].contiguous(), both[:, 1].contiguous()


class FrameStore:
    """A complete, verified entry: frames of any rows, read from the files it verified.

    The two data files stay open from their checksum to the gate's last read, so a concurrent gate
    replacing or deleting the entry on disk cannot change or break what this gate reads.
    """

    def __init__(self, folder: Path, layout: _Layout, files: dict[str, BinaryIO]) -> None:
        self.folder, self.layout, self.files = folder, layout, files

    def frame(self, rows: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """Pixels (float32 [B, 3, h, w] in [0, 1]), masks and void masks (bool [B, h, w]) of ``rows``."""
        layout = self.layout
        images = np.empty((len(rows), layout.image_bytes), dtype=np.uint8)
        bits = np.empty((len(rows), layout.mask_bytes), dtype=np.uint8)
        pixels_file, masks_file = self.files[IMAGES].fileno(), self.files[MASKS].fileno()
        for i, row in enumerate(int(r) for r in rows):  # positional reads: safe from several threads
            images[i] = np.frombuffer(os.pread(pixels_file, layout.image_bytes, row * layout.image_bytes),
                                      dtype=np.uint8)
            bits[i] = np.frombuffer(os.pread(masks_file, layout.mask_bytes, row * layout.mask_bytes),
                                    dtype=np.uint8)
        pixels = torch.from_numpy(images).reshape(len(rows), 3, layout.height, layout.width)
        masks, void = layout.unpacked(bits)
        return pixels_to_frame(pixels), masks, void

    def close(self) -> None:
        """Close the entry's files."""
        for handle in self.files.values():
            handle.close()


class FrameWriter:
    """Fills a new entry from framed batches (from worker threads); :meth:`commit` puts it in place."""

    def __init__(self, root: Path, key: dict[str, object], layout: _Layout, shared: str | None = None) -> None:
        self.root, self.key, self.layout = root, key, layout
        # Shared: the torchrun ranks of one launch write their blocks into one folder (see commit_shared).
        self.folder = root / (_shared_folder_name(key, shared) if shared else
                              f".tmp-{entry_name(key)}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        self.folder.mkdir(parents=True, exist_ok=shared is not None)
        (self.folder / MARKER).touch()
        self.written = np.zeros(layout.count, dtype=bool)
        self.lock = Lock()
        self.files = {name: os.open(self.folder / name, os.O_WRONLY | os.O_CREAT, 0o644) for name in (IMAGES, MASKS)}

    def write(self, rows: np.ndarray, pixels: Tensor, masks: Tensor, void: Tensor) -> None:
        """Framed uint8 pixels [B, 3, h, w] and bool masks [B, h, w] of the samples ``rows``.

        A failed write (a full disk) only drops the entry: the cache must never fail a gate.
        """
        layout = self.layout
        images = pixels.contiguous().numpy().reshape(len(rows), -1)
        bits = layout.packed(masks, void)
        try:
            for i, row in enumerate(int(r) for r in rows):
                _write_all(self.files[IMAGES], images[i].tobytes(), row * layout.image_bytes)
                _write_all(self.files[MASKS], bits[i].tobytes(), row * layout.mask_bytes)
        except (OSError, KeyError):  # KeyError: the files were closed (the gate ended first)
            return
        with self.lock:
            self.written[np.asarray(rows, dtype=np.int64)] = True

    def leave(self) -> None:
        """Close this rank's part of a shared entry and record which rows it wrote, for the rank that commits."""
        self._close()
        rows = np.flatnonzero(self.written)
        if not rows.size:
            return
        starts = rows[np.r_[True, np.diff(rows) > 1]]
        ends = rows[np.r_[np.diff(rows) > 1, True]] + 1
        part = self.folder / f"{PART_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
        with contextlib.suppress(OSError):  # a full disk: the entry is then not committed
            part.write_text(json.dumps([[int(a), int(b)] for a, b in zip(starts, ends, strict=True)]))

    def commit(self) -> bool:
        """Put the entry in place if every row was written; False (and nothing left behind) otherwise.

        The rows written are this writer's and, in a shared folder, those the other ranks recorded.
        """
        self._close()
        written = self.written | self._written_by_others()
        if not written.all():
            self.discard()
            return False
        try:
            target = self.root / entry_name(self.key)
            existing = _verified(target, self.key, self.layout)
            if existing is not None:  # another gate put a good entry in place meanwhile: keep it (and its readers)
                for handle in existing.values():
                    handle.close()
                self.discard()
                return True
            meta = {**self.key, "count": self.layout.count, "height": self.layout.height,
                    "width": self.layout.width,
                    "sha256": {name: _sha256(self.folder / name) for name in (IMAGES, MASKS)}}
            (self.folder / META).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
            if ours(target):
                shutil.rmtree(target, ignore_errors=True)  # a broken entry no gate can use
            self.folder.rename(target)  # fails (OSError) on a folder of that name that is not ours
        except OSError:  # a full disk, or another gate renamed its entry in place first
            self.discard()
            return False
        return True

    def _written_by_others(self) -> np.ndarray:
        written = np.zeros(self.layout.count, dtype=bool)
        for part in self.folder.glob(f"{PART_PREFIX}*.json"):
            try:
                ranges = json.loads(part.read_text()) if part.stat().st_size <= MAX_META_BYTES else []
                part.unlink()
            except (OSError, ValueError):
                continue
            for pair in ranges if isinstance(ranges, list) else []:
                if (isinstance(pair, list) and len(pair) == 2 and all(type(v) is int for v in pair)
                        and 0 <= pair[0] < pair[1] <= self.layout.count):
                    written[pair[0]:pair[1]] = True
        return written

    def discard(self) -> None:
        """Remove the unfinished entry."""
        self._close()
        if ours(self.folder):
            shutil.rmtree(self.folder, ignore_errors=True)

    def _close(self) -> None:
        for handle in self.files.values():
            os.close(handle)
        self.files = {}


def _write_all(handle: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:  # pwrite may write less than asked
        done = os.pwrite(handle, view, offset)
        view, offset = view[done:], offset + done


def _layout_of(meta: dict[str, object]) -> _Layout | None:
    numbers = [meta.get(name) for name in ("count", "height", "width")]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in numbers):
        return None
    count, height, width = (int(str(n)) for n in numbers)
    return _Layout(count=count, height=height, width=width)


def _layout(geometry: Geometry, count: int) -> _Layout:
    height, width = geometry.size
    return _Layout(count=count, height=height, width=width)


def open_store(root: Path, digest: str, geometry: Geometry, count: int) -> FrameStore | None:
    """The entry for this review set and geometry, if it exists, matches and passes its checksums."""
    key, layout = entry_key(digest, geometry), _layout(geometry, count)
    folder = root / entry_name(key)
    files = _verified(folder, key, layout)
    return None if files is None else FrameStore(folder, layout, files)


def _verified(folder: Path, key: dict[str, object], layout: _Layout) -> dict[str, BinaryIO] | None:
    """The entry's data files, open and checked against its meta.json (None: absent, mismatched or damaged)."""
    try:
        if not (folder / META).is_file() or (folder / META).stat().st_size > MAX_META_BYTES:
            return None  # not a file we wrote (a FIFO, a huge file): never read it
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or _layout_of(meta) != layout or any(meta.get(k) != v for k, v in key.items()):
        return None
    sums = meta.get("sha256")
    expected_bytes = {IMAGES: layout.image_bytes * layout.count, MASKS: layout.mask_bytes * layout.count}
    files: dict[str, BinaryIO] = {}
    try:
        for name, size in expected_bytes.items():
            handle: BinaryIO = (folder / name).open("rb")
            files[name] = handle
            if os.fstat(handle.fileno()).st_size != size or not isinstance(sums, dict) \
                    or _sha256_of(handle) != sums.get(name):
                raise ValueError(name)
    except (OSError, ValueError):
        for handle in files.values():
            handle.close()
        return None
    return files


def start_writer(root: Path, digest: str, geometry: Geometry, count: int, shared: str | None = None) -> FrameWriter:
    """A writer for a new entry of this review set and geometry (``count`` samples); ``shared``: see plan."""
    return FrameWriter(root, entry_key(digest, geometry), _layout(geometry, count), shared)


def _shared_folder_name(key: dict[str, object], shared: str) -> str:
    launch = "".join(c for c in shared if c.isalnum() or c in "-_")[:64] or "run"
    return f".tmp-{entry_name(key)}-shared-{launch}"


def commit_shared(root: Path, digest: str, count: int, geometries: list[Geometry], shared: str) -> list[Geometry]:
    """After every rank of launch ``shared`` left its part: commit the entries whose rows they all wrote.

    Called by one rank only, once the others have finished (after the gather). The geometries committed.
    """
    committed = []
    for geometry in geometries:
        key = entry_key(digest, geometry)
        if not (root / _shared_folder_name(key, shared)).is_dir():
            continue  # read from an entry, or never started
        writer = start_writer(root, digest, geometry, count, shared)  # opens the folder the ranks filled
        if writer.commit():
            committed.append(geometry)
    return committed


def discard_shared(root: Path, digest: str, geometries: list[Geometry], shared: str) -> None:
    """Remove the parts the ranks of launch ``shared`` left (a rank failed: the entry is not complete)."""
    for geometry in geometries:
        folder = root / _shared_folder_name(entry_key(digest, geometry), shared)
        if ours(folder):
            shutil.rmtree(folder, ignore_errors=True)


@dataclass
class CachePlan:
    """One gate's use of the cache, per geometry: an entry to read, or a writer filling a new one."""

    stores: dict[Geometry, FrameStore]
    writers: dict[Geometry, FrameWriter]

    def finish(self, complete: bool) -> list[Geometry]:
        """Close the entries read; commit the writers' if the gate framed every sample (``complete``).

        Returns the geometries whose entries were committed.
        """
        for store in self.stores.values():
            store.close()
        committed = []
        for geometry, writer in self.writers.items():
            if complete and writer.commit():
                committed.append(geometry)
            else:
                writer.discard()
        self.writers = {}
        return committed

    def leave(self) -> None:
        """Close the entries read; leave this rank's part of the shared entries (see commit_shared)."""
        for store in self.stores.values():
            store.close()
        for writer in self.writers.values():
            writer.leave()
        self.writers = {}


def plan(root: Path, digest: str, count: int, geometries: list[Geometry], write: bool,
         shared: str | None = None) -> CachePlan:
    """Open the entries that exist for ``geometries``; start writers for the others when ``write``.

    ``shared`` (a torchrun launch id): the writers of all ranks share one folder per entry, each writing its
    block; they :meth:`CachePlan.leave` it and one rank commits it (:func:`commit_shared`). A folder that
    cannot be created or written is a usage error naming it (the user asked for it).
    """
    cache = CachePlan(stores={}, writers={})
    try:
        root.mkdir(parents=True, exist_ok=True)
        remove_stale(root)
        for geometry in geometries:
            store = open_store(root, digest, geometry, count)
            if store is not None:
                cache.stores[geometry] = store
            elif write:
                cache.writers[geometry] = start_writer(root, digest, geometry, count, shared)
    except OSError as exc:
        cache.finish(complete=False)  # close what was opened, remove what was started
        raise UsageError(f"cannot use it as a frame cache: {exc.strerror or exc}", path=root,
                         field="--frame-cache") from None
    return cache


def remove_stale(root: Path, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the unfinished entries of gates that died (SIGKILL, a lost runner): untouched for ``max_age_s``.

    A live gate writes its temporary folder at least once per batch, so its newest file is never that old.
    """
    now = time.time()
    removed = []
    for folder in root.glob(".tmp-*"):
        if not ours(folder):
            continue  # another program's folder (or a file): never ours to delete
        try:
            newest = max([folder.stat().st_mtime, *(f.stat().st_mtime for f in folder.iterdir())])
        except OSError:  # removed meanwhile, or unreadable: leave it
            continue
        if now - newest > max_age_s:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def ours(folder: Path) -> bool:
    """True for a folder a gate made: named as (temporary) entries are, holding MARKER, not a symlink."""
    return bool(_OURS.fullmatch(folder.name)) and not folder.is_symlink() and (folder / MARKER).is_file()

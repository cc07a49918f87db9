"""The one reader for every file xgate opens: checkpoints, weights, class lists, CSVs, COCO JSON, policies.

Every input file is someone else's: it may be a FIFO (a read blocks forever), a device (``/dev/zero``
never ends), a folder, a huge file, text in another encoding or with a byte-order mark, JSON nested
deeper than the parser's stack, or a CSV with a field of a gigabyte. Each reader here:

- opens with ``O_NONBLOCK`` and refuses anything but a regular file before reading a byte;
- refuses a file over its size limit before reading it, and never reads more than the limit plus one byte
  (a file that grows meanwhile is caught too);
- decodes text as UTF-8, with a leading byte-order mark stripped (spreadsheet exports, Notepad);
- bounds JSON nesting and CSV field sizes.

Every problem is ``error`` (an ``InputError`` subclass, exit 2) naming the file and, where it helps, the field.
"""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path
from typing import Any

from gate.errors import InputError

MiB = 1024 * 1024
MAX_TEXT_BYTES = 16 * MiB  # class lists, VOC lists
MAX_CSV_BYTES = 256 * MiB  # boxes CSVs
MAX_JSON_BYTES = 1024 * MiB  # COCO annotation files (COCO 2017 train is ~450 MB)
MAX_JSON_DEPTH = 64  # COCO needs 5 (annotations[i].segmentation[j][k])
MAX_CSV_FIELD = 64 * 1024  # characters in one CSV field; a path or a number needs far fewer
_CHUNK = 8 * MiB


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def read_bytes(path: str | Path, *, limit: int, error: type[InputError] = InputError,
               field: str | None = None) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them (else ``error``).

    Opened non-blocking so that a FIFO is refused at once instead of waiting for a writer.
    """
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise error(f"cannot read the file ({exc.strerror or exc})", path=path, field=field) from None
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"not a regular file ({_kind(info.st_mode)})", path=path, field=field)
        if info.st_size > limit:
            raise error(f"file larger than {_size(limit)}, the limit for this file ({_size(info.st_size)})",
                        path=path, field=field or "size")
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(handle, min(_CHUNK, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as exc:
        raise error(f"cannot read the file ({exc.strerror or exc})", path=path, field=field) from None
    finally:
        os.close(handle)
    if total > limit:  # it grew while being read
        raise error(f"file larger than {_size(limit)}, the limit for this file", path=path, field=field or "size")
    return b"".join(chunks)


def decode_text(data: bytes, path: str | Path, *, error: type[InputError] = InputError,
                field: str | None = None) -> str:
    """``data`` as UTF-8 text, a leading byte-order mark stripped (else ``error`` naming the byte)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"not UTF-8 text (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); save it as UTF-8",
                    path=path, field=field) from None


def read_text(path: str | Path, *, limit: int = MAX_TEXT_BYTES, error: type[InputError] = InputError,
              field: str | None = None) -> str:
    """A UTF-8 text file (byte-order mark stripped), a regular file of at most ``limit`` bytes."""
    return decode_text(read_bytes(path, limit=limit, error=error, field=field), path, error=error, field=field)


def read_json(path: str | Path, *, limit: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH,
              error: type[InputError] = InputError) -> Any:
    """A JSON file: UTF-8 (BOM stripped), at most ``limit`` bytes and ``max_depth`` levels of nesting.

    NaN and Infinity (which Python's parser accepts and JSON does not have) are refused.
    """
    text = read_text(path, limit=limit, error=error)
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise error(f"nested deeper than {max_depth} levels", path=path) from None
    except ValueError as exc:
        raise error(f"not JSON ({exc})", path=path) from None
    if depth(value, max_depth) > max_depth:
        raise error(f"nested deeper than {max_depth} levels", path=path)
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def depth(value: Any, stop: int) -> int:
    """Nesting depth of lists and objects in ``value`` (a scalar is 0), counted up to ``stop + 1``.

    Iterative: a value nested deeper than Python's stack is measured without recursion.
    """
    deepest, pending = 0, [(value, 0)]
    while pending:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level + 1)
        if deepest > stop:
            return deepest
        pending.extend((child, level + 1) for child in children)
    return deepest


def read_csv(path: str | Path, *, limit: int = MAX_CSV_BYTES, max_field: int = MAX_CSV_FIELD,
             error: type[InputError] = InputError) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """A CSV with a header: (column names, [(line number, row)]); UTF-8 (BOM stripped), fields bounded.

    Column names are stripped of surrounding spaces; a field longer than ``max_field`` characters, a NUL
    byte or a broken quote is ``error`` naming the line.
    """
    text = read_text(path, limit=limit, error=error)
    previous = csv.field_size_limit(max_field)
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        rows = []
        header: list[str] = []
        for record in reader:
            if not header:
                header = [name.strip() for name in record]
                continue
            if record:  # csv.DictReader's rule: only a line with no field at all is skipped
                rows.append((reader.line_num, dict(zip(header, record, strict=False))))
    except csv.Error as exc:
        raise error(f"not a readable CSV ({exc})", path=f"{path}:{reader.line_num}") from None
    finally:
        csv.field_size_limit(previous)
    return header, rows


def _size(count: int) -> str:
    if count >= MiB:
        return f"{count / MiB:,.0f} MiB"
    return f"{count // 1024:,} KiB" if count >= 1024 else f"{count:,} bytes"

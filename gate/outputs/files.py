"""Where the gate's outputs go and how they are written, atomically and all or none: report, result.json, JUnit."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from gate.errors import GateError, InputError, UsageError
from gate.outputs.junit import junit_tree
from gate.outputs.report.html import render_report
from gate.result import GateResult


@dataclass(frozen=True)
class OutputPaths:
    """The three files a gate call writes."""

    report: Path
    json: Path
    junit: Path


def default_paths(
    out_dir: Path, report: Path | None = None, json: Path | None = None, junit: Path | None = None
) -> OutputPaths:
    """``out_dir``/report.html, result.json and junit.xml, unless a path is given for one of them."""
    return OutputPaths(
        report=report if report is not None else out_dir / "report.html",
        json=json if json is not None else out_dir / "result.json",
        junit=junit if junit is not None else out_dir / "junit.xml",
    )


def result_json(result: GateResult) -> str:
    """The ``xgate.result/v1`` document as indented, strict JSON (no NaN)."""
    try:
        return json.dumps(result.to_json(), indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as error:
        raise GateError(f"result is not JSON-safe: {error}", field="result") from error


def check_paths(paths: OutputPaths) -> None:
    """Before the evaluation: each output can be written, and earlier outputs at these paths are removed.

    An unwritable ``--report`` must fail in a second, not after the whole evaluation; and a run that then
    fails (bad input, interrupt, internal error) must not leave an earlier ``result.json`` saying "passed".
    """
    try:
        _check_writable(_named(paths))
    except InputError:
        for _, path in _named(paths):  # even then, the other paths must not keep an earlier verdict
            if not path.is_dir():
                with contextlib.suppress(OSError):
                    path.unlink(missing_ok=True)
        raise
    remove_outputs(paths)


def _check_writable(named: list[tuple[str, Path]]) -> None:
    resolved: dict[Path, str] = {}
    for field, path in named:
        key = path.resolve()
        if key in resolved:
            raise UsageError(f"--{field} and --{resolved[key]} name the same file", path=path, field=field)
        resolved[key] = field
        if path.is_dir():
            raise InputError("is a folder, not a file", path=path, field=field)
        try:
            # Probe the nearest folder that exists: creating the output folder now would leave it behind
            # when the run is then refused for bad input (folders are made when the files are written).
            folder = _nearest_existing(path.parent)
            if not folder.is_dir():
                raise NotADirectoryError(f"{folder} is not a folder")
            probe = _temp_name(folder / path.name)
            os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
            probe.unlink()
        except OSError as error:
            raise InputError(f"cannot write the file: {error.strerror or error}", path=path, field=field) from None


def remove_outputs(paths: OutputPaths) -> None:
    """Remove the files at ``paths`` (an earlier run's), so no stale verdict survives a failed run."""
    for field, path in _named(paths):
        if path.is_dir():
            continue  # not an output of ours: check_paths reports it
        try:
            path.unlink(missing_ok=True)
        except OSError as error:
            raise InputError(f"cannot remove an earlier output: {error.strerror or error}", path=path,
                             field=field) from None


def write_outputs(result: GateResult, paths: OutputPaths) -> OutputPaths:
    """Write result.json, junit.xml and report.html atomically, all or none; returns ``paths``.

    Each file is written to a hidden temporary name in its own folder and renamed into place (a rename
    within a folder is atomic), so no reader ever sees a half-written file. result.json, the verdict, is
    renamed last: it never exists without the report and JUnit beside it. On any failure or interrupt,
    the temporaries and the files this call already renamed are removed again.
    """
    contents = [("report", paths.report, render_report(result).encode("utf-8")),
                ("junit", paths.junit, junit_bytes(result)),
                ("json", paths.json, result_json(result).encode("utf-8"))]
    staged: list[tuple[str, Path, Path]] = []
    placed: list[Path] = []
    current = ("json", paths.json)  # the file being written, for the error message
    try:
        for field, path, data in contents:
            current = (field, path)
            staged.append((field, path, _write_temp(path, data)))
        for field, path, temp in staged:
            current = (field, path)
            os.replace(temp, path)
            placed.append(path)
    except BaseException as error:
        for _, _, temp in staged:
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)
        for path in placed:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        if isinstance(error, OSError):
            message = f"cannot write the file: {error.strerror or error}"
            raise InputError(message, path=current[1], field=current[0]) from None
        raise
    return paths


def junit_bytes(result: GateResult) -> bytes:
    """The JUnit XML document as bytes (UTF-8, with an XML declaration)."""
    buffer = io.BytesIO()
    junit_tree(result).write(buffer, encoding="utf-8", xml_declaration=True)
    return buffer.getvalue()


def _named(paths: OutputPaths) -> list[tuple[str, Path]]:
    return [("report", paths.report), ("json", paths.json), ("junit", paths.junit)]


def _nearest_existing(folder: Path) -> Path:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def _write_temp(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_name(path)
    # O_EXCL: never write through a file (or link) someone placed at the name; 0o666 & umask like a plain open.
    handle = os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp

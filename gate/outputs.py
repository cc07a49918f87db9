"""Where the gate's outputs go and how they are written: report.html, result.json, junit.xml."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from gate.errors import GateError, InputError
from gate.junit import write_junit
from gate.report.html import render_report
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


def _write_text(path: Path, text: str, field: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot write the file: {error.strerror or error}", path=path, field=field) from error


def write_outputs(result: GateResult, paths: OutputPaths) -> OutputPaths:
    """Write result.json, junit.xml and report.html (creating folders); returns ``paths``.

    The JSON goes first: it is the machine-readable verdict and the cheapest to write.
    """
    _write_text(paths.json, result_json(result), "json")
    try:
        paths.junit.parent.mkdir(parents=True, exist_ok=True)
        write_junit(result, paths.junit)
    except OSError as error:
        message = f"cannot write the file: {error.strerror or error}"
        raise InputError(message, path=paths.junit, field="junit") from error
    _write_text(paths.report, render_report(result), "report")
    return paths

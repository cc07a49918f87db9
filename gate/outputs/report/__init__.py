"""The HTML report: a typed context built from a ``GateResult``, rendered with Jinja2 into one self-contained page."""

from __future__ import annotations

from typing import Any

from gate.outputs.report.context import ReportContext, build_context
from gate.outputs.report.html import render_context, render_report


def __getattr__(name: str) -> Any:
    # The console summary uses the report's wording (reasons, formatting), so it is imported on first use: an
    # eager import here would be circular when gate.outputs.summary is imported first.
    if name == "format_summary":
        from gate.outputs.summary import format_summary

        return format_summary
    raise AttributeError(name)


__all__ = ["ReportContext", "build_context", "format_summary", "render_context", "render_report"]

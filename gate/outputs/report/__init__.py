"""The HTML report: a typed context built from a ``GateResult``, rendered with Jinja2 into one self-contained page."""

from __future__ import annotations

from gate.outputs.report.context import ReportContext, build_context
from gate.outputs.report.html import render_context, render_report

# The console summary is gate.outputs.summary's (it imports report.formatting: re-exporting it here made a circle).
__all__ = ["ReportContext", "build_context", "render_context", "render_report"]

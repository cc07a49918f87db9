"""The HTML report: a typed context built from a ``GateResult``, rendered with Jinja2 into one self-contained page."""

from __future__ import annotations

from gate.outputs.report.context import ReportContext, build_context
from gate.outputs.report.html import render_context, render_report
from gate.outputs.summary import format_summary

__all__ = ["ReportContext", "build_context", "format_summary", "render_context", "render_report"]

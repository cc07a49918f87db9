"""Render the self-contained HTML report (Jinja2, autoescaped, no network, no script)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import jinja2

from gate.outputs.report.context import ReportContext, build_context
from gate.result import GateResult

TEMPLATES = Path(__file__).parent / "templates"


@cache
def environment() -> jinja2.Environment:
    """The report's Jinja2 environment: autoescape on for every template, undefined names are errors."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def render_context(context: ReportContext) -> str:
    """The report page for an already built context."""
    return environment().get_template("report.html.j2").render(ctx=context)


def render_report(result: GateResult) -> str:
    """The whole report for a gate result, as one HTML string with every image inline."""
    return render_context(build_context(result))

"""The history page: past gate runs from MLflow, score trends, and the same review samples' maps across versions.

One self-contained HTML file like the report: inline PNGs, inline CSS, no script.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import matplotlib
from matplotlib.figure import Figure

from gate.report.html import environment
from gate.report.plots import BAD, DPI, GOOD, NEUTRAL, png_data_uri
from gate.tracking import KEY_SCORES, HistoryRow

TREND_COLUMNS = 3
MAX_TICK_LABELS = 12  # more runs than this and the x axis shows run numbers only


@dataclass(frozen=True)
class RunView:
    """One run as a table row and a column header of the maps table."""

    run_id: str
    started: str
    candidate: str
    sha256: str
    verdict: str
    scores: tuple[str, ...]  # formatted, aligned with HistoryContext.score_names; "–" when missing
    failed_rules: tuple[str, ...]
    registered: str


@dataclass(frozen=True)
class SampleMaps:
    """One review sample's maps, aligned with HistoryContext.map_runs (None: that run did not keep it)."""

    sample_id: str
    maps: tuple[str | None, ...]


@dataclass(frozen=True)
class HistoryContext:
    """Everything the history template shows."""

    title: str
    score_names: tuple[str, ...]
    runs: tuple[RunView, ...]  # newest first
    trend: str | None  # PNG data URI, None with fewer than two runs
    map_runs: tuple[RunView, ...]  # oldest first, so versions read left to right
    samples: tuple[SampleMaps, ...]


def build_history_context(
    rows: Sequence[HistoryRow], maps_by_sample: Mapping[str, Mapping[str, bytes]], *, title: str = "xgate history"
) -> HistoryContext:
    """The page's context; ``maps_by_sample`` is sample id -> run id -> PNG bytes."""
    names = tuple(s for s in KEY_SCORES if any(s in r.scores for r in rows))
    views = tuple(_run_view(row, names) for row in rows)
    oldest_first = tuple(reversed(views))
    samples = tuple(
        SampleMaps(sample_id=sample_id,
                   maps=tuple(_uri(maps_by_sample[sample_id].get(v.run_id)) for v in oldest_first))
        for sample_id in sorted(maps_by_sample)
    )
    return HistoryContext(title=title, score_names=names, runs=views, trend=trend_plot(rows, names),
                          map_runs=oldest_first, samples=samples)


def render_history(
    rows: Sequence[HistoryRow], maps_by_sample: Mapping[str, Mapping[str, bytes]], *, title: str = "xgate history"
) -> str:
    """The history page as one HTML string (rows newest first, as ``gate.tracking.history`` returns them)."""
    context = build_history_context(rows, maps_by_sample, title=title)
    return environment().get_template("history.html.j2").render(ctx=context)


def trend_plot(rows: Sequence[HistoryRow], names: Sequence[str]) -> str | None:
    """Small multiples, one per score, oldest run on the left; passing runs green, failing red."""
    if len(rows) < 2 or not names:
        return None
    ordered = list(reversed(rows))
    positions = list(range(1, len(ordered) + 1))
    columns = min(TREND_COLUMNS, len(names))
    lines = math.ceil(len(names) / columns)
    with matplotlib.rc_context({"text.parse_math": False, "font.size": 8, "axes.titlesize": 9}):
        figure = Figure(figsize=(3.4 * columns, 2.4 * lines), dpi=DPI, layout="constrained")
        for index, name in enumerate(names):
            axes = figure.add_subplot(lines, columns, index + 1)
            values = [row.scores.get(name, math.nan) for row in ordered]
            axes.plot(positions, values, color=NEUTRAL, linewidth=1)
            axes.scatter(positions, values, c=[GOOD if r.verdict == "passed" else BAD for r in ordered], s=18,
                         zorder=3)
            axes.set_title(name)
            axes.set_xticks(positions)
            if len(ordered) <= MAX_TICK_LABELS:
                axes.set_xticklabels([r.candidate for r in ordered], rotation=30, ha="right", fontsize=7)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI)
    return png_data_uri(buffer.getvalue())


def _run_view(row: HistoryRow, names: Sequence[str]) -> RunView:
    return RunView(
        run_id=row.run_id, started=row.start_time.strftime("%Y-%m-%d %H:%M"), candidate=row.candidate,
        sha256=row.sha256[:12], verdict=row.verdict,
        scores=tuple(f"{row.scores[n]:.4f}" if n in row.scores else "–" for n in names),
        failed_rules=row.failed_rules, registered=row.registered or "",
    )


def _uri(png: bytes | None) -> str | None:
    return None if png is None else png_data_uri(png)

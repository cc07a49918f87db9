"""The history page: past gate runs from MLflow, score trends per candidate and policy, the same samples' maps.

One self-contained HTML file like the report: inline SVG plots and JPEG map thumbnails, inline CSS, no
script. A trend line follows one *lineage*: the versions of one candidate (same name) gated under one policy;
each policy's ``min``/``max`` threshold is drawn beside its lines, so a reader sees how close each
version came to the line it was held to. The x-axis names each run by its commit (its date when it has none).
The maps table starts with each run's attention atlas (its mean Grad-CAM map over the review set) when the runs
logged one. The page of fifty runs stays under 1 MB: maps are small JPEGs, for the newest ``MAP_RUNS`` runs only.
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
from markupsafe import Markup
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from gate.outputs.report.html import environment
from gate.outputs.report.plots import BAD, GOOD
from gate.tracking.rows import KEY_SCORES, KIND_SELECT, RUN_ID_CHARS, HistoryRow, map_rows, rule_count

if TYPE_CHECKING:
    from gate.tracking.reading import RunAtlas

# Lineage colours (matplotlib's tab10) and one line style per policy, so "which model" and "which policy"
# read apart; the policy's threshold is drawn in its own style.
LINEAGE_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                   "#bcbd22", "#17becf")
POLICY_STYLES = ("solid", "dashed", "dotted", "dashdot")
THRESHOLD_COLOUR = "#455a64"
MAX_TICKS = 10  # labelled runs on a trend's x-axis; every k-th run beyond that
LABEL_GAP = 0.085  # axes height between two threshold labels' baselines: 8 pt text on the 3 in figure
THUMB_WIDTH, THUMB_QUALITY = 160, 60  # a map thumbnail: ~2-3 kB of JPEG
THUMB_MAX_PIXELS = 4_000_000  # a map artifact larger than this is not decoded (the page shows "–")
_RC: dict[Any, Any] = {"text.parse_math": False, "font.size": 10, "axes.titlesize": 11, "svg.fonttype": "none",
       "svg.hashsalt": "xgate-history"}
_SVG_START = re.compile(r"^.*?(?=<svg)", re.DOTALL)  # the XML declaration and DOCTYPE before the <svg> element
# matplotlib numbers ids per figure (figure_1, line2d_1, clip paths, marker defs): several inline SVGs on one page
# would repeat them. Each plot's ids, and the references to them, get the plot's prefix.
_SVG_ID = re.compile(r'(\bid="|url\(#|href="#)([^")]+)')


@dataclass(frozen=True)
class RunView:
    """One run as a table row and a column header of the maps table."""

    run_id: str
    position: int  # x on the trend plots: 1 = the oldest candidate run shown; 0 for a select parent
    short_id: str
    started: str
    commit: str  # short SHA, "" without one
    branch: str
    kind: str
    experiment: str
    policy: str
    candidate: str
    sha256: str
    verdict: str
    scores: tuple[str, ...]  # formatted, aligned with HistoryContext.score_names; "–" when missing
    failed_rules: tuple[str, ...]
    rule_count: str  # "2 of 12 rules failed"
    registered: str


@dataclass(frozen=True)
class Lineage:
    """One candidate under one policy: a trend line."""

    index: int  # its colour and its id in the plots (``t<score>-line<index>``)
    candidate: str
    policy: str
    colour: str
    style: str
    runs: int


@dataclass(frozen=True)
class Trend:
    """One score's plot: a line per lineage that has the score, and each policy's threshold."""

    score: str
    svg: Markup  # inline <svg>
    lineages: tuple[int, ...]  # Lineage.index of the lines drawn
    thresholds: tuple[str, ...]  # e.g. "strict: >= 0.9"


@dataclass(frozen=True)
class SampleMaps:
    """One review sample's maps, aligned with HistoryContext.map_runs (None: that run did not keep it)."""

    sample_id: str
    maps: tuple[str | None, ...]


@dataclass(frozen=True)
class AtlasCell:
    """One run's attention atlas in the maps table: its thumbnail (None: "–") and its hot spot in words ("": none)."""

    uri: str | None
    hot_spot: str


@dataclass(frozen=True)
class HistoryContext:
    """Everything the history template shows."""

    title: str
    score_names: tuple[str, ...]
    runs: tuple[RunView, ...]  # newest first, select parents included
    lineages: tuple[Lineage, ...]
    trends: tuple[Trend, ...]  # empty when no lineage has two runs
    map_runs: tuple[RunView, ...]  # the newest MAP_RUNS candidate runs, oldest first, so versions read left to right
    samples: tuple[SampleMaps, ...]
    map_runs_total: int = 0  # candidate runs on the page (more than map_runs when older ones have no maps here)
    atlas: tuple[AtlasCell, ...] = ()  # aligned with map_runs; empty when none of them logged an atlas (no row)


def build_history_context(
    rows: Sequence[HistoryRow], maps_by_sample: Mapping[str, Mapping[str, bytes]], *, title: str = "xgate history",
    atlases: Mapping[str, RunAtlas] | None = None,
) -> HistoryContext:
    """The page's context; ``rows`` newest first, ``maps_by_sample`` is sample id -> run id -> PNG bytes.

    ``atlases`` (run id -> the run's atlas, as ``gate.tracking.history_with_maps`` reads them): the maps table's
    first row, when any run of its columns has one.
    """
    names = tuple(s for s in KEY_SCORES if any(s in r.scores for r in rows))  # the runs table's columns
    gated = tuple(dict.fromkeys(s for r in rows for s in r.scores if s not in KEY_SCORES))
    candidate_rows = [r for r in reversed(rows) if r.kind != KIND_SELECT]
    positions = {r.run_id: x for x, r in enumerate(candidate_rows, start=1)}
    views = tuple(_run_view(row, names, positions.get(row.run_id, 0)) for row in rows)
    with_maps = {row.run_id for row in map_rows(rows)}
    oldest_first = tuple(reversed([v for v in views if v.run_id in with_maps]))
    samples = tuple(
        SampleMaps(sample_id=sample_id,
                   maps=tuple(_uri(maps_by_sample[sample_id].get(v.run_id)) for v in oldest_first))
        for sample_id in sorted(maps_by_sample)
    )
    atlases = atlases or {}
    atlas = tuple(_atlas_cell(atlases.get(v.run_id)) for v in oldest_first)
    lineages = lineages_of(candidate_rows)
    return HistoryContext(title=title, score_names=names, runs=views, lineages=lineages,
                          trends=trends(candidate_rows, lineages, (*names, *gated)), map_runs=oldest_first,
                          samples=samples, map_runs_total=len(candidate_rows),
                          atlas=atlas if any(v.run_id in atlases for v in oldest_first) else ())


def write_history_html(
    rows: Sequence[HistoryRow], maps_by_sample: Mapping[str, Mapping[str, bytes]], path: Path, *,
    atlases: Mapping[str, RunAtlas] | None = None,
) -> Path:
    """Write the HTML history page (runs, score trends, atlases and maps across versions) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_history(rows, maps_by_sample, atlases=atlases), encoding="utf-8")
    return path


def render_history(
    rows: Sequence[HistoryRow], maps_by_sample: Mapping[str, Mapping[str, bytes]], *, title: str = "xgate history",
    atlases: Mapping[str, RunAtlas] | None = None,
) -> str:
    """The history page as one HTML string (rows newest first, as ``gate.tracking.history`` returns them)."""
    context = build_history_context(rows, maps_by_sample, title=title, atlases=atlases)
    return environment().get_template("history.html.j2").render(ctx=context)


def lineages_of(rows: Sequence[HistoryRow]) -> tuple[Lineage, ...]:
    """One lineage per (candidate, policy) in order of first appearance (``rows`` oldest first)."""
    keys: dict[tuple[str, str], int] = {}
    for row in rows:
        keys[(row.candidate, row.policy)] = keys.get((row.candidate, row.policy), 0) + 1
    policies = list(dict.fromkeys(policy for _, policy in keys))
    return tuple(
        Lineage(index=i, candidate=candidate, policy=policy, colour=LINEAGE_COLOURS[i % len(LINEAGE_COLOURS)],
                style=POLICY_STYLES[policies.index(policy) % len(POLICY_STYLES)], runs=count)
        for i, ((candidate, policy), count) in enumerate(keys.items())
    )


def trends(rows: Sequence[HistoryRow], lineages: Sequence[Lineage], names: Sequence[str]) -> tuple[Trend, ...]:
    """One plot per score (``rows`` oldest first); none when no lineage has two runs to join."""
    if not any(lineage.runs > 1 for lineage in lineages):
        return ()
    return tuple(_trend(index, name, rows, lineages) for index, name in enumerate(names))


def _trend(score_index: int, score: str, rows: Sequence[HistoryRow], lineages: Sequence[Lineage]) -> Trend:
    with matplotlib.rc_context(_RC):
        figure, drawn, thresholds = trend_figure(score_index, score, rows, lineages)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg")
    svg = scope_svg_ids(_SVG_START.sub("", buffer.getvalue(), count=1), f"t{score_index}_", keep=f"t{score_index}-")
    return Trend(score=score, svg=Markup(svg), lineages=drawn, thresholds=thresholds)  # our own SVG, ids scoped


def trend_figure(
    score_index: int, score: str, rows: Sequence[HistoryRow], lineages: Sequence[Lineage]
) -> tuple[Figure, tuple[int, ...], tuple[str, ...]]:
    """One score's plot (``rows`` oldest first): its figure, the lineages drawn and the thresholds' labels."""
    # x = the run's place in time among all runs shown, so lines of different lineages interleave honestly.
    figure = Figure(figsize=(5.2, 3.0), layout="constrained")
    axes = figure.add_subplot()
    drawn: list[int] = []
    for lineage in lineages:
        points = [(x, row) for x, row in enumerate(rows, start=1)
                  if (row.candidate, row.policy) == (lineage.candidate, lineage.policy) and score in row.scores]
        if not points:
            continue
        xs = [x for x, _ in points]
        ys = [row.scores[score] for _, row in points]
        (line,) = axes.plot(xs, ys, color=lineage.colour, linestyle=lineage.style, linewidth=1.6)
        line.set_gid(f"t{score_index}-line{lineage.index}")
        for x, row in points:  # the verdict on each version: a filled dot passed, a cross failed
            passed = row.verdict == "passed"
            axes.plot([x], [row.scores[score]], marker="o" if passed else "X", markersize=6,
                      color=lineage.colour, markeredgecolor=GOOD if passed else BAD)
        drawn.append(lineage.index)
    lines = _draw_thresholds(axes, score_index, score, rows, lineages)
    _fit_y(axes, [r.scores[score] for r in rows if score in r.scores] +
           [v for r in rows for _, v in r.thresholds.get(score, ())])
    _label_thresholds(axes, score_index, lines)
    axes.set_title(score)
    _commit_axis(axes, rows)
    axes.grid(alpha=0.25)
    return figure, tuple(drawn), tuple(label for label, _ in lines)


def tick_label(row: HistoryRow) -> str:
    """A run on the x-axis: its commit's short SHA, else its start date (UTC)."""
    return row.commit or row.start_time.strftime("%m-%d %H:%M")


def _commit_axis(axes: Axes, rows: Sequence[HistoryRow]) -> None:
    step = max(1, math.ceil(len(rows) / MAX_TICKS))
    positions = list(range(1, len(rows) + 1, step))
    axes.set_xticks(positions, [tick_label(rows[x - 1]) for x in positions], rotation=40, ha="right",
                    rotation_mode="anchor", fontsize=8)
    axes.set_xlabel("commit (date when none), oldest to newest")
    axes.set_xlim(0.5, len(rows) + 0.5)


def scope_svg_ids(svg: str, prefix: str, keep: str) -> str:
    """Prefix every id in ``svg`` and every reference to one; ids starting with ``keep`` (ours) stay as they are."""
    return _SVG_ID.sub(lambda m: m.group(1) + (m.group(2) if m.group(2).startswith(keep) else prefix + m.group(2)),
                       svg)


def _draw_thresholds(
    axes: Axes, score_index: int, score: str, rows: Sequence[HistoryRow], lineages: Sequence[Lineage]
) -> list[tuple[str, float]]:
    """Each policy's line, as the runs of that policy recorded it (the newest run wins if a policy changed)."""
    lines: dict[tuple[str, str], float] = {}
    for row in rows:
        for op, value in row.thresholds.get(score, ()):
            lines[(row.policy, op)] = value
    styles = {lin.policy: lin.style for lin in lineages}
    for number, ((policy, _op), value) in enumerate(lines.items()):
        line = axes.axhline(value, color=THRESHOLD_COLOUR, linestyle=styles.get(policy, "dashed"),
                            linewidth=1.0, alpha=0.8)
        line.set_gid(f"t{score_index}-threshold{number}")
    return [(f"{policy}: {op} {value:g}", value) for (policy, op), value in lines.items()]


def _label_thresholds(axes: Axes, score_index: int, lines: Sequence[tuple[str, float]]) -> None:
    """Each threshold's label at the right end of its line, moved apart where lines lie close (never overprinted)."""
    low, high = axes.get_ylim()
    places = spread([(value - low) / ((high - low) or 1.0) for _, value in lines], LABEL_GAP)
    for number, ((label, _), place) in enumerate(zip(lines, places, strict=True)):
        text = axes.annotate(label, xy=(1.0, place), xycoords="axes fraction", xytext=(-4, 2),
                             textcoords="offset points", ha="right", va="bottom", fontsize=8, color=THRESHOLD_COLOUR,
                             bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85, "pad": 0.5})
        text.set_gid(f"t{score_index}-label{number}")


def spread(places: Sequence[float], gap: float, top: float = 0.92) -> list[float]:
    """``places`` (axes fractions) moved apart to at least ``gap`` each, as little as possible, none above ``top``."""
    order = sorted(range(len(places)), key=lambda i: places[i])
    moved = [places[i] for i in order]
    for k in range(1, len(moved)):  # upwards: each label at least `gap` above the one below
        moved[k] = max(moved[k], moved[k - 1] + gap)
    if moved and moved[-1] > top:  # then down from the top, so the highest stays inside the axes
        moved[-1] = top
        for k in range(len(moved) - 2, -1, -1):
            moved[k] = min(moved[k], moved[k + 1] - gap)
    out = [0.0] * len(places)
    for k, i in enumerate(order):
        out[i] = moved[k]
    return out


def _fit_y(axes: Axes, values: Sequence[float]) -> None:
    """Room for every point and every threshold with its label (an axhline alone does not widen the axis)."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return
    low, high = min(finite), max(finite)
    pad = 0.12 * (high - low) or 0.05 * max(abs(high), 1.0)
    axes.set_ylim(low - pad, high + pad)


def _run_view(row: HistoryRow, names: Sequence[str], position: int) -> RunView:
    return RunView(
        run_id=row.run_id, position=position, short_id=row.run_id[:RUN_ID_CHARS],
        started=row.start_time.strftime("%Y-%m-%d %H:%M"), commit=row.commit, branch=row.branch,
        kind=row.kind, experiment=row.experiment, policy=row.policy, candidate=row.candidate,
        sha256=row.sha256[:12], verdict=row.verdict,
        scores=tuple(f"{row.scores[n]:.4f}" if n in row.scores else "–" for n in names),
        failed_rules=row.failed_rules,
        rule_count="" if row.rules_total is None else rule_count(row.rules_failed, row.rules_total),
        registered=row.registered or "",
    )


def _atlas_cell(atlas: RunAtlas | None) -> AtlasCell:
    uri = None if atlas is None else _uri(atlas.png)
    return AtlasCell(uri=uri, hot_spot=(atlas.hot_spot or "") if atlas is not None and uri is not None else "")


def _uri(png: bytes | None) -> str | None:
    thumb = None if png is None else jpeg_thumbnail(png)
    return None if thumb is None else "data:image/jpeg;base64," + base64.b64encode(thumb).decode("ascii")


def jpeg_thumbnail(png: bytes, width: int = THUMB_WIDTH, quality: int = THUMB_QUALITY) -> bytes | None:
    """A map artifact (PNG) as a small JPEG ``width`` pixels wide; None when it is not a readable image."""
    try:
        with Image.open(io.BytesIO(png)) as picture:
            if picture.width * picture.height > THUMB_MAX_PIXELS:
                return None
            rgb = picture.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError):
        return None  # a damaged or foreign artifact: that cell shows "–", the page still renders
    height = max(1, round(rgb.height * width / max(1, rgb.width)))
    small = rgb.resize((width, height), Image.Resampling.LANCZOS) if rgb.width > width else rgb
    buffer = io.BytesIO()
    small.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()

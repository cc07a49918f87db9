"""Past gate runs as rows: what ``gate.tracking`` reads back from MLflow and the history page and table show.

A neutral home for ``HistoryRow`` so that the MLflow side (``gate.tracking``) and the page
(``gate.outputs.report.history``) do not import each other. No MLflow, no Jinja2 here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from gate.errors import UsageError
from gate.metrics.registry import HISTORY_SCORES

# The scores `history` shows, in registry order (those a run lacks are left out): each spec says whether it is one.
KEY_SCORES: tuple[str, ...] = HISTORY_SCORES
# The few the console table has room for (120 columns), with their short headers.
TABLE_SCORES: tuple[tuple[str, str], ...] = (
    ("accuracy", "acc"), ("alignment.lift", "lift"), ("background.only_bg_accuracy", "bg_acc"),
)
TABLE_WIDTH = 120
RUN_ID_CHARS = 8
# The history page shows the maps of this many newest candidate runs: 20 runs x 8 samples of ~3 kB JPEG
# thumbnails stay near 0.5 MB; fifty runs' maps would not fit the page's 1 MB.
MAP_RUNS = 20
KIND_CANDIDATE, KIND_SELECT = "candidate", "select"
_COMMIT_PREFIX = re.compile(r"[0-9a-f]{4,64}")


def commit_prefix(text: str) -> str:
    """A commit SHA or its prefix (4 to 64 hex digits) to look gates up by, lower-cased; else a UsageError."""
    value = text.strip().lower()
    if not _COMMIT_PREFIX.fullmatch(value):
        raise UsageError(f"not a commit SHA or a prefix of one (4 to 64 hex digits): {text[:80]!r}", field="--commit")
    return value


@dataclass(frozen=True)
class HistoryRow:
    """One run of a past gate call: a candidate run, or the parent run of a ``select``."""

    run_id: str
    start_time: datetime  # UTC
    candidate: str  # the lineage: versions of one candidate share its name; a select row: the run name
    verdict: str
    scores: Mapping[str, float]  # KEY_SCORES the run has, and the other scores its policy gates with min/max
    failed_rules: tuple[str, ...]
    sha256: str = ""
    registered: str | None = None  # "NAME/VERSION" when the run's checkpoint became a model version
    experiment: str = ""
    kind: str = KIND_CANDIDATE
    policy: str = ""
    # The policy's min/max rules on KEY_SCORES: score -> ((">=" or "<=", threshold), ...)
    thresholds: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict)
    rules_total: int | None = None
    rules_failed: int | None = None
    parent_run_id: str = ""  # a select's candidate run: its parent run
    fixed_maps: tuple[str, ...] = ()  # maps/ names of the samples every run keeps (the engine's fixed ones)
    commit: str = ""  # the commit gated, short SHA ("" for runs without one)
    branch: str = ""


def map_rows(rows: Sequence[HistoryRow]) -> list[HistoryRow]:
    """The runs whose maps the history page shows: the newest ``MAP_RUNS`` candidate runs (``rows`` newest first)."""
    return [row for row in rows if row.kind != KIND_SELECT][:MAP_RUNS]


def rule_count(failed: int | None, total: int | None, noun: str = "rules") -> str:
    """The one wording for rule counts everywhere: ``"2 of 12 rules failed"``."""
    if failed is None or total is None:
        return "-"
    return f"{failed} of {total} {noun} failed"


def format_history(rows: Sequence[HistoryRow], width: int = TABLE_WIDTH) -> str:
    """A plain-text table of history rows that fits ``width`` columns (long names are cut with "…")."""
    if not rows:
        return "no gate runs found"
    header = ["started (UTC)", "kind", "run", "commit", "experiment", "policy", "candidate", "verdict",
              *(short for _, short in TABLE_SCORES), "failed"]
    lines = [header, *(_table_cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    _shrink(widths, width - 2 * (len(header) - 1))
    return "\n".join("  ".join(_cut(cell, w).ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def _table_cells(row: HistoryRow) -> list[str]:
    scores = [f"{row.scores[s]:.3f}" if s in row.scores else "-" for s, _ in TABLE_SCORES]
    failed = "-" if row.rules_failed is None or row.rules_total is None else f"{row.rules_failed} of {row.rules_total}"
    return [row.start_time.strftime("%Y-%m-%d %H:%M"), row.kind, row.run_id[:RUN_ID_CHARS], row.commit or "-",
            row.experiment or "-",
            row.policy or "-", row.candidate, row.verdict, *scores, failed]


# Columns that give way when the table is too wide, in this order, down to these widths.
_SHRINKABLE = ((4, 8), (6, 12), (5, 6))


def _shrink(widths: list[int], budget: int) -> None:
    for column, floor in _SHRINKABLE:
        excess = sum(widths) - budget
        if excess <= 0:
            return
        widths[column] = max(floor, widths[column] - excess)


def _cut(cell: str, width: int) -> str:
    """Keep the start of a long name (where the lineage is) and mark the cut."""
    return cell if len(cell) <= width else cell[: width - 1] + "…"

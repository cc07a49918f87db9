"""``select`` as a ranking: each candidate's ranking scores with their intervals, and where two neighbours are
tied within noise (their intervals on the score that ordered them overlap)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from gate.decide.intervals import score_interval
from gate.metrics.registry import get_spec, number
from gate.outputs.sentences import unit_of
from gate.records import Records
from gate.result import CandidateResult, GateResult

RANK_CONFIDENCE = 0.95


@dataclass(frozen=True)
class RankCell:
    """One ranking score of one candidate: its value and interval, in the score's unit."""

    score: str
    value: str
    interval: str


@dataclass(frozen=True)
class RankRow:
    """One candidate in rank order."""

    place: int
    name: str
    passed: bool
    selected: bool
    cells: tuple[RankCell, ...]
    tie: str = ""  # "tied within noise with a.pt on ece (intervals overlap)"
    headline: str = ""  # a rejected candidate's diagnosis


def _interval(records: Records, score: str) -> tuple[float, float]:
    spec = get_spec(score)
    if spec is None or records.size == 0:
        return math.nan, math.nan
    bounds = score_interval(records, score, confidence=RANK_CONFIDENCE)
    return bounds.interval.low, bounds.interval.high


def _cell(scores: Mapping[str, float], score: str, bounds: tuple[float, float]) -> RankCell:
    unit = unit_of(score)
    value = scores.get(score, math.nan)
    shown = number(value, unit) if math.isfinite(value) else "n/a"
    interval = f"[{number(bounds[0], unit)}, {number(bounds[1], unit)}]" if all(map(math.isfinite, bounds)) else ""
    return RankCell(score, shown, interval)


def _tie(above: CandidateResult, below: CandidateResult, rank_by: tuple[str, ...],
         bounds: Mapping[tuple[str, str], tuple[float, float]]) -> str:
    for score in rank_by:
        first, second = above.scores.get(score, math.nan), below.scores.get(score, math.nan)
        if first == second:
            continue  # equal: the next score orders them
        a = bounds[(above.candidate.name, score)]
        b = bounds[(below.candidate.name, score)]
        if all(map(math.isfinite, (*a, *b))) and a[0] <= b[1] and b[0] <= a[1]:
            return f"tied within noise with {above.candidate.name} on {score} (95% intervals overlap)"
        return ""
    return f"tied with {above.candidate.name} on every ranking score: ordered by name"


def ranking_rows(result: GateResult, headlines: Mapping[str, str]) -> tuple[RankRow, ...]:
    """Candidates in rank order with their ranking scores' intervals; passing neighbours that only noise
    separates say so."""
    ranked = result.ranked()
    bounds = {(c.candidate.name, s): _interval(c.records, s) for c in ranked for s in result.rank_by}
    rows = []
    for place, candidate in enumerate(ranked, start=1):
        name = candidate.candidate.name
        above = ranked[place - 2] if place > 1 else None
        tie = ""
        if above is not None and above.passed and candidate.passed:
            tie = _tie(above, candidate, result.rank_by, bounds)
        cells = tuple(_cell(candidate.scores, s, bounds[(name, s)]) for s in result.rank_by)
        rows.append(RankRow(place, name, candidate.passed, result.selected == name, cells, tie,
                            "" if candidate.passed else headlines.get(name, "")))
    return tuple(rows)

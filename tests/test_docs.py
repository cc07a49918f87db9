"""docs/scores.md documents exactly the registered scores and is what gate.metrics.docs generates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gate.metrics.docs import render_scores_markdown
from gate.metrics.registry import GROUPS, ScoreSpec, all_specs

SCORES_MD = Path(__file__).resolve().parents[1] / "docs" / "scores.md"
REGENERATE = "regenerate it with `python -m gate.metrics.docs > docs/scores.md`"
ROW = re.compile(r"^\|\s*`([^`]+)`\s*\|")


def documented_names(markdown: str) -> list[str]:
    """Score names from the first column of every table row."""
    return [m.group(1) for line in markdown.splitlines() if (m := ROW.match(line))]


def test_every_registered_score_is_documented() -> None:
    documented = set(documented_names(SCORES_MD.read_text()))
    missing = [s.name for s in all_specs() if s.name not in documented]
    assert not missing, f"docs/scores.md lacks {missing}; {REGENERATE}"


def test_every_documented_score_is_registered() -> None:
    registered = {s.name for s in all_specs()}
    unknown = [name for name in documented_names(SCORES_MD.read_text()) if name not in registered]
    assert not unknown, f"docs/scores.md documents unregistered scores {unknown}; {REGENERATE}"


def test_scores_md_is_up_to_date() -> None:
    assert SCORES_MD.read_text() == render_scores_markdown(), f"docs/scores.md is stale; {REGENERATE}"


def test_rendered_rows_follow_the_registry() -> None:
    text = render_scores_markdown()
    names = documented_names(text)
    assert names == [s.name for s in all_specs()]
    assert len(names) == len(set(names))
    headings = re.findall(r"^## (\w+)$", text, flags=re.MULTILINE)
    assert headings == [g.capitalize() for g in GROUPS if any(s.group == g for s in all_specs())]


def test_row_cells() -> None:
    specs = [
        ScoreSpec("up", True, "A help | with a pipe.", "classification", lambda r: 0.0, proportion=True),
        ScoreSpec("down", False, "Lower wins.", "background", lambda r: 0.0, probe="background"),
        ScoreSpec("odd", True, "Not in GROUPS.", "zeta", lambda r: 0.0),
    ]
    lines = render_scores_markdown(specs).splitlines()
    assert "| `up` | higher is better | yes | — | A help \\| with a pipe. |" in lines
    assert "| `down` | lower is better | no | `background` | Lower wins. |" in lines
    assert [line for line in lines if line.startswith("## ")] == ["## Classification", "## Background", "## Zeta"]
    assert documented_names("\n".join(lines)) == ["up", "down", "odd"]


@pytest.mark.parametrize("name", ["class_accuracy.<class>", "ece", "background.flip_rate"])
def test_parser_reads_the_real_table(name: str) -> None:
    assert name in documented_names(SCORES_MD.read_text())

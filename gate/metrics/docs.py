"""docs/scores.md, generated from the score registry (the one place scores are declared).

Regenerate with ``python -m gate.metrics.docs > docs/scores.md``; tests/test_docs.py fails when it is stale.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from gate.metrics.registry import CLASS_PLACEHOLDER, GROUPS, ScoreSpec, all_specs

HEADER = """# Scores

Every score a policy can name, generated from `gate/metrics/registry.py` by
`python -m gate.metrics.docs > docs/scores.md` (do not edit by hand; a test checks it).

- **Direction**: whether a higher or a lower value is better (report arrows, `select`, baseline rules).
- **Proportion**: a share of samples; a rule with `confidence:` tests its Wilson bound instead of the value.
- **Probe**: the probe the policy must enable (`probes: [...]`) for the score to exist.
- `{placeholder}` stands for a class name of the review set, e.g. `class_accuracy.circle`.
- Any score can be compared with the baseline as `delta.<score>` in the outputs.
"""


def render_scores_markdown(specs: Iterable[ScoreSpec] | None = None) -> str:
    """The Markdown page: one table per group, in registry order."""
    specs = tuple(all_specs() if specs is None else specs)
    parts = [HEADER.format(placeholder=CLASS_PLACEHOLDER)]
    groups = [g for g in GROUPS if any(s.group == g for s in specs)]
    groups += sorted({s.group for s in specs} - set(groups))  # a group the registry forgot to list
    for group in groups:
        parts.append(_group_table(group, [s for s in specs if s.group == group]))
    return "\n".join(parts)


def _group_table(group: str, specs: list[ScoreSpec]) -> str:
    lines = [
        f"## {group.capitalize()}",
        "",
        "| Score | Direction | Proportion | Probe | Description |",
        "|---|---|---|---|---|",
    ]
    lines.extend(_row(spec) for spec in specs)
    return "\n".join(lines) + "\n"


def _row(spec: ScoreSpec) -> str:
    direction = "higher is better" if spec.higher_is_better else "lower is better"
    proportion = "yes" if spec.proportion else "no"
    probe = f"`{spec.probe}`" if spec.probe else "—"
    help_text = spec.help.replace("|", "\\|")  # a pipe would split the table cell
    return f"| `{spec.name}` | {direction} | {proportion} | {probe} | {help_text} |"


if __name__ == "__main__":
    sys.stdout.write(render_scores_markdown())

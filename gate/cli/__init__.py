"""The ``xgate`` command line: parses options and wires the library's calls.

Only this package prints for people and picks exit codes: 0 passed, 1 failed
the policy, 2 bad usage or input, 3 internal error. Heavy imports (torch,
mlflow) happen inside commands so that ``xgate --help`` stays fast.

- :mod:`gate.cli.app`: the ``xgate`` group, ``main`` and the exit codes;
- :mod:`gate.cli.gating`: ``check``, ``select``, ``history``, ``sync``;
- :mod:`gate.cli.models`: ``train``, ``pack``, ``inspect``, ``layers``;
- :mod:`gate.cli.review_sets`: ``review-set build|verify|synth``;
- :mod:`gate.cli.options` and :mod:`gate.cli.progress`: shared options and what is shown while working.
"""

from __future__ import annotations

from gate.cli import gating, models, review_sets  # noqa: F401  (importing them registers their commands)
from gate.cli.app import _run, cli, main

__all__ = ["_run", "cli", "main"]

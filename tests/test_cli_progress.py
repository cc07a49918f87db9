"""Progress of a gate on stderr: log lines in CI, a bar with an ETA on a terminal, nothing when piped."""

from __future__ import annotations

import io
import re
from pathlib import Path

import click
import pytest

from gate.cli import gating, progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _feed(show: object, total: int, batch: int) -> None:
    assert callable(show)
    for done in range(batch, total + batch, batch):
        show(min(done, total), total)


def _context(**params: object) -> click.Context:
    ctx = click.Context(gating.select, info_name="select")
    ctx.params = dict(params)
    return ctx


def test_ci_logs_a_line_per_tenth_with_rate_device_and_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = io.StringIO()  # a CI log is not a terminal
    monkeypatch.setattr("sys.stderr", stderr)
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with _context(candidates=(Path("models/a.pt"), Path("b.pt")), device="cpu"):
        _feed(progress.engine_progress("gating"), total=600, batch=32)
    lines = stderr.getvalue().splitlines()
    percents = [int(re.match(r"xgate: gating (\d+)% ", line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert percents == [5, 10, 21, 32, 42, 53, 64, 74, 80, 90, 100]  # 19 batches of 32 -> one line per tenth
    assert lines[0] == "xgate: gating 5% (32/600 images) · 32.0 images/s, device cpu, candidates a.pt, b.pt"
    # from the first report on, one tick is one second: 568 images in 18 s by the end (the last batch has 24)
    assert lines[-1] == "xgate: gating 100% (600/600 images) · 31.6 images/s, device cpu, candidates a.pt, b.pt"


def test_ci_line_names_a_check_candidate_and_the_torchrun_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr("sys.stderr", stderr)
    monkeypatch.setenv("CI", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with _context(candidate=Path("cand.pt"), device="cpu"):
        _feed(progress.engine_progress("gating"), total=10, batch=10)
    assert stderr.getvalue().endswith(", device cpu × 2 ranks, candidates cand.pt\n")
    assert stderr.getvalue().startswith("xgate: gating 100% (10/10 images)")


def test_terminal_bar_has_the_rate_and_an_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = Terminal()
    monkeypatch.setattr("sys.stderr", stderr)
    monkeypatch.delenv("CI", raising=False)
    clock = iter([0.0, 1.0, 3.0, 5.0])  # created, then three reports two seconds apart
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    show = progress.engine_progress("gating")
    assert show is not None
    for done in (100, 200, 1000):
        show(done, 1000)
    frames = stderr.getvalue().split("\r\033[K")[1:]
    assert frames[0] == f"gating {progress.bar(100, 1000, 30)} · 100.0 images/s · ETA 0:09"
    assert frames[1] == f"gating {progress.bar(200, 1000, 30)} · 50.0 images/s · ETA 0:16"
    assert frames[2] == f"gating {progress.bar(1000, 1000, 30)} · 225.0 images/s\n"


def test_piped_output_gets_no_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    monkeypatch.delenv("CI", raising=False)
    assert progress.engine_progress("gating") is None
    monkeypatch.setenv("CI", "false")
    assert progress.engine_progress("gating") is None


def test_bar_and_clock() -> None:
    assert progress.bar(15, 60, 4) == "[#...] 15/60"
    assert progress.clock(9.4) == "0:09" and progress.clock(3725) == "1:02:05"

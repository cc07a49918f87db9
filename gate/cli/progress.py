"""What a person sees while the gate works: the engine's progress on stderr, colour, training bars."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import click

from gate.errors import flat


def quiet() -> bool:
    """No interactive display: stderr is not a terminal, or this is CI (a redrawn bar would flood the log)."""
    return not sys.stderr.isatty() or in_ci()


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def color() -> bool:
    """Colour the summary: stdout is a terminal, NO_COLOR is not set (no-color.org) and TERM is not dumb."""
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


def engine_progress(label: str) -> Callable[[int, int], None] | None:
    """Progress of the engine over the review set, on stderr.

    In CI (``CI`` set): a log line at each further ~10% with the rate, the device and the candidates. On a
    terminal: a one-line bar with the rate and an ETA. Piped elsewhere (not a terminal, not CI): None.
    """
    if in_ci():
        return _progress_lines(label)
    if not sys.stderr.isatty():
        return None
    rate = _rate_meter()

    def show(done: int, total: int) -> None:
        speed = rate(done)
        eta = f" · ETA {clock((total - done) / speed)}" if speed and done < total else ""
        sys.stderr.write(f"\r\033[K{label} {bar(done, total, 30)}{_speed(speed)}{eta}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _progress_lines(label: str) -> Callable[[int, int], None]:
    rate = _rate_meter()
    printed = [-1]  # the last tenth a line was written for
    where: list[str] = []

    def show(done: int, total: int) -> None:
        speed = rate(done)
        tenth = min(10, 10 * done // max(total, 1))
        if tenth <= printed[0]:
            return
        printed[0] = tenth
        if not where:  # resolved at the first report: torch is imported by then and the models are placed
            where.append(_run_description())
        percent = 100 * done // max(total, 1)
        sys.stderr.write(f"xgate: {label} {percent}% ({done}/{total} images){_speed(speed)}, {where[0]}\n")
        sys.stderr.flush()

    return show


def _rate_meter() -> Callable[[int], float | None]:
    """Images per second. The clock starts at the first report: before it, models and the review set load."""
    created = time.monotonic()
    first: list[tuple[float, int]] = []

    def rate(done: int) -> float | None:
        now = time.monotonic()
        if not first:
            first.append((now, done))
            return done / (now - created) if now > created and done else None
        start, start_done = first[0]
        return (done - start_done) / (now - start) if now > start and done > start_done else None

    return rate


def _speed(speed: float | None) -> str:
    return f" · {speed:.1f} images/s" if speed else ""


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def _run_description() -> str:
    """``device cuda:0 (NVIDIA H200), candidates a.pt, b.pt``, from the running command's own options."""
    ctx = click.get_current_context(silent=True)
    params = ctx.params if ctx is not None else {}
    device = str(params.get("device") or "auto")
    if device == "auto" or device.startswith("cuda"):
        import torch

        if torch.cuda.is_available():
            device = "cuda" if device == "auto" else device
            device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        elif device == "auto":
            device = "cpu"
    world = os.environ.get("WORLD_SIZE", "1")
    ranks = f" × {world} ranks" if world.isdigit() and int(world) > 1 else ""
    named = params.get("candidates") or ((params["candidate"],) if params.get("candidate") else ())
    names = [flat(Path(str(path)).name) for path in named]  # a file name may hold a newline: one line
    shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"device {device}{ranks}" + (f", candidates {shown}" if shown else "")


def bar(done: int, total: int, width: int) -> str:
    filled = int(width * done / max(total, 1))
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total}"


def train_line(line: str) -> None:
    # Epoch lines replace the batch bar on the same terminal line.
    sys.stderr.write("\r\033[K")
    click.echo(line, err=True)


def train_bar(epochs: int, epoch: int, done: int, total: int, loss: float, accuracy: float) -> None:
    sys.stderr.write(f"\r\033[Kepoch {epoch}/{epochs} {bar(done, total, 24)}  loss {loss:.4f}  acc {accuracy:.3f}")
    sys.stderr.flush()

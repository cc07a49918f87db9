"""Typed errors that carry their exit code.

The library raises these; only ``gate.cli`` turns them into one line for people
and an exit code (0 passed, 1 failed, 2 bad usage or input, 3 internal error).
"""

from __future__ import annotations

from pathlib import Path


class GateError(Exception):
    """Base error: an internal problem unless a subclass says otherwise."""

    exit_code = 3

    def __init__(self, message: str, *, path: str | Path | None = None, field: str | None = None) -> None:
        self.message = message
        self.path = str(path) if path is not None else None
        self.field = field
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """``path: field: message`` with the missing parts left out, on one line whatever the parts hold."""
        parts = [p for p in (self.path, self.field) if p]
        return flat(": ".join([*parts, self.message]))


class InputError(GateError):
    """Bad input from the user: a file, a field or an argument. Exit code 2."""

    exit_code = 2


class UsageError(InputError):
    """Options that do not go together."""


class CandidateError(InputError):
    """An unreadable, unsafe or inconsistent candidate checkpoint."""


class ReviewSetError(InputError):
    """A review set that is malformed or does not match its digest."""


class PolicyError(InputError):
    """A malformed policy file or a rule that cannot be evaluated."""


class DataError(InputError):
    """Training data that cannot be used (empty, single class, missing masks)."""


class ModelOutputError(InputError):
    """A model that produced NaN or infinite outputs on the review set."""


class TrackingError(GateError):
    """The tracking server failed and the user asked to require it. Exit code 2."""

    exit_code = 2


class Terminated(KeyboardInterrupt):  # noqa: N818  # named for the signal, like KeyboardInterrupt
    """SIGTERM, raised where the program is so that cleanup runs exactly as for Ctrl-C (exit 143, not 130)."""


# Every character str.splitlines() breaks a line at (GitHub's log splits at \n and \r).
_LINE_BREAKS = {0x0A: "\\n", 0x0D: "\\r", 0x0B: "\\x0b", 0x0C: "\\x0c", 0x1C: "\\x1c", 0x1D: "\\x1d",
                0x1E: "\\x1e", 0x85: "\\x85", 0x2028: "\\u2028", 0x2029: "\\u2029"}


def flat(text: str) -> str:
    """``text`` on one line: every line break written as an escape (``\\n``, ``\\r``, ``\\u2028``).

    A file name is chosen by whoever names the file; printed raw, a newline in it would start a line of its
    own (a ``::warning`` workflow command in a GitHub Actions log, a fake ``xgate: error``).
    """
    return text.translate(_LINE_BREAKS)


def reason(exc: BaseException) -> str:
    """``Type: first line`` of an exception, at most 300 characters."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:300] if first else type(exc).__name__

"""The ``xgate`` group and its entry point: errors become one line and an exit code.

0 passed, 1 failed the policy, 2 bad usage or input, 3 internal error, 130/143 interrupted.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn, TextIO

import click

from gate.errors import GateError, Terminated, flat


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xgate")
def cli() -> None:
    """xgate: a model-selection gate for CI for image classifiers.

    \b
    Quick start:
      xgate check candidates/bgmix.pt --policy policies/strict.yaml
      xgate review-set verify review_sets/shapes-v1
    """


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point: run the CLI and turn errors into one line and an exit code (under torchrun: rank 0's)."""
    from gate.engine.distributed import agree_exit_code, launched_by_torchrun  # light: no torch or numpy at import

    with _sigterm_as_interrupt(), _stdout_reader_may_leave():
        code = _run(argv)
    sys.exit(agree_exit_code(code) if launched_by_torchrun() else code)


class _ReaderMayLeave:
    """stdout that drops what it is given once its reader has gone (``xgate check ... | head -1``).

    Left alone, the broken pipe ends the command with click's exit 1, which reads as "failed the policy"
    even for a pass. The gate's outputs are files; the console summary is a courtesy, so the command
    finishes and exits with its verdict. fd 1 is pointed at /dev/null so the interpreter's last flush
    cannot fail either.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.reader_gone = False

    def write(self, text: str) -> int:
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self.reader_gone = True
        with contextlib.suppress(OSError, ValueError, AttributeError):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, self._stream.fileno())
            os.close(null)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


@contextlib.contextmanager
def _stdout_reader_may_leave() -> Iterator[None]:
    """sys.stdout as :class:`_ReaderMayLeave` for the command, restored afterwards (tests call main in-process)."""
    original = sys.stdout
    if original is None:
        yield
        return
    sys.stdout = _ReaderMayLeave(original)
    try:
        yield
    finally:
        sys.stdout = original


# Exit codes for a run stopped by a signal: the shell's 128 + signal number (SIGINT 2, SIGTERM 15).
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (CI cancelling a job, a runner shutting down) raises Terminated where the program is.

    Terminated is a KeyboardInterrupt, so every cleanup that handles Ctrl-C (temporary outputs removed,
    the outbox entry kept) runs for SIGTERM too.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    previous_hook = sys.unraisablehook

    def redeliver(unraisable: Any) -> None:
        # A signal that lands while a finaliser or weakref callback runs (MLflow and SQLAlchemy make many)
        # raises there, where Python can only print "Exception ignored" with a traceback and drop it. Deliver
        # it again to the main thread instead, so Ctrl-C and SIGTERM always stop the command the normal way.
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            _REDELIVERY.schedule(signal.SIGTERM if isinstance(unraisable.exc_value, Terminated) else signal.SIGINT)
            return
        previous_hook(unraisable)

    sys.unraisablehook = redeliver
    _REDELIVERY.open()
    try:
        yield
    finally:
        _REDELIVERY.close()
        sys.unraisablehook = previous_hook
        signal.signal(signal.SIGTERM, previous)


class _Redelivery:
    """Signals to deliver again to the main thread: at most one, and none once an interrupt was handled.

    From another thread, a moment later: delivered at once, the signal would be raised inside the hook that
    asks for it, and dropped again. Closed when the command has handled an interrupt or has ended, so a late
    delivery can never interrupt the exit itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = False

    def open(self) -> None:
        with self._lock:
            self._open = True

    def close(self) -> None:
        with self._lock:
            self._open = False

    def schedule(self, signum: signal.Signals) -> None:
        later = threading.Timer(0.01, self._deliver, args=(signum,))
        later.daemon = True  # never keeps a finishing process alive
        later.start()

    def _deliver(self, signum: signal.Signals) -> None:
        with self._lock:
            if self._open:
                self._open = False
                _thread.interrupt_main(signum)


_REDELIVERY = _Redelivery()


# Set by a gate once its outputs are complete: an interrupt after that (while printing, while logging to
# MLflow) must not say that no result was written.
RESULT_WRITTEN: list[str] = []


def _interrupted(exc: BaseException | None) -> int:
    _REDELIVERY.close()  # this interrupt is the one: a copy of it still queued must not stop the exit
    terminated = isinstance(exc, Terminated)
    name = "SIGTERM" if terminated else "SIGINT"
    done = (f"the result was already written ({flat(RESULT_WRITTEN[-1])}); an MLflow record not yet uploaded "
            "stays in the outbox for `xgate sync`") if RESULT_WRITTEN else "no new result was written"
    click.echo(f"xgate: interrupted ({name}); {done}", err=True)
    return EXIT_SIGTERM if terminated else EXIT_SIGINT


def _run(argv: Sequence[str] | None) -> int:
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="xgate", standalone_mode=False)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except GateError as exc:
        click.echo(f"xgate: error: {exc.one_line()}", err=True)
        return exc.exit_code
    except click.exceptions.Abort as exc:  # click turns Ctrl-C (and our SIGTERM) into Abort
        if isinstance(exc.__cause__, KeyboardInterrupt):
            return _interrupted(exc.__cause__)
        click.echo("xgate: aborted", err=True)
        return EXIT_SIGINT
    except click.ClickException as exc:  # usage errors too: one line, naming the option, as for bad input
        context = getattr(exc, "ctx", None)
        hint = f" (see '{context.command_path} --help')" if context is not None else ""
        click.echo(f"xgate: error: {flat(exc.format_message())}{hint}", err=True)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        return _interrupted(exc)
    except Exception as exc:  # an internal error: one line unless debugging
        if os.environ.get("XGATE_DEBUG"):
            traceback.print_exc()
        click.echo(f"xgate: internal error: {type(exc).__name__}: {flat(str(exc))} (set XGATE_DEBUG=1 for a "
                   "traceback)", err=True)
        return 3
    return 0

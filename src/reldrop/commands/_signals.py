"""``kill PID`` stops a ``reldrop`` command the way Ctrl-C does.

Python's default SIGTERM handler ends the process at once: no ``finally`` runs, so a run
directory keeps the ``.reldrop.lock`` of a dead process (the next ``compare`` refuses a run with
no checkpoint yet until ``--force``) and a half-written temp file stays behind. While a command
runs, :func:`sigterm_as_interrupt` turns SIGTERM into :class:`Terminated`, a KeyboardInterrupt,
so locks are released, temp files removed and the resume hint printed; the exit code is 143
(128 + SIGTERM) instead of 130. Only the CLI installs it, and it restores the previous handler.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

__all__ = ["Terminated", "sigterm_as_interrupt", "interrupt_exit_code"]


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM while a ``reldrop`` command ran."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated(f"received signal {signum} (SIGTERM)")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (elsewhere: no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupt_exit_code(err: BaseException) -> int:
    """143 for SIGTERM (:class:`Terminated`), 130 for Ctrl-C, the shell's conventions."""
    return 128 + int(signal.SIGTERM) if isinstance(err, Terminated) else 130

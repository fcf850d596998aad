"""Ctrl-C and SIGTERM end a grid the same way: running jobs are marked KILLED and resume on a re-run.

SIGTERM (``timeout``, Slurm, Kubernetes) is turned into :class:`Terminated`, a :class:`KeyboardInterrupt`, so one
``except KeyboardInterrupt`` handles both; the exit code tells them apart (130 and 143).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

#: Exit codes of a grid stopped by Ctrl-C (SIGINT) and by SIGTERM (128 + the signal number, the shell's rule).
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled exactly like Ctrl-C; exit code 143."""

    exit_code = EXIT_TERMINATED


#: Set once SIGTERM arrived: Tune re-raises interrupts as plain KeyboardInterrupts, losing the subclass.
SIGNALLED = threading.Event()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` in the main thread for the duration of the block.

    Ray's ``ray.init`` installs a SIGTERM handler that calls ``sys.exit`` from whatever the driver is
    doing (and the process then dies in Ray's C++ teardown, rc 134, runs left ``RUNNING``); this one is
    installed after it and restores the previous handler on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum: int, _frame: object) -> None:
        SIGNALLED.set()
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def exit_code(err: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM (also when Tune re-raised it as a plain KeyboardInterrupt)."""
    return EXIT_TERMINATED if isinstance(err, Terminated) or SIGNALLED.is_set() else EXIT_INTERRUPTED

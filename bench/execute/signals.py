"""Ctrl-C and SIGTERM end a grid the same way, at any moment: running jobs are marked KILLED, the lock is released,
one line is printed, and the same command resumes; exit 130 (Ctrl-C) or 143 (SIGTERM).

SIGTERM (``timeout``, Slurm, Kubernetes) is turned into :class:`Terminated`, a :class:`KeyboardInterrupt`, so one
``except KeyboardInterrupt`` handles both. :func:`interrupts` installs the handlers for a whole command, from its
first second (torch still importing, the MLflow store opening, Ray starting) to its last (Ray shutting down), and
keeps three promises the plain Python handlers did not:

* **A signal is never lost.** An exception raised by a handler while Python runs a finaliser (a ``__del__`` of
  SQLAlchemy's, a weakref callback) is printed as "Exception ignored in ..." and dropped, and the grid trained on.
  The handler records the signal first; :func:`raise_pending` (called by the driver between its steps and before
  each job) raises it again until it is handled.
* **A second interrupt ends the process now.** After the first, the driver marks the runs and releases the lock
  (:func:`cleanup`); a second signal during that lets it finish and then exits; one during Ray's shutdown (which
  used to end in a traceback and a crash, -11) exits at once with one line — nothing is lost: the runs are marked,
  the lock is gone, and Ray's reaper stops its processes.
* **Ray's own handler does not win.** ``ray.init`` installs a SIGTERM handler that calls ``sys.exit(15)`` (exit 15, no
  message); :func:`bench.execute.ray_tune.init_ray` keeps ours in place while Ray starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: Exit codes of a grid stopped by Ctrl-C (SIGINT) and by SIGTERM (128 + the signal number, the shell's rule).
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled exactly like Ctrl-C; exit code 143."""

    exit_code = EXIT_TERMINATED


#: Set once SIGTERM arrived: Tune re-raises interrupts as plain KeyboardInterrupts, losing the subclass.
SIGNALLED = threading.Event()

#: The line of a second interrupt, which ends the process at once.
AGAIN = "interrupted again: stopped without waiting for Ray to shut down; finished jobs are kept, run the same " \
        "command again to resume"  # fmt: skip


@dataclass
class _State:
    """What the handlers of this process have seen (one command at a time runs in a process)."""

    count: int = 0
    #: a signal was received whose exception has not reached a handler yet (it may have been swallowed).
    pending: bool = False
    #: the driver is marking runs and releasing the lock: a second signal waits for it.
    cleaning: int = 0
    #: the marking and releasing are done: a second signal exits at once.
    cleaned: bool = False
    #: a second signal came while cleaning: exit as soon as the cleaning is done.
    hurry: bool = False
    installed: bool = False


_STATE = _State()


def _interrupt() -> KeyboardInterrupt:
    return Terminated() if SIGNALLED.is_set() else KeyboardInterrupt()


def exit_now() -> None:
    """Print :data:`AGAIN` and end the process without Python's (and Ray's) shutdown; 130 or 143."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        os.write(2, f"\n{AGAIN}\n".encode())
    os._exit(EXIT_TERMINATED if SIGNALLED.is_set() else EXIT_INTERRUPTED)


def _handler(signum: int, _frame: Any) -> None:
    if signum == signal.SIGTERM:
        SIGNALLED.set()
    _STATE.count += 1
    if _STATE.count == 1:
        _STATE.pending = True
        raise _interrupt()
    _STATE.hurry = True
    if _STATE.cleaning:
        return  # let the runs be marked and the lock released; cleanup() exits when it is done
    if not _STATE.cleaned:
        raise _interrupt()  # still unwinding (Tune stopping its trials): cut it short, the cleanup comes next
    exit_now()


def _install() -> None:
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


@contextlib.contextmanager
def interrupts() -> Iterator[None]:
    """Handle Ctrl-C and SIGTERM as described in the module docstring for the duration of a command.

    After an interrupt the handlers stay installed (Ray's shutdown at exit comes later and a second Ctrl-C there must
    exit cleanly); without one the previous handlers come back. Nested uses are one.
    """
    if threading.current_thread() is not threading.main_thread() or _STATE.installed:
        yield  # another thread, or already inside (``run`` installs them before ``grid_exit`` does)
        return
    vars(_STATE).update(vars(_State(installed=True)))  # a fresh state for this command
    SIGNALLED.clear()
    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    hook = sys.unraisablehook

    def quiet(unraisable: Any) -> None:
        """An interrupt a finaliser swallowed is raised again at the next step: no "Exception ignored" traceback."""
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _STATE.pending:
            return
        hook(unraisable)

    sys.unraisablehook = quiet
    _install()
    try:
        yield
    finally:
        _STATE.installed = False  # the next command in this process (a test runner's) starts afresh
        if _STATE.count == 0:
            signal.signal(signal.SIGINT, old[0])
            signal.signal(signal.SIGTERM, old[1])
            sys.unraisablehook = hook


def reinstall() -> None:
    """Put the handlers back after a library replaced them (Ray's ``ray.init``)."""
    if _STATE.installed and threading.current_thread() is threading.main_thread():
        _install()


def raise_pending() -> None:
    """Raise the interrupt a finaliser swallowed (see the module docstring); nothing when none is pending."""
    if _STATE.pending:
        raise _interrupt()


def acknowledge() -> None:
    """The interrupt reached the command's handler: nothing is pending and nothing is left to clean up, so a second
    interrupt from now on exits at once."""
    _STATE.pending = False
    _STATE.cleaned = True


def shutdown_ray() -> None:
    """Stop this process's Ray (if it started one) after an interrupt, while a second interrupt can still cut it short.

    Ray would otherwise stop in an ``atexit`` hook, where a second Ctrl-C ended in a traceback and a crash.
    """
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@contextlib.contextmanager
def cleanup() -> Iterator[None]:
    """Mark runs and release the lock after an interrupt: a second signal waits for this block, then exits.

    Once the block is done a second signal exits at once (:func:`exit_now`); if one came during it, the process exits
    right after it.
    """
    _STATE.cleaning += 1
    _STATE.pending = False  # the interrupt is being handled
    try:
        yield
    finally:
        _STATE.cleaning -= 1
        if not _STATE.cleaning and _STATE.count:
            _STATE.cleaned = True
            if _STATE.hurry:
                exit_now()


def received(signum: int) -> KeyboardInterrupt:
    """Record ``signum`` as the handler would have (another library's handler caught it) and return what to raise."""
    if signum == signal.SIGTERM:
        SIGNALLED.set()
    _STATE.count = max(_STATE.count, 1)
    return _interrupt()


def exit_code(err: KeyboardInterrupt) -> int:
    """130 for Ctrl-C, 143 for SIGTERM (also when Tune re-raised it as a plain KeyboardInterrupt)."""
    return EXIT_TERMINATED if isinstance(err, Terminated) or SIGNALLED.is_set() else EXIT_INTERRUPTED

"""One clock for every time a person reads: the process's start, and seconds since then.

:data:`PROCESS_START` is taken when this module is first imported, which the ``diffbench`` command does first
thing (:mod:`bench.cli`), less the process's age then (Python's start-up): a grid's "elapsed" and its closing
"in …" are the process's wall time, not the time since some later step. Every time shown is
``time.monotonic`` based, through :func:`now` (a test replaces it).
"""

from __future__ import annotations

import os
import time


def _process_age() -> float:
    """Seconds since this process started (Linux: its start time in ``/proc``), 0 where unknown.

    Python's own start-up and the imports before this module are part of the wall time ``time`` reports.
    """
    try:
        with open(f"/proc/{os.getpid()}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 (starttime), in clock ticks since boot
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - started)
    except (OSError, ValueError, IndexError, AttributeError):
        return 0.0


#: ``time.monotonic()`` at the start of this process.
PROCESS_START = time.monotonic() - _process_age()


def now() -> float:
    """``time.monotonic()``: the one clock of elapsed times and ETAs."""
    return time.monotonic()


def since_start() -> float:
    """Seconds since :data:`PROCESS_START`."""
    return now() - PROCESS_START

"""``diffbench ui``: the MLflow UI on the store ``diffbench run`` writes, and nothing left behind when it stops.

``mlflow ui`` is a tree of processes (the CLI, a uvicorn server, its workers). Started in a session of
its own, the whole tree is one process group: Ctrl-C or SIGTERM (``timeout``, Slurm, ``kill``) on
``diffbench ui`` stops the group, so no orphaned server keeps the port.

The server's own output (deprecation warnings, one access-log line per request) goes to a log file, not the
terminal; the runs link is printed once the server answers HTTP 200 (:func:`wait_until_up`), not before.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from methods.errors import UserError

#: Seconds the server gets to stop after SIGTERM before its group is killed.
GRACE_S = 5.0
#: Seconds the server gets to answer its first request (it took ~40 s on a loaded 2-core machine).
START_TIMEOUT_S = 300.0
#: Seconds between two polls, and the timeout of one poll.
POLL_S = 0.5
POLL_TIMEOUT_S = 2.0


def log_path(output: Path) -> Path:
    """Where the server's stdout and stderr go: ``OUTPUT/logs/mlflow-ui.log``."""
    return Path(output) / "logs" / "mlflow-ui.log"


def poll_url(host: str, port: int) -> str:
    """The address this machine reaches the server on (a wildcard bind is reached on loopback)."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


def answers(url: str, timeout: float = POLL_TIMEOUT_S) -> bool:
    """Whether ``url`` answers HTTP 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - our own server's http URL
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):  # refused, reset, timed out, an HTTP error status
        return False


def wait_until_up(
    url: str,
    proc: subprocess.Popen,
    log: Path,
    timeout_s: float = START_TIMEOUT_S,
    tick: Callable[[float], None] | None = None,
) -> float:
    """Poll ``url`` until it answers HTTP 200; the seconds it took.

    Raises:
        UserError: ``proc`` exited first, or ``timeout_s`` passed (both name the server's log ``log``).
    """
    start = time.monotonic()
    while True:
        waited = time.monotonic() - start
        if proc.poll() is not None:
            raise UserError(f"the MLflow UI server exited (code {proc.returncode}) before answering; see {log}")
        if answers(url):
            return waited
        if waited > timeout_s:
            raise UserError(f"the MLflow UI server did not answer {url} within {timeout_s:.0f} s; see {log}")
        if tick is not None:
            tick(waited)
        time.sleep(POLL_S)


def ui_command(uri: str, host: str, port: int, output: Path) -> list[str]:
    """The ``mlflow ui`` command line for the store ``uri`` (artifacts next to a default SQLite store)."""
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    # One worker: a UI for one person, which starts in half the time of MLflow's default four (each imports mlflow).
    cmd = [exe, "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port), "--workers", "1"]
    if uri.startswith("sqlite:///"):
        cmd += ["--default-artifact-root", (Path(output).resolve() / "mlartifacts").as_uri()]
    return cmd


class _Stop(BaseException):
    """SIGINT/SIGTERM while serving: a BaseException, so no ``except Exception`` on the way (the runs link's
    store access, a poll) swallows it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum


def runs_link(uri: str, experiment: str, base: str) -> str | None:
    """The deep link to ``experiment``'s runs in diffbench's view, or ``None`` when the store has no such
    experiment yet; the view and the experiment kind are (re)applied on the way."""
    from mlflow.tracking import MlflowClient

    from bench.tracking.ui_view import mark_experiment, runs_url

    try:
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
    except Exception:  # noqa: BLE001 - a store the UI itself will report on
        return None
    if exp is None:
        return None
    with contextlib.suppress(Exception):  # a store busy with the starting server: the view stays as the run left it
        mark_experiment(client, exp.experiment_id, [], [])
    return runs_url(base, exp.experiment_id)


def serve(
    cmd: list[str],
    url: str,
    log: Path,
    ready: Callable[[float], None],
    tick: Callable[[float], None] | None = None,
    timeout_s: float = START_TIMEOUT_S,
    prepare: Callable[[], None] | None = None,
) -> int:
    """Run ``cmd`` in its own process group until it exits or we get SIGINT/SIGTERM; return an exit code.

    The server writes to ``log``; once ``url`` answers HTTP 200, ``ready(seconds since the start)`` is called (print the
    link, open a browser). ``prepare()`` runs while the server starts; ``tick(seconds waited)`` is called between
    polls (with the seconds since the start). Ctrl-C returns 0 (the user closed
    it); SIGTERM returns 143. Either way the whole group is stopped: SIGTERM, then SIGKILL after
    :data:`GRACE_S` seconds.

    Raises:
        UserError: no ``mlflow`` command, an unwritable log, or a server that died or never answered.
    """
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        sink = open(log, "wb")  # noqa: SIM115 - the child holds its own copy of the descriptor
    except OSError as err:
        raise UserError(f"cannot write the MLflow UI log {log}: {err.strerror or err}") from None
    started = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL, stdout=sink,
                                stderr=subprocess.STDOUT)  # fmt: skip
    except FileNotFoundError:
        raise UserError("the mlflow command is not installed in this environment") from None
    finally:
        sink.close()

    def handler(signum: int, _frame: object) -> None:
        raise _Stop(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if prepare is not None:
            prepare()
        since_start = None if tick is None else (lambda _waited: tick(time.monotonic() - started))
        wait_until_up(url, proc, log, timeout_s - (time.monotonic() - started), since_start)
        ready(time.monotonic() - started)
        return proc.wait()
    except (_Stop, KeyboardInterrupt) as stop:
        _stop_group(proc)
        return 143 if getattr(stop, "signum", signal.SIGINT) == signal.SIGTERM else 0
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if proc.poll() is None:
            _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):  # stragglers of the group (uvicorn workers)
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=GRACE_S)

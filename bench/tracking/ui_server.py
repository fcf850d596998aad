"""``diffbench ui``: the MLflow UI on the store ``diffbench run`` writes, and nothing left behind when it stops.

``mlflow ui`` is a tree of processes (the CLI, a uvicorn server, its workers). Started in a session of
its own, the whole tree is one process group: Ctrl-C or SIGTERM (``timeout``, Slurm, ``kill``) on
``diffbench ui`` stops the group, so no orphaned server keeps the port.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from methods.errors import UserError

#: Seconds the server gets to stop after SIGTERM before its group is killed.
GRACE_S = 5.0


def ui_command(uri: str, host: str, port: int, output: Path) -> list[str]:
    """The ``mlflow ui`` command line for the store ``uri`` (artifacts next to a default SQLite store)."""
    exe = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    cmd = [exe, "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if uri.startswith("sqlite:///"):
        cmd += ["--default-artifact-root", (Path(output).resolve() / "mlartifacts").as_uri()]
    return cmd


class _Stop(Exception):
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
    mark_experiment(client, exp.experiment_id, [], [])
    return runs_url(base, exp.experiment_id)


def serve(cmd: list[str], open_url: str | None = None) -> int:
    """Run ``cmd`` in its own process group until it exits or we get SIGINT/SIGTERM; return an exit code.

    Ctrl-C returns 0 (the user closed it); SIGTERM returns 143. Either way the whole group is stopped:
    SIGTERM, then SIGKILL after :data:`GRACE_S` seconds. ``open_url`` is opened in a browser once started.
    """
    try:
        proc = subprocess.Popen(cmd, start_new_session=True)
    except FileNotFoundError:
        raise UserError("the mlflow command is not installed in this environment") from None
    if open_url:
        import webbrowser

        webbrowser.open(open_url)

    def handler(signum: int, _frame: object) -> None:
        raise _Stop(signum)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
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

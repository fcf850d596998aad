"""The fault matrix, re-runnable: each fault done to a tiny finished (or running) grid, then the same command again.

    python -m bench.perf.fault_matrix            # one row per fault: what the re-run printed, and the end state

A row passes when the re-run ends as it must (exit 0 after a repair, the documented code after a signal) and the
output's end state is whole: every job finished exactly once (one live FINISHED run per job hash), its
``result.json`` and ``student.pt`` whole, nothing left ``RUNNING``, no lock left behind. Grids run in-process
(``--executor local``, digits, resnet8, 2 steps per epoch); faults that need a process of their own (signals) run
``diffbench`` through :data:`PAUSE_WRAPPER`, which pauses one phase so the signal lands there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
GRID = ["--dataset", "digits", "--pairs", "resnet8:resnet8", "--methods", "kd", "--batch-size", "16",
        "--max-steps", "2", "--executor", "local"]  # fmt: skip

#: ``python -c PAUSE_WRAPPER run ...``: ``diffbench`` with the phase named by ``PAUSE_AT`` made slow; it prints
#: ``PAUSED`` when it gets there. Phases: preflight, store, ray (just before Ray starts), plan, finaliser (a
#: finaliser runs while the store opens: Python drops what a signal handler raises there), ray.init (inside
#: ``ray.init``, after Ray installed its handlers), ray.shutdown (inside Ray's shutdown after an interrupt).
PAUSE_WRAPPER = r"""
import os, sys, time
phase = os.environ.get("PAUSE_AT", "")

def pause():
    print("PAUSED", flush=True)
    time.sleep(60)

if phase in ("preflight", "store", "ray"):
    import bench.execute.driver as driver
    status = driver._status
    words = {"preflight": "checking the data", "store": "opening the MLflow store", "ray": "starting Ray"}[phase]
    def slow_status(console, text):
        status(console, text)
        if words in text:
            pause()
    driver._status = slow_status
elif phase == "plan":
    from bench.execute.state import GridRun
    plan = GridRun.plan
    def slow_plan(self, *a, **kw):
        todo = plan(self, *a, **kw)
        pause()
        return todo
    GridRun.plan = slow_plan
elif phase == "finaliser":
    from bench.tracking import tracker
    init = tracker.Tracker.__init__
    class Finalised:
        def __del__(self):
            pause()
    def slow_init(self, *a, **kw):
        init(self, *a, **kw)
        Finalised()
    tracker.Tracker.__init__ = slow_init
elif phase == "ray.shutdown":
    import ray
    ray_shutdown = ray.shutdown
    def slow_ray_shutdown(*a, **kw):
        pause()
        return ray_shutdown(*a, **kw)
    ray.shutdown = slow_ray_shutdown
elif phase == "ray.init":
    import ray
    ray_init = ray.init
    def slow_ray_init(*a, **kw):
        out = ray_init(*a, **kw)
        pause()
        return out
    ray.init = slow_ray_init
from bench.cli.app import main
sys.argv = ["diffbench", *sys.argv[1:]]
main()
"""


def _invoke(out: Path, *extra: str, epochs: int = 2) -> tuple[int, str]:
    from typer.testing import CliRunner

    from bench.cli.app import app

    result = CliRunner().invoke(app, ["run", "--output", str(out), "--epochs", str(epochs), *GRID, *extra])
    return result.exit_code, " ".join(result.output.split())


def end_state(out: Path) -> str:
    """``3 jobs finished once, files whole, 0 RUNNING, no lock`` (or what is not so)."""
    from mlflow.tracking import MlflowClient

    from bench.execute.integrity import damage_of
    from bench.jobs.files import job_dir

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("diffbench")
    runs = client.search_runs([exp.experiment_id], "tags.`diffbench.kind` = 'job'", max_results=1000)
    live = [r for r in runs if r.data.tags.get("diffbench.superseded") != "true"]
    hashes = [r.data.tags["job_hash"] for r in live]
    finished = sum(r.info.status == "FINISHED" for r in live)
    damaged = [h for h in set(hashes) if damage_of(job_dir(out, h), h)]
    running = sum(r.info.status == "RUNNING" for r in runs)
    superseded = len(runs) - len(live)
    state = (f"{len(set(hashes))} jobs, {finished} finished, {len(hashes) - len(set(hashes))} duplicated, "
             f"{len(damaged)} damaged, {running} RUNNING, {superseded} superseded runs, "
             f"{'lock left' if (out / '.diffbench.lock').exists() else 'no lock'}")  # fmt: skip
    return state


def whole(state: str, jobs: int = 3) -> bool:
    return state.startswith(f"{jobs} jobs, {jobs} finished, 0 duplicated, 0 damaged, 0 RUNNING") and "no lock" in state


def _lines(text: str, *keys: str) -> str:
    """The sentences of ``text`` (flattened output) that hold one of ``keys``."""
    found = []
    for key in keys:
        at = text.find(key)
        while at >= 0:
            found.append(text[at : at + 170])
            at = text.find(key, at + 1)
    return " | ".join(found) or text[-170:]


# -- faults: each takes a finished grid's copy and returns (exit code, what the re-run printed) -----------------------
def _job(out: Path, method: str, role: str = "student") -> Path:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("diffbench")
    run = next(r for r in client.search_runs([exp.experiment_id], "tags.`diffbench.kind` = 'job'")
               if r.data.tags["method"] == method and r.data.tags["role"] == role)  # fmt: skip
    return out / "jobs" / run.data.tags["job_hash"]


def garbled_result(out: Path) -> tuple[int, str]:
    (_job(out, "kd") / "result.json").write_text('{"job_hash": "x", "metr')
    code, text = _invoke(out)
    return code, _lines(text, "repaired", "to run")


def deleted_student(out: Path) -> tuple[int, str]:
    wd = _job(out, "kd")
    (wd / "student.pt").unlink()
    code, text = _invoke(out)
    from typer.testing import CliRunner

    from bench.cli.app import app

    export = CliRunner().invoke(app, ["export", wd.name, "--output", str(out), "--last", "--format", "state_dict",
                                      "--out", str(out / "exported.pt")])  # fmt: skip
    return code, _lines(text, "repaired") + f" | export: exit {export.exit_code}"


def deleted_jobs(out: Path) -> tuple[int, str]:
    shutil.rmtree(out / "jobs")
    code, text = _invoke(out)
    return code, _lines(text, "repaired", "to run")


def deleted_jobs_and_artifacts(out: Path) -> tuple[int, str]:
    shutil.rmtree(out / "jobs")
    shutil.rmtree(out / "mlartifacts")
    code, text = _invoke(out)
    return code, _lines(text, "retraining", "to run")


def read_only_mid_grid(out: Path) -> tuple[int, str]:
    """A fresh grid whose output is made immutable after its first job (chattr +i; root ignores chmod)."""
    from bench.execute.state import GridRun

    shutil.rmtree(out)
    finish, made = GridRun.on_finish, []

    def then_read_only(self: GridRun, spec: object, summary: dict) -> None:
        finish(self, spec, summary)
        if not made:
            made.append(subprocess.run(["chattr", "-R", "+i", str(out)], capture_output=True).returncode == 0)

    GridRun.on_finish = then_read_only  # type: ignore[method-assign]
    try:
        code, text = _invoke(out)
    finally:
        GridRun.on_finish = finish  # type: ignore[method-assign]
        subprocess.run(["chattr", "-R", "-i", str(out)], capture_output=True)
    if not made or not made[0]:
        return -1, "cannot make a folder immutable here (chattr needs root on ext4/xfs)"
    first, first_code = f"exit {code}: {_lines(text, 'error:')}", code
    code, text = _invoke(out)
    return code if first_code == 3 else -1, f"{first} || re-run: {_lines(text, 'to run', 'finished')}"


def _signalled(out: Path, phase: str, signals: list[int], epochs: int, wait: Callable[[Path, list[str]], bool],
               *extra: str) -> tuple[int, str]:  # fmt: skip
    """Start ``diffbench run`` through the wrapper, send ``signals`` once ``wait`` says so; (exit, its last lines)."""
    import threading

    shutil.rmtree(out, ignore_errors=True)
    cmd = [sys.executable, "-c", PAUSE_WRAPPER, "run", "--output", str(out), "--epochs", str(epochs), *GRID, *extra]
    proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PAUSE_AT": phase}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(line.rstrip() for line in proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 600
    while not wait(out, lines) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    for i, signum in enumerate(signals):
        if i:
            time.sleep(0.05)
        proc.send_signal(signum)
    code = proc.wait(timeout=300)
    reader.join(timeout=10)
    text = " ".join(" ".join(lines).split())
    tail = "traceback!" if "Traceback" in text else _lines(text, "interrupted")
    code2, again = _invoke(out, epochs=epochs)
    return code, f"exit {code}: {tail} || re-run exit {code2}: {_lines(again, 'to run')}"


def _paused(_out: Path, lines: list[str]) -> bool:
    return any("PAUSED" in line for line in lines)


def _an_epoch(out: Path, _lines: list[str]) -> bool:
    return any("epoch 1/" in p.read_text() for p in out.glob("jobs/*/train.log"))


def sigterm_while_the_store_opens(out: Path) -> tuple[int, str]:
    return _signalled(out, "finaliser", [signal.SIGTERM], 2, _paused)


def ctrl_c_twice_during_training(out: Path) -> tuple[int, str]:
    return _signalled(out, "", [signal.SIGINT, signal.SIGINT], 3, _an_epoch)


def impossible_cpus(out: Path) -> tuple[int, str]:
    started = time.monotonic()
    code, text = _invoke(out / "new", "--executor", "ray", "--cpus-per-job", "99")
    return code, f"{_lines(text, 'error:')} (in {time.monotonic() - started:.0f} s, Ray not started)"


#: ``(fault, what it does, the exit code the re-run must end with)``.
FAULTS: list[tuple[str, Callable[[Path], tuple[int, str]], int]] = [
    ("garbled result.json of a finished job", garbled_result, 0),
    ("deleted student.pt of a finished student", deleted_student, 0),
    ("deleted OUTPUT/jobs/", deleted_jobs, 0),
    ("deleted OUTPUT/jobs/ and OUTPUT/mlartifacts/", deleted_jobs_and_artifacts, 0),
    ("output made read-only mid-grid", read_only_mid_grid, 0),
    ("SIGTERM while the MLflow store opens (in a finaliser)", sigterm_while_the_store_opens, 143),
    ("Ctrl-C twice during training", ctrl_c_twice_during_training, 130),
    ("--cpus-per-job 99 on a local Ray instance", impossible_cpus, 2),
]


def _point_store_at(out: Path) -> None:
    """A copied output's store still names the original folder (artifacts, output tag): point it at the copy."""
    import sqlite3

    with sqlite3.connect(out / "mlflow.db") as db:
        (loc,) = db.execute("select artifact_location from experiments where name = 'diffbench'").fetchone()
        old = loc[: -len("/mlartifacts")]
        db.execute("update experiments set artifact_location = replace(artifact_location, ?, ?)", (old, out.as_uri()))
        db.execute("update runs set artifact_uri = replace(artifact_uri, ?, ?)", (old, out.as_uri()))
        db.execute("update tags set value = ? where key = 'diffbench.output'", (str(out),))


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="fault matrix: the fault, then the same command again")
    for col in ("fault", "what the re-run printed", "end state", "ok"):
        table.add_column(col, overflow="fold")
    passed = 0
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        code, text = _invoke(base)
        if code != 0:
            console.print(f"the base grid failed: {text[-500:]}")
            return 1
        for name, fault, expected in FAULTS:
            out = Path(tmp) / name.replace(" ", "_").replace("/", "")
            shutil.copytree(base, out)
            _point_store_at(out)
            code, printed = fault(out)
            state = end_state(out) if expected != 2 else "nothing started"
            ok = (code == expected) and (expected == 2 or whole(state))
            passed += ok
            table.add_row(name, printed, state, "yes" if ok else "[red]NO[/]")
            console.print(json.dumps({"fault": name, "exit": code, "printed": printed, "end": state}), soft_wrap=True)
    console.print(table)
    console.print(f"faults repaired: {passed}/{len(FAULTS)}")
    return 0 if passed == len(FAULTS) else 1


if __name__ == "__main__":
    sys.exit(main())

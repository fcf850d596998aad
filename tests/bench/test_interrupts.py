"""Interrupts at any moment end a grid in one line with 130 (Ctrl-C) or 143 (SIGTERM), the lock released and no run
left RUNNING; a second Ctrl-C ends it at once, without a traceback; the same command then resumes.

Each case starts ``diffbench run`` in a subprocess through a small wrapper that pauses it at one start-up phase
(:data:`bench.perf.fault_matrix.PAUSE_WRAPPER` patches the phase's function; nothing in diffbench knows about it),
sends the signal there, and checks
what a user sees and what the output folder holds. Grids are tiny (digits, resnet8, 2 steps per epoch).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from bench.cli.app import app
from bench.perf.fault_matrix import PAUSE_WRAPPER

REPO = Path(__file__).resolve().parents[2]
GRID = ["--dataset", "digits", "--pairs", "resnet8:resnet8", "--methods", "kd", "--batch-size", "16",
        "--max-steps", "2"]  # fmt: skip

class Driver:
    """A ``diffbench run`` subprocess whose output lines are collected as they come."""

    def __init__(self, out: Path, *args: str, pause_at: str = "", epochs: int = 30) -> None:
        cmd = [sys.executable, "-c", PAUSE_WRAPPER, "run", "--output", str(out), "--epochs", str(epochs), *GRID, *args]
        env = {**os.environ, "PAUSE_AT": pause_at, "RAY_DEDUP_LOGS": "0"}
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)  # fmt: skip
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, check, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.proc.kill()
        pytest.fail("never got there:\n" + self.text())

    def saw(self, needle: str) -> bool:
        return any(needle in line for line in self.lines)

    def finish(self, timeout: float = 180) -> tuple[int, str]:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail("did not end:\n" + self.text())
        self._reader.join(timeout=10)
        return code, self.text()

    def text(self) -> str:
        return "\n".join(self.lines)


def _trained_an_epoch(out: Path) -> bool:
    return any("epoch 1/" in p.read_text() for p in out.glob("jobs/*/train.log"))


def _assert_clean_end(out: Path, code: int, text: str, expected: int) -> None:
    assert code == expected, text
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert "interrupted" in text, text
    assert not (out / ".diffbench.lock").exists(), text
    if (out / "mlflow.db").exists():
        client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
        exp = client.get_experiment_by_name("diffbench")
        runs = client.search_runs([exp.experiment_id], max_results=1000) if exp else []
        assert all(r.info.status != "RUNNING" for r in runs), [(r.info.run_name, r.info.status) for r in runs]


def _resumes(out: Path, epochs: int) -> None:
    """The same command, in-process, finishes every job exactly once."""
    result = CliRunner().invoke(app, ["run", "--output", str(out), "--epochs", str(epochs), *GRID,
                                      "--executor", "local"])  # fmt: skip
    assert result.exit_code == 0, result.output
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("diffbench")
    live = [r for r in client.search_runs([exp.experiment_id], "tags.`diffbench.kind` = 'job'")
            if r.data.tags.get("diffbench.superseded") != "true"]  # fmt: skip
    hashes = [r.data.tags["job_hash"] for r in live]
    assert len(hashes) == len(set(hashes)) == 3 and all(r.info.status == "FINISHED" for r in live)


# ------------------------------------------------------------------------------------------------
# The handlers' rules, in-process
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def handlers_back():
    """An interrupted command leaves its handlers installed (for Ray's shutdown): give the test runner its own back."""
    old = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.unraisablehook
    yield
    signal.signal(signal.SIGINT, old[0])
    signal.signal(signal.SIGTERM, old[1])
    sys.unraisablehook = old[2]


def test_the_second_interrupt_waits_for_the_cleanup_then_exits(monkeypatch, handlers_back):
    from bench.execute import signals

    exits = []
    monkeypatch.setattr(signals, "exit_now", lambda: exits.append(True))
    with signals.interrupts():
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
        with signals.cleanup():
            os.kill(os.getpid(), signal.SIGINT)  # during the cleanup: noted, not raised
            time.sleep(0.1)
            assert not exits
        assert exits == [True]  # right after it
        os.kill(os.getpid(), signal.SIGINT)  # after the cleanup: at once
        time.sleep(0.1)
        assert exits == [True, True]
    assert signals.exit_code(KeyboardInterrupt()) == 130


def test_a_swallowed_sigterm_is_raised_at_the_next_step(capfd, handlers_back):
    from bench.execute import signals

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)

    with signals.interrupts():
        Finalised()  # the handler's exception is "ignored" inside __del__
        with pytest.raises(signals.Terminated):
            signals.raise_pending()
        signals.acknowledge()
    assert "Exception ignored" not in capfd.readouterr().err


# ------------------------------------------------------------------------------------------------
# Start-up phases, in-process executor: each signal at each phase
# ------------------------------------------------------------------------------------------------
PHASES = [("preflight", signal.SIGTERM), ("store", signal.SIGINT), ("finaliser", signal.SIGTERM),
          ("plan", signal.SIGTERM), ("plan", signal.SIGINT)]  # fmt: skip


@pytest.mark.parametrize(("phase", "signum"), PHASES, ids=[f"{p}-{s.name}" for p, s in PHASES])
def test_an_interrupt_at_each_start_up_phase_ends_in_one_line(tmp_path, phase, signum):
    out = tmp_path / "out"
    driver = Driver(out, "--executor", "local", pause_at=phase, epochs=1)
    driver.wait_for(lambda: driver.saw("PAUSED"))
    driver.proc.send_signal(signum)
    code, text = driver.finish()
    _assert_clean_end(out, code, text, 143 if signum == signal.SIGTERM else 130)
    assert not list(out.glob("jobs/*/checkpoint.pt")), "a job trained after the signal"
    if phase == "finaliser":
        _resumes(out, epochs=1)


def test_ctrl_c_twice_during_training_ends_at_once_and_the_grid_resumes(tmp_path):
    out = tmp_path / "out"
    driver = Driver(out, "--executor", "local", epochs=3)
    driver.wait_for(lambda: _trained_an_epoch(out))
    driver.proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    driver.proc.send_signal(signal.SIGINT)
    code, text = driver.finish()
    _assert_clean_end(out, code, text, 130)
    _resumes(out, epochs=3)


# ------------------------------------------------------------------------------------------------
# Ray: SIGTERM inside ray.init, Ctrl-C twice (the second during Ray's shutdown)
# ------------------------------------------------------------------------------------------------
def test_sigterm_while_ray_starts_is_143_with_one_line(tmp_path):
    out = tmp_path / "out"
    driver = Driver(out, "--cpus-per-job", "1", pause_at="ray.init", epochs=1)
    driver.wait_for(lambda: driver.saw("PAUSED"), timeout=400)
    driver.proc.send_signal(signal.SIGTERM)
    code, text = driver.finish()
    _assert_clean_end(out, code, text, 143)


def test_ctrl_c_twice_on_ray_skips_its_shutdown_in_one_line_and_130(tmp_path):
    out = tmp_path / "out"
    driver = Driver(out, "--cpus-per-job", "1", pause_at="ray.shutdown", epochs=3)
    driver.wait_for(lambda: _trained_an_epoch(out), timeout=400)
    driver.proc.send_signal(signal.SIGINT)
    driver.wait_for(lambda: driver.saw("PAUSED"), timeout=120)  # Ray is shutting down now (slowly)
    driver.proc.send_signal(signal.SIGINT)
    code, text = driver.finish(timeout=60)
    _assert_clean_end(out, code, text, 130)
    assert "interrupted again" in text, text
    _resumes(out, epochs=3)

"""``diffbench ui``'s server start: its output goes to a log file, the link waits for the first HTTP 200, and a
server that dies or never answers is one error line. Fake servers only (the real MLflow UI takes ~40 s)."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time

import pytest

from bench.tracking import ui_server
from methods.errors import UserError


class _Answers:
    """An http.server in a thread that answers 503 to its first ``failures`` requests, then 200."""

    def __init__(self, failures: int) -> None:
        self.requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.requests += 1
                self.send_response(503 if outer.requests <= failures else 200)
                self.end_headers()

            def log_message(self, *_a: object) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def test_waits_through_error_answers_for_the_first_200(sleeper, tmp_path, monkeypatch):
    monkeypatch.setattr(ui_server, "POLL_S", 0.01)
    fake = _Answers(failures=3)
    ticks = []
    try:
        ui_server.wait_until_up(fake.url, sleeper, tmp_path / "ui.log", timeout_s=60, tick=ticks.append)
    finally:
        fake.close()
    assert fake.requests == 4  # three 503s, then the 200 it returned on
    assert len(ticks) == 3  # the status line moved while it waited


def test_a_server_that_exits_is_one_error_naming_its_log(tmp_path, monkeypatch):
    monkeypatch.setattr(ui_server, "POLL_S", 0.01)
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(UserError, match=r"exited \(code 3\) before answering; see .*ui\.log"):
        ui_server.wait_until_up("http://127.0.0.1:9/", proc, tmp_path / "ui.log", timeout_s=60)


def test_a_server_that_never_answers_times_out(sleeper, tmp_path, monkeypatch):
    monkeypatch.setattr(ui_server, "POLL_S", 0.01)
    fake = _Answers(failures=10**6)
    try:
        with pytest.raises(UserError, match="did not answer .* within 0 s"):
            ui_server.wait_until_up(fake.url, sleeper, tmp_path / "ui.log", timeout_s=0)
    finally:
        fake.close()


_NOISY_SERVER = """
import http.server, sys, warnings
warnings.warn("a deprecation warning", DeprecationWarning, stacklevel=1)
print("INFO: an access log line", flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
s = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
s.handle_request(); s.handle_request()  # the poll's request and the test's, then exit 0
"""


def test_serve_logs_the_server_output_and_calls_ready_once_it_answers(tmp_path, capfd, monkeypatch):
    import socket
    import urllib.request

    monkeypatch.setattr(ui_server, "POLL_S", 0.05)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = ui_server.poll_url("0.0.0.0", port)
    assert url == f"http://127.0.0.1:{port}/"
    log = ui_server.log_path(tmp_path / "out")
    events = []

    def ready(waited: float) -> None:
        events.append(("ready", waited))
        urllib.request.urlopen(url, timeout=5).close()  # a page load; the fake server exits after it

    cmd = [sys.executable, "-W", "always", "-c", _NOISY_SERVER, str(port)]
    code = ui_server.serve(cmd, url, log, ready, prepare=lambda: events.append(("prepare",)))
    assert code == 0
    assert [e[0] for e in events] == ["prepare", "ready"]
    text = log.read_text()
    assert "a deprecation warning" in text and "an access log line" in text
    captured = capfd.readouterr()
    assert "deprecation" not in captured.out + captured.err and "access log" not in captured.out + captured.err


def test_ui_prints_the_log_and_the_link_after_the_server_answers(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import bench.tracking.ui_server
    from bench.cli.app import app

    (tmp_path / "mlflow.db").write_bytes(b"")
    order = []

    def fake_serve(cmd, url, log, ready, prepare=None, **_kw):
        order.append("started")
        ready(2.0)
        return 0

    monkeypatch.setattr(bench.tracking.ui_server, "serve", fake_serve)
    result = CliRunner().invoke(app, ["ui", "--output", str(tmp_path), "--port", "5123"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"MLflow UI server log: {tmp_path / 'logs' / 'mlflow-ui.log'}"
    assert "up after 2 s" in lines[1] and lines[2] == "runs: http://127.0.0.1:5123"


def test_ui_help_describes_the_log_and_the_grouping():
    from typer.testing import CliRunner

    from bench.cli.app import app

    text = " ".join(CliRunner().invoke(app, ["ui", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "expanded" not in text
    assert "mlflow-ui.log" in text and "grouped by setting" in text


def test_sigterm_while_the_server_starts_stops_it(tmp_path, monkeypatch):
    """A stop that arrives while the link is prepared (code that catches Exception) still stops the server."""
    import os
    import signal

    def prepare() -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        try:
            time.sleep(5)
        except Exception:  # noqa: BLE001 - what runs_link's store access does
            pass

    cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
    code = ui_server.serve(cmd, "http://127.0.0.1:9/", tmp_path / "ui.log", lambda _w: None, prepare=prepare,
                           timeout_s=5)  # fmt: skip
    assert code == 143

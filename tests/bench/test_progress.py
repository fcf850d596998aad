"""What a person sees of a running grid, driven by a fake event stream and a fake clock: one line per event, a
step column that moves, ETAs that never say 0:00 for running work, and one clock (the process's) for elapsed."""

from __future__ import annotations

import io
from unittest.mock import MagicMock

import pytest
from rich.console import Console

import bench.clock
from bench.execute import events as ev
from bench.execute.progress import clock, eta_text
from bench.execute.state import GridRun


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def fake_clock(monkeypatch):
    fake = FakeClock(0.0)
    monkeypatch.setattr(bench.clock, "now", fake)
    monkeypatch.setattr(bench.clock, "PROCESS_START", -7.0)  # the process started 7 s before the grid
    return fake


def _grid(tmp_path, tty: bool) -> tuple[GridRun, io.StringIO]:
    from bench.jobs.grid import GridSpec, expand, parse_pair

    spec = GridSpec(task="classification").merged(dataset="digits", pairs=(parse_pair("resnet8:resnet8"),),
                                                  methods=("kd",), seeds=1, recipe={"epochs": 3})  # fmt: skip
    jobs = expand(spec, device="cpu")
    tracker = MagicMock()
    tracker.job_runs.return_value = {}
    tracker.logged_epochs.return_value = set()
    tracker.start_job.return_value = "run"
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=tty, color_system=None)
    return GridRun(jobs, tmp_path, tracker, "cpu", console), out


def _view(grid: GridRun) -> str:
    buf = io.StringIO()
    Console(file=buf, width=120, color_system=None).print(grid.view())
    return buf.getvalue()


def _row(view: str, label: str) -> list[str]:
    (line,) = [x for x in view.splitlines() if x.startswith(label)]
    return line[len(label) :].split()


def test_eta_text_is_never_zero_for_running_work():
    assert eta_text(None) == eta_text(0) == eta_text(-30) == "—"  # unknown, or overdue
    assert eta_text(0.4) == eta_text(59) == "<1 min"
    assert eta_text(125) == "2:05"


def test_a_job_s_events_move_the_step_column_and_its_eta(tmp_path, fake_clock):
    grid, out = _grid(tmp_path, tty=True)
    teacher = grid.jobs[0]
    assert teacher.recipe["epochs"] == 3
    fake_clock.t = 10.0
    grid.on_start(teacher)
    grid.handle(teacher, ev.Begin(0))
    row = _row(_view(grid), teacher.label)
    assert row[:4] == [teacher.job_hash, "1/3", "—", "0:00"] and row[4] == "—"  # nothing measured yet
    fake_clock.t = 30.0  # 20 s into epoch 1, 10 of its 100 steps done: 200 s an epoch, 600 s in all, 580 s left
    grid.handle(teacher, ev.Step(1, 10, 100, 2.3))
    row = _row(_view(grid), teacher.label)
    assert row[:5] == [teacher.job_hash, "1/3", "10/100", "0:20", "9:40"]
    fake_clock.t = 40.0
    grid.handle(teacher, ev.Step(1, 20, 100, 2.2))
    assert _row(_view(grid), teacher.label)[2] == "20/100"  # the step column moves
    fake_clock.t = 110.0  # epoch 1 took 100 s: 2 epochs left = 200 s
    grid.handle(teacher, ev.Epoch(1, {"val/top1": 12.5}))
    row = _row(_view(grid), teacher.label)
    assert row[:7] == [teacher.job_hash, "2/3", "—", "top1", "12.50", "1:40", "3:20"]
    fake_clock.t = 400.0  # past its estimate (2 epochs of 100 s ended at 310 s): overdue, not 0:00
    row = _row(_view(grid), teacher.label)
    assert row[5:7] == ["6:30", "—"]


def test_one_line_per_event_and_the_process_clock(tmp_path, fake_clock):
    grid, out = _grid(tmp_path, tty=True)
    for i, job in enumerate(grid.jobs):
        fake_clock.t = 10.0 + 20 * i
        grid.on_start(job)
        grid.handle(job, ev.Begin(0))
        for epoch in (1, 2, 3):
            fake_clock.t += 5
            grid.handle(job, ev.Epoch(epoch, {"val/top1": 50.0}))
        grid.handle(job, ev.Finished({"best_top1": 50.0}))
        view = _view(grid)
        assert "✓" not in view and job.label not in view  # finished jobs are the event lines, not table rows
    lines = out.getvalue().splitlines()
    for job in grid.jobs:
        assert sum(job.label in x for x in lines) == 2  # its start line and its done line, nothing else
        assert sum(x.startswith("done") and job.label in x for x in lines) == 1
    # The last job ended at 10 + 20*2 + 15 = 65 s on the clock; the process started at -7 s: 72 s of wall time.
    assert lines[-1].endswith(f"elapsed {clock(72)}")  # nothing left to run: no ETA
    assert grid.progress.elapsed() == 72
    assert f"elapsed {clock(72)}" in _view(grid) and "ETA" not in _view(grid)
    assert f"in {clock(15)};" in lines[-1]  # the job's own time, from the same clock


def test_piped_output_has_epoch_lines_without_zero_etas(tmp_path, fake_clock):
    grid, out = _grid(tmp_path, tty=False)
    job = grid.jobs[0]
    grid.on_start(job)
    grid.handle(job, ev.Begin(0))
    for epoch in (1, 2, 3):
        fake_clock.t += 100
        grid.handle(job, ev.Epoch(epoch, {"val/top1": 50.0}))
    epochs = [x for x in out.getvalue().splitlines() if x.startswith("epoch")]
    assert [x.rsplit("ETA ", 1)[1] for x in epochs] == ["3:20)", "1:40)", "—)"]  # the last: writing its results


def test_steps_from_a_ray_trial_are_throttled_and_survive_the_report():
    fake = FakeClock(0.0)
    sent = []
    on_step = ev.throttled_steps(sent.append, every_s=2.0, now=fake)
    for i in range(1, 11):  # a step every 0.5 s
        on_step(1, i, 10, 0.5)
        fake.t += 0.5
    assert [s.step for s in sent] == [1, 5, 9]
    assert ev.from_report(ev.to_report(sent[1])) == ev.Step(1, 5, 10, 0.5)

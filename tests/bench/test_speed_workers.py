"""``diffbench speed --workers``: data-parallel scaling rows (weak scaling), efficiency, bad input.

Nothing here asserts a time: the figures are measured by the command, the tests check its behaviour. One
real run (1 and 2 gloo workers on CPU, tiny models and batches); the rest needs no processes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from bench.cli.app import app
from bench.speed import workers as sw
from bench.speed.__main__ import main as speed_main
from methods.base import UserError

runner = CliRunner()
TINY = ["speed", "--task", "classification", "--teacher", "resnet20", "--student", "resnet8", "--methods", "kd",
        "--batch-size", "4", "--warmup", "1", "--steps", "2", "--device", "cpu"]  # fmt: skip


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_parse_workers():
    assert sw.parse_workers("4,1, 2") == [1, 2, 4]
    assert sw.parse_workers(["2", "1,2"]) == [1, 2]
    for bad, needle in (("0", ">= 1"), ("-2", ">= 1"), ("two", "not an integer"), ("1.5", "not an integer"),
                        ("", "comma list")):  # fmt: skip
        with pytest.raises(UserError, match=needle):
            sw.parse_workers(bad)


def test_threads_split_the_cores():
    assert [sw.threads_for(n, 8) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]


def test_efficiency_is_relative_to_one_worker_of_the_same_method():
    times = {("kd", 1): [0.10, 0.10, 0.10], ("kd", 2): [0.125] * 3, ("kd", 4): [0.2] * 3, ("dkd", 2): [0.1] * 3}
    rows = sw.scaling_rows(times, 8, {1: 4, 2: 2, 4: 1})
    by = {(r.method, r.workers): r for r in rows}
    assert [(r.method, r.workers) for r in rows] == [("kd", 1), ("kd", 2), ("kd", 4), ("dkd", 2)]
    assert by["kd", 1].efficiency_pct == pytest.approx(100.0)
    assert by["kd", 2].images_per_s == pytest.approx(2 * 8 / 0.125)
    assert by["kd", 2].efficiency_pct == pytest.approx(80.0)  # 128 images/s vs 2 × 80
    assert by["kd", 4].efficiency_pct == pytest.approx(50.0)
    assert by["kd", 4].global_batch == 32 and by["kd", 4].threads_per_worker == 1
    assert by["dkd", 2].efficiency_pct is None  # no 1-worker row to compare with
    table = sw.markdown_table(rows)
    assert "efficiency %" in table and "| kd | 2 | 8 | 16 | 125.0 |" in table and "| 80.0 |" in table


def test_one_and_two_gloo_workers_give_rows_with_efficiency():
    result = _invoke(*TINY, "--workers", "1,2", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    for key in ("task", "teacher", "student", "scaling", "per_worker_batch", "steps", "workers", "backend",
                "threads_per_worker", "variant", "device", "device_name", "rows"):  # fmt: skip
        assert key in payload, key
    assert payload["scaling"] == "weak" and payload["backend"] == "gloo" and payload["workers"] == [1, 2]
    rows = payload["rows"]
    assert [(r["method"], r["workers"]) for r in rows] == [("kd", 1), ("kd", 2)]
    for r in rows:
        assert set(r) == set(sw.WorkerRow.__dataclass_fields__)
        assert r["batch_per_worker"] == 4 and r["global_batch"] == 4 * r["workers"]
        assert r["images_per_s"] == pytest.approx(4 * r["workers"] / (r["ms_per_step"] / 1e3))
        assert r["efficiency_pct"] is not None and r["efficiency_pct"] > 0
        assert r["threads_per_worker"] == sw.threads_for(r["workers"])
    assert rows[0]["efficiency_pct"] == pytest.approx(100.0)
    assert rows[1]["efficiency_pct"] == pytest.approx(100 * rows[1]["images_per_s"] / (2 * rows[0]["images_per_s"]))


def test_the_table_says_weak_scaling_and_times_one_worker_too(monkeypatch):
    seen = []

    def fake_spawn(world, cfg):
        seen.append((world, cfg["threads"], cfg["batch_size"]))
        return {m: [0.01 * world, 0.01 * world] for m in cfg["methods"]}

    monkeypatch.setattr(sw, "_spawn", fake_spawn)
    result = _invoke(*TINY, "--workers", "2")
    assert result.exit_code == 0, result.output
    assert [w for w, _, _ in seen] == [1, 2]  # efficiency needs one worker
    assert all(b == 4 for _, _, b in seen)
    out = " ".join(result.output.split())  # the table wraps at the runner's 80 columns
    assert "weak scaling: per-worker batch 4, global batch N×4 (4, 8)" in out
    assert "CPU threads per worker" in out
    lines = [line for line in result.output.splitlines() if line.lstrip("│ ").startswith("kd")]
    assert len(lines) == 2
    assert "100.0" in lines[0] and "50.0" in lines[1]  # twice the step time with twice the images: half the ideal


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--workers", "0"], "--workers"),
        (["--workers", "two"], "not an integer"),
        (["--workers", "1,2", "--precision", "fp32,bf16"], "one speed variant"),
        (["--workers", "1", "--peak-tflops", "1"], "--peak-tflops"),
    ],
)
def test_bad_workers_is_one_error_line(extra, needle):
    result = _invoke(*TINY, *extra)
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("error:") and needle in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_more_workers_than_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(sw, "_spawn", lambda *_a: pytest.fail("nothing may start"))
    result = _invoke(*TINY[:-1], "cuda", "--workers", "1,2")
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("error:") and "one GPU per worker" in result.output


@pytest.mark.parametrize("value", ["0", "x"])
def test_module_main_refuses_bad_workers(capsys, value):
    with pytest.raises(SystemExit) as exc:
        speed_main(["--teacher", "resnet20", "--student", "resnet8", "--methods", "kd", "--device", "cpu",
                    "--workers", value])  # fmt: skip
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --workers")


def test_speed_workers_imports_neither_ray_nor_mlflow():
    check = "bad = [m for m in ('ray', 'mlflow', 'typer', 'rich') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", f"import sys, bench.speed.workers; {check}"], check=True)

"""The CLI: bad input gives one line and exit 2; eval --json; list; speed's table."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from bench.cli.app import app
from tasks.classification.models import zoo

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert "Traceback" not in out
    assert out.startswith("error:"), out
    for n in needles:
        assert n in out, out


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (
            [
                "train",
                "--student",
                "resnet8",
                "--method",
                "kdd",
                "--teacher-checkpoint",
                __file__,
                "--teacher",
                "resnet8",
            ],
            ["unknown method 'kdd'", "dkd"],
        ),
        (["train", "--student", "resnet9"], ["unknown architecture 'resnet9'", "resnet8"]),
        (["train", "--student", "resnet8", "--dataset", "cifar10"], ["unknown dataset 'cifar10'", "cifar100"]),
        (["train", "--student", "resnet8", "--dataset", "cifar100", "--data-dir", "/nonexistent"], ["/nonexistent"]),
        (["train", "--student", "resnet8", "--method", "kd"], ["needs --teacher"]),
        (["train", "--student", "resnet8", "--task", "nope"], ["unknown task 'nope'"]),
        (["eval", "--arch", "resnet8", "--checkpoint", "/nonexistent.pth"], ["does not exist"]),
        (["list", "things"], ["unknown thing to list 'things'"]),
        (["train", "--student", "resnet8", "--epochs", "0"], ["epochs must be an integer >= 1"]),
        (["train", "--student", "resnet8", "--max-steps", "0"], ["max_steps must be an integer >= 1"]),
        (["train", "--student", "resnet8", "--lr", "-1"], ["lr > 0"]),
        (["train", "--student", "resnet8", "--batch-size", "0"], ["batch_size must be an integer >= 1"]),
        (
            [
                "train",
                "--student",
                "resnet8",
                "--method",
                "kd",
                "--teacher",
                "resnet8",
                "--teacher-checkpoint",
                __file__,
                "--set",
                "dkd.beta=6",
            ],
            ["--set names dkd"],
        ),
    ],
)
def test_bad_input_is_one_line(args, needles):
    _one_line_error(_invoke(*args), *needles)


def test_wrong_checkpoint_names_keys(tmp_path):
    path = tmp_path / "r20.pth"
    torch.save({"model": zoo.build("resnet20", 10).state_dict(), "epoch": 240}, path)
    _one_line_error(_invoke("eval", "--arch", "resnet8", "--checkpoint", str(path)), "does not fit", "unexpected")


def test_eval_json_reads_mdistiller_checkpoint(tmp_path):
    path = tmp_path / "ckpt_epoch_240.pth"
    model = zoo.build("resnet8", 10)
    torch.save({"model": model.state_dict(), "best_acc": 0.0, "epoch": 240}, path)
    args = ["--checkpoint", str(path), "--json", "--device", "cpu", "--dataset", "digits"]
    result = _invoke("eval", "--arch", "resnet8", *args)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    assert payload["images"] == 360
    assert 0.0 <= payload["top1"] <= payload["top5"] <= 100.0


def test_list_commands():
    out = _invoke("list", "methods").output
    for name in ("vanilla", "kd", "dkd", "fitnet", "diffkd"):
        assert name in out
    assert "resnet32x4" in _invoke("list", "archs", "--task", "classification").output
    assert "cifar100" in _invoke("list", "presets", "--task", "classification").output


def test_speed_json_times_every_method():
    result = _invoke(
        "speed",
        "--teacher",
        "resnet8",
        "--student",
        "resnet8",
        "--methods",
        "kd,diffkd",
        "--batch-size",
        "4",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--device",
        "cpu",
        "--json",
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    rows = {r["method"]: r for r in payload["rows"]}
    assert set(rows) == {"vanilla", "kd", "diffkd"}
    assert rows["vanilla"]["vs_vanilla"] == pytest.approx(1.0)
    for r in rows.values():
        assert r["ms_per_step"] > 0
        assert r["images_per_s"] == pytest.approx(4 / (r["ms_per_step"] / 1e3))


def test_ui_without_store_is_one_line(tmp_path):
    _one_line_error(_invoke("ui", "--output", str(tmp_path)), "no MLflow store")


def test_ui_serves_the_run_store_on_localhost(tmp_path, monkeypatch):
    import bench.tracking.ui_server

    (tmp_path / "mlflow.db").write_bytes(b"")
    calls = []
    monkeypatch.setattr(bench.tracking.ui_server, "serve", lambda cmd, *a, **kw: calls.append(cmd) or 0)
    result = _invoke("ui", "--output", str(tmp_path), "--port", "5123")
    assert result.exit_code == 0, result.output
    cmd = calls[0]
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--port") + 1] == "5123"


def test_help_and_version_do_not_import_torch():
    """--help answers before torch loads (it took 6-8 s when the CLI imported torch at the top)."""
    import subprocess
    import sys

    code = ("import sys; from typer.testing import CliRunner; from bench.cli.app import app; "
            "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
            "v = CliRunner().invoke(app, ['--version']); assert v.output.startswith('diffbench '), v.output; "
            "assert 'torch' not in sys.modules, 'torch imported'")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)
    assert _invoke("-h").exit_code == 0

"""The configuration a grid writes (OUTPUT/grids/<hash>.yaml) holds resolved values, and `diffbench run --config`
on it expands to the same jobs with the same hashes."""

from __future__ import annotations

import re

import pytest
import yaml
from typer.testing import CliRunner

import bench.execute.driver
from bench.cli.app import app

runner = CliRunner()


def _hashes(*args: str) -> list[str]:
    result = runner.invoke(app, ["run", *args, "--dry-run"])
    assert result.exit_code == 0, result.output
    return re.findall(r"\b[0-9a-f]{12}\b", result.output)


def _written_config(monkeypatch, tmp_path, *args: str) -> str:
    """The config text `diffbench run ARGS` hands the driver (which writes it to OUTPUT/grids/<hash>.yaml)."""
    seen = {}

    def fake_run_grid(jobs, options, console=None, config_text=None, command=None):
        seen["text"] = config_text
        return 0

    monkeypatch.setattr(bench.execute.driver, "run_grid", fake_run_grid)
    result = runner.invoke(app, ["run", *args, "--executor", "local", "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    return seen["text"]


@pytest.mark.parametrize(
    "args",
    [
        (),  # the default grid
        ("--methods", "kd", "--epochs", "2"),
        ("--preset", "smoke", "--methods", "kd", "--max-steps", "3"),  # one seed: seeds: [0]
        ("--seeds", "5,"),  # seed 5 alone
        ("--dataset", "digits", "--pairs", "resnet20:resnet8", "--methods", "kd,dkd", "--seeds", "2",
         "--set", "dkd.beta=6", "--set", "teacher.epochs=3"),
        ("--dataset", "digits", "--pairs", "resnet8:resnet8", "--methods", "vanilla", "--batch-size", "32",
         "--scale-lr", "linear"),
    ],
)  # fmt: skip
def test_the_written_config_expands_to_the_same_jobs(monkeypatch, tmp_path, args):
    text = _written_config(monkeypatch, tmp_path, *args)
    written = tmp_path / "grid.yaml"
    written.write_text(text)
    again = _hashes("--config", str(written), "--output", str(tmp_path / "elsewhere"))
    assert again == _hashes(*args) and again


def test_the_default_grid_s_config_spells_out_what_ran(monkeypatch, tmp_path):
    cfg = yaml.safe_load(_written_config(monkeypatch, tmp_path))
    assert cfg["task"] == "classification" and cfg["dataset"] == "colorshapes-few"
    assert cfg["pairs"] == ["resnet20:resnet8"]
    assert cfg["methods"] == ["kd", "dkd", "fitnet", "diffkd"]
    assert cfg["seeds"] == [0, 1, 2]
    assert cfg["preset"] == "default"
    # the teacher trains with its own recipe (12 epochs of 32 at lr 0.05), the students 24 of 16 at 0.025: no one value
    # to write (written, it would apply to the teacher too), so the recipe preset decides, as it did
    assert cfg["epochs"] is None and cfg["batch_size"] is None and cfg["lr"] is None
    assert len(cfg["resolved"]["jobs"]) == 16


def test_a_given_value_is_written_as_given(monkeypatch, tmp_path):
    cfg = yaml.safe_load(_written_config(monkeypatch, tmp_path, "--dataset", "digits", "--pairs", "resnet8:resnet8",
                                         "--methods", "kd", "--batch-size", "32", "--scale-lr", "linear"))  # fmt: skip
    assert cfg["batch_size"] == 32 and cfg["lr"] is None  # a scaled lr is not written: it would be scaled twice

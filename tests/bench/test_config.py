"""One configuration schema: experiment.yaml keys are the command's flags, flags win, one --set syntax,
and every grid writes its resolved configuration, which --config reads back into the same jobs."""

from __future__ import annotations

import re

import pytest
import yaml
from typer.main import get_command
from typer.testing import CliRunner

from bench.cli.app import app

runner = CliRunner()
BASE = ["--dataset", "digits", "--pairs", "resnet20:resnet8", "--dry-run"]


def _hashes(result) -> list[str]:
    assert result.exit_code == 0, result.output
    return re.findall(r"\b[0-9a-f]{12}\b", result.output)


def _run(*args: str):
    return runner.invoke(app, ["run", *args])


@pytest.mark.parametrize(
    ("flags", "yaml_text"),
    [
        (["--methods", "kd,dkd", "--seeds", "2"], "methods: [kd, dkd]\nseeds: 2\n"),
        (["--methods", "kd", "--seeds", "0,5"], "methods: kd\nseeds: '0,5'\n"),
        (["--methods", "kd", "--seeds", "0,5"], "methods: kd\nseeds: [0, 5]\n"),
        (["--methods", "kd", "--epochs", "3", "--batch-size", "32", "--lr", "0.1"],
         "methods: [kd]\nepochs: 3\nbatch_size: 32\nlr: 0.1\n"),
        (["--methods", "dkd", "--set", "dkd.beta=6", "--set", "recipe.weight_decay=0.0001"],
         "methods: [dkd]\nset: {dkd: {beta: 6}, recipe: {weight_decay: 0.0001}}\n"),
        (["--methods", "kd", "--set", "teacher.epochs=20"], "methods: [kd]\nset: {teacher: {epochs: 20}}\n"),
        (["--methods", "kd", "--max-steps", "4", "--recipe", "smoke"], "methods: [kd]\nmax_steps: 4\nrecipe: smoke\n"),
        (["--methods", "kd", "--precision", "bf16", "--channels-last", "on"],
         "methods: [kd]\nprecision: bf16\nchannels_last: 'on'\n"),
    ],
)
def test_a_yaml_key_means_exactly_its_flag(tmp_path, flags, yaml_text):
    cfg = tmp_path / "experiment.yaml"
    cfg.write_text(yaml_text)
    assert _hashes(_run(*BASE, *flags)) == _hashes(_run(*BASE, "--config", str(cfg)))


def test_every_run_option_is_a_yaml_key(tmp_path):
    """The schema is generated from the command: no flag the file cannot hold, no key without a flag."""
    from bench.cli.config import _options

    command = get_command(app).commands["run"]
    keys = set(_options(command))
    flags = {max((o for o in p.opts if o.startswith("--")), key=len)[2:].replace("-", "_")
             for p in command.params if any(o.startswith("--") for o in getattr(p, "opts", []))}
    assert keys == flags - {"config", "help"}
    for key in ("max_steps", "executor", "preset", "recipe", "set", "teacher_checkpoint", "workers_per_job"):
        assert key in keys


def test_flags_win_over_the_file(tmp_path):
    cfg = tmp_path / "experiment.yaml"
    cfg.write_text("methods: [kd]\nepochs: 7\n")
    assert _hashes(_run(*BASE, "--config", str(cfg), "--epochs", "3")) == _hashes(_run(*BASE, "--methods", "kd",
                                                                                       "--epochs", "3"))


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("task: [unclosed", "not valid YAML at line 1"),
        ("- a\n- b\n", "expected a mapping"),
        ("tsk: classification\n", "unknown key(s) 'tsk'; did you mean 'task'?"),
        ("teacher_checkpoints: {a: b}\n", "now teacher_checkpoint"),
        ("epochs: many\n", "epochs"),
        ("pairs: [resnet20]\n", "expected teacher:student"),
        ("set: {dkd: 3}\n", "set.dkd must be a mapping"),
    ],
)
def test_bad_config_files_are_one_line(tmp_path, text, needle):
    cfg = tmp_path / "experiment.yaml"
    cfg.write_text(text)
    result = _run("--config", str(cfg), "--dry-run")
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("error:") and needle in result.output, result.output


def test_set_has_one_syntax():
    result = _run(*BASE, "--methods", "kd", "--set", "temperature=2")
    assert result.exit_code == 2 and "SCOPE.NAME=VALUE" in result.output
    result = runner.invoke(app, ["train", "--student", "resnet8", "--set", "beta=6", "--dataset", "digits"])
    assert result.exit_code == 2 and "SCOPE.NAME=VALUE" in result.output


def test_a_grid_writes_its_resolved_config_and_it_reads_back(tmp_path):
    out = tmp_path / "out"
    args = ["--dataset", "digits", "--pairs", "resnet8:resnet8", "--methods", "kd", "--epochs", "1", "--max-steps",
            "1", "--batch-size", "16", "--executor", "local", "--output", str(out)]
    result = _run(*args)
    assert result.exit_code == 0, result.output
    (written,) = (out / "grids").glob("*.yaml")
    data = yaml.safe_load(written.read_text())
    assert data["epochs"] == 1 and data["methods"] == ["kd"] and len(data["resolved"]["jobs"]) == 3
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("diffbench").experiment_id
    (grid,) = client.search_runs([exp], "tags.`diffbench.kind` = 'grid'")
    assert "config.yaml" in [a.path for a in client.list_artifacts(grid.info.run_id)]
    assert grid.info.run_name.startswith("run --dataset digits")  # named from its command
    again = _run("--config", str(written))  # the same grid: nothing to do
    assert again.exit_code == 0 and "nothing to do" in again.output, again.output


def test_the_mlflow_ui_opens_on_the_runs_in_diffbenchs_view(tmp_path, monkeypatch):
    import json

    import bench.tracking.ui_server
    from bench.tracking.ui_view import KIND, KIND_TAG, VIEW_TAG

    out = tmp_path / "out"
    args = ["--dataset", "digits", "--pairs", "resnet8:resnet8", "--methods", "kd", "--epochs", "1", "--max-steps",
            "1", "--batch-size", "16", "--executor", "local", "--output", str(out)]
    assert _run(*args).exit_code == 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("diffbench")
    assert exp.tags[KIND_TAG] == KIND  # the model-training layout, not the GenAI overview
    view = json.loads(exp.tags[VIEW_TAG])
    assert "metrics.`best_top1`" in view["selectedColumns"] and "tags.`method`" in view["selectedColumns"]
    assert [k["groupByData"] for k in view["groupBy"]["groupByKeys"]] == ["setting"]  # one short group label
    jobs = client.search_runs([exp.experiment_id], "tags.`diffbench.kind` = 'job'")
    assert sorted(r.data.tags["setting"] for r in jobs) == ["kd resnet8→resnet8 · digits", "teacher resnet8 · digits",
                                                             "vanilla resnet8 · digits"]  # fmt: skip
    job = jobs[0]
    assert job.inputs.dataset_inputs[0].dataset.name == "digits"  # the Dataset column
    def fake_serve(cmd, url, log, ready, prepare=None, **_kw):  # a server that answers at once
        prepare()
        ready(0.0)
        return 0

    monkeypatch.setattr(bench.tracking.ui_server, "serve", fake_serve)
    result = runner.invoke(app, ["ui", "--output", str(out), "--port", "5123"])
    assert result.exit_code == 0, result.output
    link = f"http://127.0.0.1:5123/#/experiments/{exp.experiment_id}/runs?viewStateShareKey=diffbench"
    assert link in " ".join(result.output.split()).replace(" ", "") or link in result.output.replace("\n", "")


def test_piped_output_has_a_line_per_job_event(tmp_path):
    """Non-TTY (a log file, a scheduler): every job's start (with its train.log), epochs, end, and the grid's ETA."""
    out = tmp_path / "out"
    result = _run("--dataset", "digits", "--pairs", "resnet8:resnet8", "--methods", "kd", "--epochs", "2",
                  "--max-steps", "1", "--batch-size", "16", "--executor", "local", "--output", str(out))  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    starts = [x for x in lines if x.startswith("start ")]
    assert len(starts) == 3 and all("train.log" in x for x in starts)
    epochs = [x for x in lines if x.startswith("epoch ")]
    assert len(epochs) == 6 and all("ETA" in x and "top1" in x for x in epochs)
    dones = [x for x in lines if x.startswith("done ")]
    assert len(dones) == 3 and "3/3 done" in dones[-1]
    again = _run("--dataset", "digits", "--pairs", "resnet8:resnet8", "--methods", "kd", "--epochs", "2",
                 "--max-steps", "1", "--batch-size", "16", "--executor", "local", "--output", str(out))  # fmt: skip
    assert again.output.count("nothing to do") == 1

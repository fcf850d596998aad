"""The command line's one surface: -o/--output is the results folder everywhere and a written file is --out, every
misspelt name gets a "did you mean", every error is one ``error:`` line with exit 2, presets say their kind, and a
smoke grid is small whatever the data set. No training: dry runs and refusals only."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from tasks.spec import task_names, task_spec

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def _one_line_error(result, *needles: str) -> str:
    out = result.output.strip()
    assert result.exit_code == 2, out
    assert "Traceback" not in out and out.startswith("error:") and len(out.splitlines()) == 1, out
    for needle in needles:
        assert needle in out, out
    return out


# -- one meaning per flag -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["report", "-o", "report.html"], ["report: -o/--output is the results folder", "--out report.html"]),
        (["report", "--output", "leaderboard.md"], ["write the report with --out leaderboard.md"]),
        (["export", "0123456789ab", "-o", "student.onnx"], ["export: -o/--output", "--out student.onnx"]),
    ],
)
def test_old_file_spelling_of_output_names_out(args, needles):
    _one_line_error(_invoke(*args), *needles)


def test_results_folder_named_like_a_file_is_still_a_folder(tmp_path):
    """Only a value that is no folder is the old spelling: an existing results folder ``x.md`` is read."""
    folder = tmp_path / "x.md"
    folder.mkdir()
    out = _one_line_error(_invoke("report", "-o", str(folder)))
    assert "results folder since" not in out and "no MLflow store" in out


@pytest.mark.parametrize("command", ["run", "train", "report", "export", "ui"])
def test_o_is_the_results_folder_in_every_command(command):
    help_text = _invoke(command, "--help").output
    line = next(x for x in help_text.splitlines() if re.search(r"--output\s", x))
    assert re.search(r"\s-o\s", line), line
    out_lines = [x for x in help_text.splitlines() if re.search(r"^\W*--out\s", x)]  # report's and export's file
    assert all(not re.search(r"\s-o\s", x) for x in out_lines), out_lines


# -- presets say their kind -----------------------------------------------------------------------------------------
def test_list_presets_tells_grid_presets_from_recipe_presets():
    out = _invoke("list", "presets").output
    grids, recipes = out.split("recipe presets")
    assert "diffbench run --preset NAME" in grids and "smoke" in grids and "paper:dkd-cifar100" in grids
    assert "diffbench run --recipe NAME" in recipes and "diffbench train --preset NAME" in recipes
    assert "imagenet-diffkd" in recipes and "imagenet-diffkd" not in grids
    detection = _invoke("list", "presets", "--task", "detection").output
    assert "paper:dkd-coco" in detection and "paper:dkd-cifar100" not in detection and "1x" in detection


def test_recipe_preset_given_as_grid_preset_names_recipe():
    _one_line_error(_invoke("run", "--preset", "imagenet-diffkd", "--dry-run"), "--recipe imagenet-diffkd")


# -- a smoke grid is small on every data set ------------------------------------------------------------------------
SMOKE_CASES = [(t, d) for t in task_names() for d in task_spec(t).datasets]


@pytest.mark.parametrize(("task", "dataset"), SMOKE_CASES, ids=[f"{t}-{d}" for t, d in SMOKE_CASES])
@pytest.mark.parametrize("methods", ["kd", "kd,dkd,fitnet,diffkd"])
def test_smoke_preset_is_one_pair_one_seed_one_epoch(task, dataset, methods):
    # COCO's detectors are fine-tuning setups: a grid names where each trained detector starts (here: random)
    pair = task_spec(task).smallest_pair(dataset) or ()
    starts = [a for arch in pair for a in ("--student-checkpoint", f"{arch}=random")] if dataset == "coco" else []
    result = _invoke("run", "--preset", "smoke", "--task", task, "--dataset", dataset, "--methods", methods,
                     "--dry-run", "--json", *starts)  # fmt: skip
    assert result.exit_code == 0, result.output
    jobs = json.loads(result.stdout)["jobs"]
    # a teacher job, the vanilla student, one job per method
    assert len(jobs) == 2 + len(methods.split(",")), [j["label"] for j in jobs]
    pairs = {(j["teacher"], j["student"]) for j in jobs if j["method"] != "vanilla"}
    assert len(pairs) == 1 and pairs <= set(task_spec(task).default_pairs(dataset))
    assert {j["seed"] for j in jobs} == {0}
    assert {j["recipe"]["epochs"] for j in jobs} == {1}


def test_smoke_on_cifar100_was_26_jobs_and_is_6():
    result = _invoke("run", "--preset", "smoke", "--dataset", "cifar100", "--dry-run", "--json")
    jobs = json.loads(result.stdout)["jobs"]
    assert len(jobs) == 6  # teacher, vanilla, kd, dkd, fitnet, diffkd on resnet56 -> resnet20
    assert {j["student"] for j in jobs} == {"resnet56", "resnet20"}


def test_smoke_keeps_the_flags_given():
    result = _invoke("run", "--preset", "smoke", "--dataset", "cifar100", "--pairs", "resnet32x4:resnet8x4,vgg13:vgg8",
                     "--methods", "kd", "--seeds", "2", "--epochs", "3", "--dry-run", "--json")  # fmt: skip
    jobs = json.loads(result.stdout)["jobs"]
    assert len(jobs) == 2 + 2 * 2 + 2 * 2  # two teachers; vanilla and kd per pair, 2 seeds each
    assert {j["recipe"]["epochs"] for j in jobs} == {3}


# -- every typed name gets a "did you mean" ---------------------------------------------------------------------------
DRY = ["--dry-run"]


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        (["run", "--methods", "kd,dkdd", *DRY], "did you mean 'dkd'"),
        (["run", "--task", "detecton", *DRY], "did you mean 'detection'?"),
        (["run", "--dataset", "cifar10", *DRY], "did you mean 'cifar100'?"),
        (["run", "--pairs", "resnet20:resnt8", *DRY], "did you mean 'resnet8'"),
        (["run", "--preset", "smok", *DRY], "did you mean 'smoke'?"),
        (["run", "--recipe", "digts", *DRY], "did you mean 'digits'?"),
        (["run", "--methods", "dkd", "--set", "dkd.betta=3", *DRY], "did you mean 'beta'?"),
        (["run", "--set", "recipe.momentumm=0.5", *DRY], "did you mean 'momentum'?"),
        (["run", "--executor", "rya", *DRY], "did you mean 'ray'?"),
        (["run", "--precision", "bf61", *DRY], "did you mean 'bf16'?"),
        (["run", "--compile", "onn", *DRY], "did you mean 'on'?"),
        (["run", "--data-pipeline", "devise", *DRY], "did you mean 'device'?"),
        (["run", "--sync-bn", "of", *DRY], "did you mean 'off'?"),
        (["report", "--format", "htm"], "did you mean 'html'?"),
        (["report", "--epoch", "lst"], "did you mean 'last'?"),
        (["report", "--published", "alway"], "did you mean 'always'?"),
        (["report", "--task", "segmentaton"], "did you mean 'segmentation'?"),
        (["export", "0123456789ab", "--format", "onx"], "did you mean 'onnx'?"),
        (["list", "presetss"], "did you mean 'presets'?"),
        (
            ["train", "--student", "resnet8", "--recipe-preset", "x"],
            "unknown option '--recipe-preset'; did you mean '--preset'?",
        ),
        (["rnu"], "unknown command 'rnu'; did you mean 'run'?"),
    ],
)
def test_misspelt_name_is_one_line_with_a_suggestion(args, suggestion):
    _one_line_error(_invoke(*args), suggestion)


def test_no_suggestion_without_a_close_name():
    out = _one_line_error(_invoke("run", "--executor", "slurm", *DRY), "unknown executor 'slurm'", "valid: ray, local")
    assert "did you mean" not in out


# -- every error in one voice -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["eval"], "error: eval needs --checkpoint (see "),
        (["export"], "error: export needs SOURCE (see "),
        (["run", "--epochs", "many", *DRY], "error: invalid value for '--epochs'"),
        (["report", "--epoch"], "error: option '--epoch' requires an argument"),
    ],
)
def test_usage_errors_speak_like_every_other_error(args, line):
    out = _one_line_error(_invoke(*args))
    assert out.startswith(line), out
    assert "Missing" not in out and "╭" not in out and not out.split("(see")[0].strip().endswith("."), out


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_cifar100_folder_missing_or_empty_names_the_layout(tmp_path, state):
    folder = tmp_path / "cifar"
    if state == "empty":
        folder.mkdir()
    out = _one_line_error(_invoke("run", "--preset", "smoke", "--dataset", "cifar100", "--data-dir", str(folder), *DRY))
    assert "expected the official python-version archive extracted (cifar-100-python/{train,test,meta})" in out, out

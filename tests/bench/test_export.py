"""``diffbench export`` and the MLflow model of a job: every format loads back with its own loader and gives the
original student's logits on a fixed input.

Loaders are the formats' own, not diffbench's export code: mdistiller/plain files through the strict loader
``tasks.base.load_state_dict_file`` into a freshly built zoo model, TorchScript through ``torch.jit.load``,
``pt2`` through ``torch.export.load``, ONNX through onnxruntime, the MLflow model through
``mlflow.pytorch.load_model("runs:/<run>/student")``. Tolerances on the logits (CPU, float32): state-dict
formats exactly equal (same weights, same kernels); TorchScript and pt2 within 1e-5 (the same ops, traced);
ONNX within 1e-4 (onnxruntime's own kernels and fusions).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bench.cli.app import app
from bench.engine import export as ex
from methods.base import UserError
from tasks.base import load_state_dict_file
from tasks.classification.models import zoo

HASH = "0123456789ab"


def _student_record(model: torch.nn.Module, arch: str, task: str, dataset: str, num_classes: int) -> dict:
    """A student file as ``bench.engine.loop`` writes it: the weights plus what they are."""
    return {"student": model.state_dict(), "arch": arch, "task": task, "dataset": dataset,
            "num_classes": num_classes, "job": {"student": arch, "task": task}}  # fmt: skip


def _trained_like(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights *and* BatchNorm statistics, so an export that forgot eval mode gives other logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point():
                t.copy_((torch.rand(t.shape, generator=g) + 0.5) if "running_var" in name else
                        torch.randn(t.shape, generator=g) * 0.1)  # fmt: skip
    return model.eval()


@pytest.fixture
def job(tmp_path) -> Path:
    """``OUTPUT/jobs/<hash>/`` with a best and a last student (different weights) of resnet8 on digits."""
    folder = tmp_path / "results" / "jobs" / HASH
    folder.mkdir(parents=True)
    for name, seed in (("student_best.pt", 1), ("student.pt", 2)):
        model = _trained_like(zoo.build("resnet8", 10), seed)
        torch.save(_student_record(model, "resnet8", "classification", "digits", 10), folder / name)
    return folder


def _reference(path: Path) -> torch.nn.Module:
    model = zoo.build("resnet8", 10)
    load_state_dict_file(model, path)
    return model.eval()


X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(7))  # batch 3: not the example batch (2)


def _logits(model, x=X) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def test_find_student_file(job, tmp_path):
    results = tmp_path / "results"
    assert ex.find_student_file(HASH, results) == job / "student_best.pt"
    assert ex.find_student_file(HASH, results, last=True) == job / "student.pt"
    assert ex.find_student_file(job) == job / "student_best.pt"
    (job / "student_best.pt").unlink()
    assert ex.find_student_file(job) == job / "student.pt"  # a job that never evaluated
    with pytest.raises(UserError, match="no job fedcba987654"):
        ex.find_student_file("fedcba987654", results)
    plain = tmp_path / "plain.pt"
    torch.save(zoo.build("resnet8", 10).state_dict(), plain)
    with pytest.raises(UserError, match="not a diffbench student file"):
        ex.load_student(plain)


def test_mdistiller_and_plain_state_dict_round_trip(job, tmp_path):
    student = ex.load_student(job / "student_best.pt")
    want = _logits(_reference(job / "student_best.pt"))
    md = ex.export(student, "mdistiller", tmp_path / "s.pth")
    obj = torch.load(md, map_location="cpu")
    assert set(obj) == {"model"} and set(obj["model"]) == set(zoo.build("resnet8", 10).state_dict())
    plain = ex.export(student, "state_dict", tmp_path / "s.pt")
    obj = torch.load(plain, map_location="cpu")
    assert all(isinstance(v, torch.Tensor) for v in obj.values()) and "conv1.weight" in obj
    for path in (md, plain):
        fresh = zoo.build("resnet8", 10)
        load_state_dict_file(fresh, path)  # strict: every key, every shape
        assert torch.equal(_logits(fresh.eval()), want)
    assert not torch.equal(_logits(_reference(job / "student.pt")), want)  # best and last differ: the test can fail


def test_torchscript_and_pt2_round_trip(job, tmp_path):
    student = ex.load_student(job / "student_best.pt")
    want = _logits(_reference(job / "student_best.pt"))
    example = ex.example_input(student)
    assert tuple(example.shape) == (2, 3, 32, 32)  # digits' training size
    ts = ex.export(student, "torchscript", tmp_path / "s.torchscript.pt", example)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.15 deprecates TorchScript
        loaded = torch.jit.load(str(ts))
    torch.testing.assert_close(_logits(loaded), want, rtol=0, atol=1e-5)
    pt2 = ex.export(student, "pt2", tmp_path / "s.pt2", example)
    program = torch.export.load(str(pt2)).module()
    torch.testing.assert_close(_logits(program), want, rtol=0, atol=1e-5)  # batch 3: the batch is dynamic


def test_onnx_round_trip(job, tmp_path):
    pytest.importorskip("onnxscript", reason="torch's ONNX exporter needs onnxscript (pip install 'diffbench[onnx]')")
    ort = pytest.importorskip("onnxruntime", reason="the round trip runs the file with onnxruntime")
    student = ex.load_student(job / "student_best.pt")
    path = ex.export(student, "onnx", tmp_path / "s.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    got = torch.from_numpy(session.run(["logits"], {"images": X.numpy()})[0])
    torch.testing.assert_close(got, _logits(_reference(job / "student_best.pt")), rtol=0, atol=1e-4)


def test_segmentation_traces_its_logits(tmp_path):
    from tasks.segmentation.models import build_model

    model = _trained_like(build_model("deeplabv3_tiny_s", 4), 3)
    path = tmp_path / "student.pt"
    torch.save(_student_record(model, "deeplabv3_tiny_s", "segmentation", "shapes", 4), path)
    student = ex.load_student(path)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(ex.export(student, "torchscript", tmp_path / "s.ts", x)))
    torch.testing.assert_close(_logits(loaded, x), _logits(model, x)["out"], rtol=0, atol=1e-5)


def test_detection_exports_weights_only():
    student = ex.Student(torch.nn.Identity(), "fasterrcnn", "detection", "shapes", 4, Path("x"))
    with pytest.raises(UserError, match="detection students export as weights only"):
        ex.example_input(student)


# -- the command ---------------------------------------------------------------------------------------------
def test_export_command_writes_and_checks_each_format(job, tmp_path):
    out = tmp_path / "exported"
    args = ["export", HASH, "--output", str(tmp_path / "results"), "--format", "mdistiller,state_dict,torchscript,pt2",
            "--out", str(out), "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout.strip().splitlines()[-1])["files"]
    assert [r["format"] for r in rows] == ["mdistiller", "state_dict", "torchscript", "pt2"]
    for r in rows:
        assert Path(r["path"]).is_file() and Path(r["path"]).parent == out and r["max_abs_diff"] <= 1e-5
    fresh = zoo.build("resnet8", 10)
    load_state_dict_file(fresh, out / f"resnet8_{HASH}.mdistiller.pth")
    assert torch.equal(_logits(fresh.eval()), _logits(_reference(job / "student_best.pt")))


def test_export_command_one_line_errors(job, tmp_path):
    runner = CliRunner()
    bad = runner.invoke(app, ["export", "nope.pt"])
    assert bad.exit_code == 2 and bad.output.startswith("error:") and "no such student file" in bad.output
    bad = runner.invoke(app, ["export", str(job), "--format", "caffe"])
    assert bad.exit_code == 2 and "unknown export format 'caffe'" in bad.output


# -- MLflow ------------------------------------------------------------------------------------------------
def test_log_model_loads_back_by_run_uri(job, tmp_path):
    pytest.importorskip("mlflow")
    import mlflow.pytorch
    from mlflow import MlflowClient
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    from bench.execute.model_logging import log_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("diffbench", artifact_location=(tmp_path / "art").as_uri())
    run_id = client.create_run(exp).info.run_id
    warnings_seen: list[str] = []
    assert log_model(run_id, job, uri, warn=warnings_seen.append) == f"runs:/{run_id}/student"
    assert not warnings_seen
    with _use_tracking_uri(uri):
        loaded = mlflow.pytorch.load_model(f"runs:/{run_id}/student")
    torch.testing.assert_close(_logits(loaded), _logits(_reference(job / "student_best.pt")), rtol=0, atol=1e-5)
    (model,) = client.search_logged_models([exp])
    assert model.name == "student" and model.source_run_id == run_id
    assert client.get_run(run_id).info.status == "RUNNING"  # logging a model does not end the run

    empty = tmp_path / "no-student"
    empty.mkdir()
    assert log_model(run_id, empty, uri, warn=warnings_seen.append) is None
    (line,) = warnings_seen
    assert "\n" not in line and "not logged as an MLflow model" in line

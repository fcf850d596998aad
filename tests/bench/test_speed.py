"""``diffbench speed``: variants, FLOP counts against their formulas, % of peak, JSON schema, ``--data``.

Nothing here asserts a time: speed is measured by the benchmark, never by a test. Tiny shapes, CPU.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from bench.cli.app import app
from bench.speed import flops as bflops
from bench.speed.steps import SpeedRow, Variant, benchmark, expand_variants
from bench.speed.table import markdown_table
from methods.base import UserError

runner = CliRunner()


def _invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


# -- variants -------------------------------------------------------------------------------------------


def test_variants_are_the_cartesian_product_in_order():
    vs = expand_variants(["fp32", "bf16"], ["on", "off"], ["off", "on"], "cpu")
    assert len(vs) == 8
    assert vs[0] == Variant("fp32", True, "off")
    assert vs[1] == Variant("fp32", True, "default")  # "on" is torch.compile's default mode
    assert vs[-1] == Variant("bf16", False, "default")
    assert len(set(vs)) == 8


@pytest.mark.parametrize(
    ("device", "expected"),
    [("cpu", Variant("fp32", False, "off")), ("cuda", Variant("bf16", True, "off"))],
)
def test_auto_resolves_like_a_training_job(device, expected):
    assert expand_variants(device_type=device) == [expected]


def test_duplicate_variants_collapse():
    # on a CPU auto is fp32 without channels_last: asking for both times each row once
    assert expand_variants(["auto", "fp32"], ["auto", "off"], ["off"], "cpu") == [Variant("fp32", False, "off")]


@pytest.mark.parametrize(
    ("kw", "needle"),
    [({"precisions": ["fp64"]}, "--precision"), ({"channels_last": ["maybe"]}, "--channels-last"),
     ({"compiles": ["fast"]}, "--compile")],
)  # fmt: skip
def test_bad_variant_values_are_user_errors(kw, needle):
    with pytest.raises(UserError, match=needle):
        expand_variants(**kw)


def test_variant_labels():
    assert Variant("fp32", False).label == "fp32"
    assert Variant("bf16", True, "default").label == "bf16 cl compile"
    assert Variant("bf16", True, "reduce-overhead").label == "bf16 cl compile:reduce-overhead"


# -- FLOP counting --------------------------------------------------------------------------------------


def test_linear_flops_match_the_formula():
    n, fin, fout = 5, 8, 4
    lin = nn.Linear(fin, fout)
    x = torch.randn(n, fin, requires_grad=True)
    fwd = 2 * n * fin * fout
    assert bflops.count_flops(lambda: lin(x)) == fwd
    # backward: grad of the input and grad of the weight, one matmul of the forward's size each
    assert bflops.count_flops(lambda: lin(x).sum().backward()) == 3 * fwd
    # a first layer (input without grad) computes only the weight's gradient
    x0 = torch.randn(n, fin)
    assert bflops.count_flops(lambda: lin(x0).sum().backward()) == 2 * fwd


def test_conv_flops_match_the_formula():
    n, cin, cout, k, h, w = 2, 3, 6, 3, 8, 8
    conv = nn.Conv2d(cin, cout, k, padding=1, bias=False)
    x = torch.randn(n, cin, h, w, requires_grad=True)
    fwd = 2 * n * cout * h * w * cin * k * k  # one multiply-add per kernel tap per output element
    assert bflops.count_flops(lambda: conv(x)) == fwd
    assert bflops.count_flops(lambda: conv(x).sum().backward()) == 3 * fwd


def test_a_kd_step_counts_the_teacher_forward_once_on_top_of_the_student_step():
    """KD adds only the teacher's forward (its loss has no matmuls): the difference of the rows is that."""
    rows = benchmark("classification", "resnet8", "resnet8", ["vanilla", "kd"], batch_size=2, steps=1, warmup=0,
                     device="cpu", dataset="cifar100", num_classes=100)  # fmt: skip
    by = {r.method: r for r in rows}
    from tasks.classification.models import zoo

    teacher = zoo.build("resnet8", 100).eval()
    with torch.no_grad():
        t_fwd = bflops.count_flops(lambda: teacher(torch.randn(2, 3, 32, 32)))
    assert (by["kd"].flops_per_image - by["vanilla"].flops_per_image) * 2 == pytest.approx(t_fwd)
    # the student's step: forward + backward ≈ 3 forwards, less the stem's input gradient
    assert 2.5 * t_fwd < by["vanilla"].flops_per_image * 2 < 3 * t_fwd


# -- peaks ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "precision", "tf32", "expected"),
    [
        ("NVIDIA H200", "bf16", True, (989.4, "bf16")),
        ("NVIDIA H100 80GB HBM3", "fp32", True, (494.7, "tf32")),
        ("NVIDIA H100 80GB HBM3", "fp32", False, (67.0, "fp32")),
        ("NVIDIA A100-SXM4-40GB", "bf16", True, (312.0, "bf16")),
        ("NVIDIA A100-SXM4-40GB", "fp32", False, (19.5, "fp32")),
        ("NVIDIA A10", "bf16", True, (125.0, "bf16")),
        ("NVIDIA L4", "fp16", True, (121.0, "fp16")),
        ("NVIDIA L40S", "bf16", True, (366.0, "bf16")),
        ("Tesla V100-SXM2-16GB", "bf16", True, None),  # no bf16 tensor cores
        ("NVIDIA A10G", "bf16", True, None),  # other clocks than the A10: unknown rather than wrong
        ("NVIDIA H100 NVL", "bf16", True, None),
        (None, "fp32", True, None),  # CPU
    ],
)
def test_dense_peak_table(monkeypatch, name, precision, tf32, expected):
    monkeypatch.setattr(bflops, "conv_tf32_enabled", lambda: tf32)
    assert bflops.dense_peak(name, precision) == expected


def test_percent_of_a_given_peak():
    rows = benchmark("classification", None, "resnet8", ["vanilla"], batch_size=2, steps=2, warmup=0, device="cpu",
                     dataset="cifar100", num_classes=10, peak_tflops=0.5)  # fmt: skip
    (r,) = rows
    assert r.peak_tflops == 0.5 and r.peak_kind == "given"
    assert r.tflops == pytest.approx(r.flops_per_image * 2 / (r.ms_per_step / 1e3) / 1e12)
    assert r.pct_of_peak == pytest.approx(100 * r.tflops / 0.5)


def test_no_peak_on_cpu_shows_a_dash():
    rows = benchmark("classification", None, "resnet8", ["vanilla"], batch_size=2, steps=1, warmup=0, device="cpu",
                     dataset="cifar100", num_classes=10, flops=False)  # fmt: skip
    assert rows[0].pct_of_peak is None and rows[0].flops_per_image is None
    table = markdown_table(rows)
    assert "% peak" not in table and "GFLOP/img" not in table  # empty optional columns are left out
    row = SpeedRow("kd", 10.0, 1.0, 6.4, None, pct_of_peak=None, flops_per_image=1e9)
    assert "| — |" in markdown_table([row])


# -- the command ----------------------------------------------------------------------------------------


def test_speed_json_schema_with_variants():
    result = _invoke("speed", "--teacher", "resnet8", "--student", "resnet8", "--methods", "kd", "--batch-size", "2",
                     "--steps", "2", "--warmup", "0", "--device", "cpu", "--precision", "fp32,bf16",
                     "--channels-last", "off", "--peak-tflops", "1", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output.strip().splitlines()[-1])
    for key in ("task", "dataset", "teacher", "student", "batch_size", "steps", "inner", "variants", "device",
                "device_name", "torch", "rows"):  # fmt: skip
        assert key in payload, key
    assert payload["variants"] == ["fp32", "bf16"]
    rows = payload["rows"]
    assert [(r["method"], r["variant"]) for r in rows] == [("vanilla", "fp32"), ("kd", "fp32"), ("vanilla", "bf16"),
                                                            ("kd", "bf16")]  # fmt: skip
    for r in rows:
        assert set(SpeedRow.__dataclass_fields__) == set(r)
        assert r["images_per_s"] == pytest.approx(2 / (r["ms_per_step"] / 1e3))
        assert r["flops_per_image"] > 0 and r["pct_of_peak"] > 0 and r["peak_kind"] == "given"
        assert r["peak_mem_mb"] is None and r["compile_time_s"] is None  # CPU, eager
        assert r["vs_vanilla"] == pytest.approx(r["ms_per_step"] / next(
            x["ms_per_step"] for x in rows if x["method"] == "vanilla" and x["variant"] == r["variant"]))


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--student", "resnet8", "--precision", "fp64"], "--precision"),
        (["--teacher", "resnet8"], "--student is required"),
        (["--student", "resnet8", "--methods", "kd"], "--teacher"),
        (["--data", "--task", "detection"], "--data"),
    ],
)
def test_speed_bad_input_is_one_line(args, needle):
    result = _invoke("speed", "--device", "cpu", "--steps", "1", *args)
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("error:") and needle in result.output


def test_speed_data_times_both_pipelines_on_tiny_data():
    result = _invoke("speed", "--data", "--images", "128", "--batch-size", "16", "--steps", "2", "--device", "cpu",
                     "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    r = json.loads(result.output.strip().splitlines()[-1])
    assert r["images"] == 128 and r["batch_size"] == 16 and r["dataset"] == "cifar100"
    assert r["pil"] > 0 and r["resident"] > 0
    assert r["speedup"] == pytest.approx(r["resident"] / r["pil"])


def test_speed_data_on_digits():
    result = _invoke("speed", "--data", "--dataset", "digits", "--batch-size", "32", "--steps", "2", "--device",
                     "cpu", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    r = json.loads(result.output.strip().splitlines()[-1])
    assert r["dataset"] == "digits" and r["images"] > 1000


def test_speed_module_runs_without_ray_mlflow_typer_or_rich():
    mods = "bench.speed.steps, bench.speed.table, bench.speed.data, bench.perf.packing, bench.perf.gpu_suite"
    check = "bad = [m for m in ('ray', 'mlflow', 'typer', 'rich') if m in sys.modules]; assert not bad, bad"
    code = f"import sys, {mods}; {check}"
    subprocess.run([sys.executable, "-c", code], check=True)

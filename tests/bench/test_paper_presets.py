"""Paper presets: one published table each, with the paper's weights given by the user (named when missing), and a
plan a user can read before spending GPU-hours (list presets --json, run --dry-run --json)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from bench.cli.app import app
from bench.jobs.grid import expand, grid_from_preset
from bench.jobs.presets import PAPER_PRESETS
from methods.errors import UserError
from tasks.classification.models import zoo


def test_a_paper_preset_without_the_papers_teachers_names_every_file():
    with pytest.raises(UserError) as err:
        expand(grid_from_preset("paper:dkd-cifar100"))
    text = str(err.value)
    for arch in ("resnet56", "resnet110", "resnet32x4", "wrn_40_2", "vgg13", "ResNet50"):
        assert f"--teacher-checkpoint {arch}=cifar_teachers/{arch}_vanilla/ckpt_epoch_240.pth" in text
    with pytest.raises(UserError, match="--student-checkpoint d2_faster_rcnn_R_18_FPN=r18-r101.pth"):
        expand(grid_from_preset("paper:dkd-coco"))


def test_dkd_imagenet_expands_to_the_papers_table(tmp_path, imagenet_dir):
    files = {}
    for arch in ("resnet34", "resnet50"):
        files[arch] = tmp_path / f"{arch}.pth"
        torch.save(zoo.build(arch, 1000).state_dict(), files[arch])
    grid = grid_from_preset("paper:dkd-imagenet").merged(data_dir=imagenet_dir,
                                                          teacher_checkpoints={a: str(f) for a, f in files.items()})
    jobs = expand(grid)
    assert {j.role for j in jobs} == {"student"}  # the paper's teachers are given, none is trained
    pairs = {(j.teacher, j.student) for j in jobs if j.teacher}
    assert pairs == {("resnet34", "resnet18"), ("resnet50", "MobileNetV1")}
    assert {j.method for j in jobs} == {"vanilla", "kd", "dkd"} and {j.seed for j in jobs} == {0, 1, 2}
    assert {(j.recipe["batch_size"], j.recipe["lr"]) for j in jobs} == {(512, 0.2)}  # mdistiller's configs
    dkd = {j.student: dict(j.hparams) for j in jobs if j.method == "dkd"}
    assert dkd["resnet18"]["beta"] == 0.5 and dkd["MobileNetV1"]["beta"] == 2.0  # configs/imagenet/*/dkd.yaml
    assert all(j.student_init is None for j in jobs)  # ImageNet students start from random weights


def test_every_paper_preset_is_listed_with_its_source_and_notes():
    out = CliRunner().invoke(app, ["list", "presets", "--json"])
    assert out.exit_code == 0, out.output
    grids = json.loads(out.stdout)["grids"]
    for name, preset in PAPER_PRESETS.items():
        entry = grids[f"paper:{name}"]
        assert entry["source"] == preset.source and entry["title"] == preset.title
        assert entry["pairs"] == [list(p) for p in preset.grid["pairs"]]
        assert entry["student_init"] == ("random" if not preset.students else
                                         {"files": preset.students, "from": preset.students_from})  # fmt: skip
    recipes = json.loads(out.stdout)["recipes"]["classification"]
    assert recipes["cifar100"]["datasets"]["cifar100"]["by_student"]["MobileNetV2"] == {"lr": 0.01}


def test_dry_run_json_spells_out_every_job():
    out = CliRunner().invoke(app, ["run", "--dry-run", "--json", "--device", "cpu", "--methods", "kd"])
    assert out.exit_code == 0, out.output
    plan = json.loads(out.stdout)
    assert plan["count"] == len(plan["jobs"]) == 1 + 3 + 3  # teacher, vanilla x 3 seeds, kd x 3 seeds
    kd = next(j for j in plan["jobs"] if j["method"] == "kd")
    assert len(kd["hash"]) == 12 and kd["teacher_weights"].startswith("job:")
    assert kd["hparams"]["temperature"] == 4.0 and kd["recipe"]["precision"] == "fp32"
    assert kd["student_init"] == "random"
    refused = CliRunner().invoke(app, ["run", "--json"])
    assert refused.exit_code == 2 and "add --dry-run" in refused.output

"""Published numbers appear only beside runs trained in the paper's setting (``--published match``): its recipe
preset, its starting weights (pretrained / random) and its precision.

Uses the shipped ``bench/reference/published.csv`` (package data): RepDistiller/mdistiller's CIFAR-100 numbers were
obtained with the ``cifar100`` recipe (240 epochs, lr 0.05, batch 64) from random weights in fp32; the DKD paper's
COCO numbers with the ``1x`` recipe from ImageNet-pretrained students in fp32.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest

pytest.importorskip("mlflow")

from report_store import log_job, new_store  # noqa: E402

from bench import report  # noqa: E402
from methods.base import UserError  # noqa: E402

KD_R8X4 = 73.33  # RepDistiller README, resnet32x4 -> resnet8x4, KD
KD_R20 = 70.66  # RepDistiller README, resnet56 -> resnet20, KD


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> pd.DataFrame:
    client, uri, exp = new_store(tmp_path_factory.mktemp("published"))
    pairs = {("resnet32x4", "resnet8x4"): "cifar100", ("resnet56", "resnet20"): "cpu", ("resnet110", "resnet32"): None}
    for (teacher, student), preset in pairs.items():
        tags = {"recipe_preset": preset} if preset else {}  # None: a run logged before the tag existed
        for seed in range(2):
            for method, best in (("vanilla", 70.0 + seed), ("kd", 72.0 + seed)):
                log_job(client, exp, None, student=student, teacher=teacher if method == "kd" else "",
                        method=method, seed=seed, best=best, tags=tags, end=seed)  # fmt: skip
    return report.load_runs(uri)


def _published(lb: report.Leaderboard, student: str, method: str = "kd") -> float:
    t = lb.tidy
    return t[(t["student"] == student) & (t["method"] == method)].iloc[0]["published"]


def test_shown_for_matching_recipe_hidden_otherwise(runs):
    lb = report.leaderboard(runs, reference=report.load_reference())
    assert _published(lb, "resnet8x4") == pytest.approx(KD_R8X4)
    assert _published(lb, "resnet8x4", "vanilla") == pytest.approx(72.5)
    assert math.isnan(_published(lb, "resnet20"))
    assert math.isnan(_published(lb, "resnet32"))
    notes = "\n".join(lb.notes)
    assert "Published numbers hidden (2 cell(s)): these runs use recipe 'cpu', the papers used 'cifar100'" in notes
    assert "these runs do not record their recipe preset (older diffbench); the papers used 'cifar100'" in notes
    md = report.render(lb, "markdown")
    assert f"paper {KD_R8X4:.2f}" in md and f"paper {KD_R20:.2f}" not in md
    assert "these runs use recipe 'cpu', the papers used 'cifar100'" in md


def test_always_and_never(runs):
    ref = report.load_reference()
    always = report.leaderboard(runs, reference=ref, published="always")
    assert _published(always, "resnet20") == pytest.approx(KD_R20) and _published(always, "resnet32") == 73.08
    assert any("shown although the recipes differ" in n and "'cpu'" in n for n in always.notes)
    never = report.leaderboard(runs, reference=ref, published="never")
    assert never.tidy["published"].isna().all() and "Published numbers hidden (--published never)." in never.notes
    with pytest.raises(UserError, match="--published"):
        report.leaderboard(runs, reference=ref, published="sometimes")


def test_reference_without_recipe_column_is_never_matched(runs, tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("task,dataset,teacher,student,method,metric,value,source\n"
                    "classification,cifar100,resnet32x4,resnet8x4,kd,top1,73.33,paper\n")  # fmt: skip
    lb = report.leaderboard(runs, reference=report.load_reference(path))
    assert math.isnan(_published(lb, "resnet8x4"))
    assert any("does not name the recipe preset" in n for n in lb.notes)


def test_shipped_reference_names_a_recipe_for_every_known_pair():
    ref = report.load_reference()
    named = ref[(ref["teacher"] != "?") & (ref["student"] != "?")]
    assert (named["recipe_preset"] != "").all()
    assert set(named.loc[named["dataset"] == "cifar100", "recipe_preset"]) == {"cifar100"}
    imagenet = named[named["dataset"] == "imagenet"].set_index(["student", "method"])
    assert imagenet.loc[("resnet18", "diffkd"), "recipe_preset"] == "imagenet-diffkd"
    assert imagenet.loc[("resnet18", "dkd"), "recipe_preset"] == "imagenet-b512"  # mdistiller's batch 512, lr 0.2
    mv1 = imagenet.loc[("MobileNetV1", "diffkd")]
    assert mv1["value"] == 73.62 and "73.24" in mv1["source"]  # paper figure kept, README's noted


def test_each_codebase_baseline_sits_beside_runs_of_its_recipe(tmp_path):
    """ImageNet MobileNet-V1 has two published baselines: 68.87 (ReviewKD, the lineage of mdistiller's KD/DKD,
    batch 512) and 70.13 (DIST/DiffKD's image_classification_sota). Each recipe's runs get their own."""
    got = {}
    for preset in ("imagenet-b512", "imagenet-diffkd"):
        client, uri, exp = new_store(tmp_path / preset)
        for method in ("vanilla", "dkd"):
            log_job(client, exp, None, task="classification", dataset="imagenet", student="MobileNetV1",
                    teacher="resnet50" if method == "dkd" else "", method=method, seed=0, best=70.0,
                    tags={"recipe_preset": preset})  # fmt: skip
        t = report.leaderboard(report.load_runs(uri), reference=report.load_reference()).tidy
        got.update({(preset, r.method): r.published for r in t.itertuples()})
    assert got[("imagenet-b512", "vanilla")] == pytest.approx(68.87)
    assert got[("imagenet-diffkd", "vanilla")] == pytest.approx(70.13)
    assert got[("imagenet-b512", "dkd")] == pytest.approx(72.05)
    assert math.isnan(got[("imagenet-diffkd", "dkd")])  # mdistiller's DKD ran the batch-512 recipe


def test_shipped_reference_states_starting_weights_and_precision():
    """CIFAR-100 and ImageNet tables train from random weights, COCO and Cityscapes students start from
    ImageNet-pretrained backbones; all in fp32. The ADE20K headline figure names no setting: left empty."""
    ref = report.load_reference()
    setting = ref.groupby("dataset")[["student_init", "precision"]].agg(lambda v: ",".join(sorted(set(v))))
    assert setting.loc[["cifar100", "imagenet"], "student_init"].tolist() == ["random", "random"]
    assert setting.loc[["coco", "cityscapes"], "student_init"].tolist() == ["pretrained", "pretrained"]
    assert set(setting.loc[["cifar100", "imagenet", "coco", "cityscapes"], "precision"]) == {"fp32"}
    assert tuple(setting.loc["ade20k"]) == ("", "")


# --- The setting: recipe preset, starting weights and precision ----------------------------------------------------
R18_COCO = ("d2_faster_rcnn_R_101_FPN", "d2_faster_rcnn_R_18_FPN")  # DKD paper Table 6: KD 33.97, from pretrained
R50_COCO = ("d2_faster_rcnn_R_101_FPN", "d2_faster_rcnn_R_50_FPN")  # KD 38.35
SHA = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def setting_runs(tmp_path_factory) -> pd.DataFrame:
    """CIFAR-100 pairs on the paper's recipe, one from pretrained weights and one in bf16; two COCO pairs on the
    1x recipe, one from random weights (the task's default, no param) and one from an ImageNet-pretrained file."""
    client, uri, exp = new_store(tmp_path_factory.mktemp("setting"))
    cifar = {"recipe.epochs": 240, "recipe.lr": 0.05, "recipe.batch_size": 64}
    pretrained = {"student_init": SHA, "student_init_file": "r18_imagenet.pth"}
    cases = [  # (task, dataset, metric, preset, (teacher, student), params, worker tag)
        ("classification", "cifar100", "top1", "cifar100", ("resnet32x4", "resnet8x4"), {**cifar, **pretrained}, "1"),
        ("classification", "cifar100", "top1", "cifar100", ("resnet56", "resnet20"),
         {**cifar, "recipe.precision": "bf16", "student_init": "random"}, "2"),
        ("detection", "coco", "bbox_AP", "1x", R18_COCO, {"recipe.epochs": 12}, None),
        ("detection", "coco", "bbox_AP", "1x", R50_COCO, {"recipe.epochs": 12, **pretrained}, "8"),
    ]  # fmt: skip
    for task, dataset, metric, preset, (teacher, student), params, workers in cases:
        tags = {"recipe_preset": preset, **({"workers": workers} if workers else {})}
        for seed in range(2):
            for method, best in (("vanilla", 30.0 + seed), ("kd", 31.0 + seed)):
                log_job(client, exp, None, task=task, dataset=dataset, metric=metric, student=student,
                        teacher=teacher if method == "kd" else "", method=method, seed=seed, best=best,
                        params=params, tags=tags, end=seed)  # fmt: skip
    return report.load_runs(uri)


def test_starting_weights_and_precision_must_match(setting_runs):
    lb = report.leaderboard(setting_runs, reference=report.load_reference())
    assert _published(lb, "d2_faster_rcnn_R_50_FPN") == pytest.approx(38.35)  # pretrained, fp32, 1x: as the paper
    for student in ("resnet8x4", "resnet20", "d2_faster_rcnn_R_18_FPN"):
        assert math.isnan(_published(lb, student)) and math.isnan(_published(lb, student, "vanilla"))
    notes = "\n".join(lb.notes)
    assert ("Published numbers hidden (2 cell(s)): these runs start from random weights, the paper's from pretrained "
            "ones (--published always shows them).") in notes  # fmt: skip
    assert "Published numbers hidden (2 cell(s)): these runs start from pretrained weights, the paper's from random" \
        in notes  # fmt: skip
    assert "Published numbers hidden (2 cell(s)): these runs ran bf16, the paper fp32" in notes
    assert "recipe" not in notes and "does not state" not in notes  # every preset matches; the file states all
    kd = lb.tidy[(lb.tidy["student"] == "d2_faster_rcnn_R_18_FPN") & (lb.tidy["method"] == "kd")].iloc[0]
    assert (kd["student_init"], kd["published_init"], kd["precision"], kd["published_precision"]) == (
        "random", "pretrained", "fp32", "fp32")  # fmt: skip
    md = report.render(lb, "markdown")
    assert "paper 38.35" in md and "paper 33.97" not in md and "paper 73.33" not in md


def test_always_shows_them_with_the_same_notes(setting_runs):
    lb = report.leaderboard(setting_runs, reference=report.load_reference(), published="always")
    assert _published(lb, "d2_faster_rcnn_R_18_FPN") == pytest.approx(33.97)
    assert _published(lb, "resnet8x4") == pytest.approx(73.33) and _published(lb, "resnet20") == pytest.approx(70.66)
    notes = "\n".join(lb.notes)
    assert ("Published numbers shown although the starting weights differ (2 cell(s)): these runs start from random "
            "weights, the paper's from pretrained ones.") in notes  # fmt: skip
    assert "Published numbers shown although the precisions differ (2 cell(s)): these runs ran bf16, the paper fp32." \
        in notes  # fmt: skip
    assert "paper 33.97" in report.render(lb, "markdown")


def test_a_setting_the_reference_does_not_state_is_not_checked(setting_runs, tmp_path):
    path = tmp_path / "partial.csv"
    path.write_text("task,dataset,teacher,student,method,metric,value,source,recipe_preset,student_init,precision\n"
                    "detection,coco,d2_faster_rcnn_R_101_FPN,d2_faster_rcnn_R_18_FPN,kd,bbox_AP,33.97,p,1x,,fp32\n"
                    "classification,cifar100,resnet56,resnet20,kd,top1,70.66,p,cifar100,random,\n")  # fmt: skip
    lb = report.leaderboard(setting_runs, reference=report.load_reference(path))
    assert _published(lb, "d2_faster_rcnn_R_18_FPN") == pytest.approx(33.97)  # random weights, but not stated
    assert _published(lb, "resnet20") == pytest.approx(70.66)  # bf16, but not stated
    notes = "\n".join(lb.notes)
    assert ("Published numbers shown without checking the starting weights (1 cell(s)): the reference does not state "
            "whether the paper's models started from pretrained or random weights.") in notes  # fmt: skip
    assert ("Published numbers shown without checking the precision (1 cell(s)): the reference does not state the "
            "precision the paper trained in.") in notes  # fmt: skip
    assert "hidden" not in notes
    old = tmp_path / "old.csv"  # a file from before the columns: neither is checked
    old.write_text("task,dataset,teacher,student,method,metric,value,source,recipe_preset\n"
                   "classification,cifar100,resnet56,resnet20,kd,top1,70.66,p,cifar100\n")  # fmt: skip
    lb = report.leaderboard(setting_runs, reference=report.load_reference(old))
    assert _published(lb, "resnet20") == pytest.approx(70.66)
    assert sum("the reference does not state" in n for n in lb.notes) == 2


def test_bad_setting_in_reference_is_refused(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("task,dataset,teacher,student,method,metric,value,source,recipe_preset,student_init\n"
                    "classification,cifar100,resnet56,resnet20,kd,top1,70.66,p,cifar100,imagenet\n")  # fmt: skip
    with pytest.raises(UserError, match="student_init 'imagenet' is not one of pretrained, random"):
        report.load_reference(path)


def test_provenance_states_starting_weights_and_workers(setting_runs):
    lb = report.leaderboard(setting_runs, reference=report.load_reference())
    lines = "\n".join(lb.provenance_lines())
    assert ("Initialisation classification/cifar100: runs start from pretrained weights (r18_imagenet.pth) and "
            "random weights; data-parallel workers per run: 1/2.") in lines  # fmt: skip
    assert ("Initialisation detection/coco: runs start from pretrained weights (r18_imagenet.pth) and random weights; "
            "data-parallel workers per run: 8/not recorded.") in lines  # fmt: skip
    assert "Warning: detection/coco mixes starting weights" in lines
    rec = {r["dataset"]: r for r in lb.provenance}
    assert (rec["coco"]["student_init"], rec["coco"]["student_init_file"], rec["coco"]["workers"]) == (
        ["pretrained", "random"], ["r18_imagenet.pth"], ["8", "unknown"])  # fmt: skip
    kd = lb.tidy[(lb.tidy["student"] == "resnet8x4") & (lb.tidy["method"] == "kd")].iloc[0]
    assert (kd["student_init"], kd["student_init_file"], kd["workers"]) == ("pretrained", "r18_imagenet.pth", "1")


def test_runs_from_different_starting_weights_are_separate_columns(tmp_path):
    """Seeds from random and from pretrained weights are never averaged; each gain is against vanilla runs that
    started from the same weights."""
    client, uri, exp = new_store(tmp_path)
    other = "sha256:" + "cd" * 32
    for init, file, offset in (("", "", 0.0), (SHA, "a.pth", 10.0), (other, "a.pth", 20.0)):
        params = {"student_init": init, "student_init_file": file} if init else {}
        for seed in range(2):
            for method, best in (("vanilla", 50.0 + offset + seed), ("kd", 52.0 + offset + seed)):
                log_job(client, exp, None, student="resnet8", teacher="" if method == "vanilla" else "resnet20",
                        method=method, seed=seed, best=best, dataset="digits", params=params,
                        job_hash=f"{method}-{seed}-{init}")  # fmt: skip
    lb = report.leaderboard(report.load_runs(uri))
    kd = lb.tidy[lb.tidy["base_method"] == "kd"].set_index("method")
    assert set(kd.index) == {"kd[init=random]", "kd[init=a.pth@abababab]", "kd[init=a.pth@cdcdcdcd]"}
    assert kd.loc["kd[init=random]", "mean"] == pytest.approx(52.5)
    assert kd.loc["kd[init=a.pth@cdcdcdcd]", "mean"] == pytest.approx(72.5)
    assert list(kd["gain"]) == pytest.approx([2.0] * 3)  # each against its own vanilla

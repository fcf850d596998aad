"""Published numbers appear only beside runs trained with the paper's recipe preset (``--published match``).

Uses the shipped ``bench/reference/published.csv`` (package data): RepDistiller/mdistiller's CIFAR-100 numbers were
obtained with the ``cifar100`` recipe (240 epochs, lr 0.05, batch 64).
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
    assert imagenet.loc[("resnet18", "dkd"), "recipe_preset"] == "imagenet"  # mdistiller's recipe
    mv1 = imagenet.loc[("MobileNetV1", "diffkd")]
    assert mv1["value"] == 73.62 and "73.24" in mv1["source"]  # paper figure kept, README's noted

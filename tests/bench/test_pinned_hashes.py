"""A job's hash is its identity: users' finished jobs are found by it. These grids' hashes were recorded at
commit a2314c4 and must never change by accident (a refactor, a new recipe field, a new hyper-parameter):
a changed hash means every finished job of that grid is trained again.

If a change *means* to change what a job computes (a method's behaviour, a preset's values), its hashes change
too; update the pin in the same commit and say why in the commit message.
"""

from __future__ import annotations

import pytest

from bench.jobs.grid import GridSpec, expand

PINNED: dict[str, dict[str, str]] = {
    "cifar100-files": {
        "teacher resnet32x4": "c992b35648b9",
        "vanilla resnet8x4 s0": "ddf76f126e57",
        "kd resnet32x4→resnet8x4 s0": "8cdb1d2eb385",
        "dkd resnet32x4→resnet8x4 s0": "3753b6543311",
        "fitnet resnet32x4→resnet8x4 s0": "a82630604381",
        "diffkd resnet32x4→resnet8x4 s0": "cd23a5b2d2c3",
    },
    "cifar100-sets": {
        "teacher resnet56": "c7f24723d850",
        "vanilla resnet20 s3": "193c4f985106",
        "kd resnet56→resnet20 s3": "5ddd0e87907f",
        "dkd resnet56→resnet20 s3": "f24a3f535ee1",
    },
    "imagenet-diffkd": {
        "teacher resnet34": "260c17bc97cf",
        "vanilla resnet18 s0": "a994751fd828",
        "kd resnet34→resnet18 s0": "98289b41042a",
        "diffkd resnet34→resnet18 s0": "3b3b89584ab4",
    },
    "digits": {
        "teacher resnet20": "222459f5a9b5",
        "vanilla resnet8 s0": "bea2b14c23e6",
        "vanilla resnet8 s1": "d0aaed623bc6",
        "kd resnet20→resnet8 s0": "b54f025d0d05",
        "kd resnet20→resnet8 s1": "5fba4129ff38",
        "dkd resnet20→resnet8 s0": "d6b2688ef9aa",
        "dkd resnet20→resnet8 s1": "df99c63f3389",
        "fitnet resnet20→resnet8 s0": "b065cc3a157b",
        "fitnet resnet20→resnet8 s1": "f99fe668ce7c",
        "diffkd resnet20→resnet8 s0": "5f4e4b6b175a",
        "diffkd resnet20→resnet8 s1": "543dc6272362",
    },
    "colorshapes": {
        "teacher resnet20": "d8183fd92925",
        "vanilla resnet8 s0": "cdece5a221fb",
        "vanilla resnet8 s1": "e6e6dbaffdbe",
        "vanilla resnet8 s2": "83466844e1e4",
        "kd resnet20→resnet8 s0": "4f70b6512a56",
        "kd resnet20→resnet8 s1": "a0ba5ed5618b",
        "kd resnet20→resnet8 s2": "4aa13b49fa19",
        "dkd resnet20→resnet8 s0": "e000e15c8ca1",
        "dkd resnet20→resnet8 s1": "99d79d9dc48e",
        "dkd resnet20→resnet8 s2": "7aa74b2e4187",
        "fitnet resnet20→resnet8 s0": "5105f9b69689",
        "fitnet resnet20→resnet8 s1": "2015013f1245",
        "fitnet resnet20→resnet8 s2": "10107cb00e08",
        "diffkd resnet20→resnet8 s0": "5603178fcc4d",
        "diffkd resnet20→resnet8 s1": "bd501982ce7f",
        "diffkd resnet20→resnet8 s2": "0cb513656a34",
    },
    # the embedded default since colorshapes-few replaced colorshapes (recorded when it became the default)
    "colorshapes-few": {
        "teacher resnet20": "0cfb177eb6ee",
        "vanilla resnet8 s0": "0333325da011",
        "vanilla resnet8 s1": "67590f1c2a65",
        "vanilla resnet8 s2": "ec3dde8a4f3a",
        "kd resnet20→resnet8 s0": "839b6b34bc61",
        "kd resnet20→resnet8 s1": "3c9cf6eb4a78",
        "kd resnet20→resnet8 s2": "e683b904f9d9",
        "dkd resnet20→resnet8 s0": "11bf8dcd0ab8",
        "dkd resnet20→resnet8 s1": "22c1b418da16",
        "dkd resnet20→resnet8 s2": "849a860cca30",
        "fitnet resnet20→resnet8 s0": "b7957ab55a01",
        "fitnet resnet20→resnet8 s1": "22f5960bfdad",
        "fitnet resnet20→resnet8 s2": "cee9f283bd56",
        "diffkd resnet20→resnet8 s0": "5f8e9a5b70f3",
        "diffkd resnet20→resnet8 s1": "93fdc95d76c1",
        "diffkd resnet20→resnet8 s2": "ea9d71069ec0",
    },
    "colorshapes-cuda": {
        "teacher resnet20": "0cab708c1f29",
        "vanilla resnet8 s0": "1c5d2b227c6a",
        "kd resnet20→resnet8 s0": "12b780f10367",
    },
    "detection": {
        "teacher fasterrcnn_r18": "e4a95c2cdf26",
        "vanilla fasterrcnn_mbv3s s0": "9263f5fe3b8f",
        "kd fasterrcnn_r18→fasterrcnn_mbv3s s0": "01234c800a8f",
        "dkd fasterrcnn_r18→fasterrcnn_mbv3s s0": "316cacbaec7e",
        "fitnet fasterrcnn_r18→fasterrcnn_mbv3s s0": "be5970b49a55",
        "diffkd fasterrcnn_r18→fasterrcnn_mbv3s s0": "5640f5cf17b6",
    },
    "detection-cuda": {
        "teacher fasterrcnn_r18": "fa224679664f",
        "vanilla fasterrcnn_mbv3s s0": "428cba4cd6ba",
        "fitnet fasterrcnn_r18→fasterrcnn_mbv3s s0": "4f09a75e0beb",
    },
    "segmentation": {
        "teacher deeplabv3_tiny_t": "88a1d62b8f58",
        "vanilla deeplabv3_tiny_s s0": "4c5c890dc5c6",
        "kd deeplabv3_tiny_t→deeplabv3_tiny_s s0": "7a2eca1ad409",
        "dkd deeplabv3_tiny_t→deeplabv3_tiny_s s0": "49a7b35f62c1",
        "fitnet deeplabv3_tiny_t→deeplabv3_tiny_s s0": "ad8211e38380",
        "diffkd deeplabv3_tiny_t→deeplabv3_tiny_s s0": "cea1acb3ef80",
    },
}


@pytest.fixture
def folders(tmp_path):
    """CIFAR-100 and ImageNet folders with the exact (tiny) contents the pins were recorded with: the data's
    content fingerprint is part of each job's identity, its location is not."""
    cifar = tmp_path / "cifar" / "cifar-100-python"
    cifar.mkdir(parents=True)
    for name in ("train", "test", "meta"):
        (cifar / name).write_bytes(name.encode())
    for split in ("train", "val"):
        (tmp_path / "imagenet" / split / "n01440764").mkdir(parents=True)
    return {"cifar": str(cifar.parent), "imagenet": str(tmp_path / "imagenet")}


def _grids(folders: dict[str, str]) -> dict[str, tuple[GridSpec, str]]:
    cifar, imagenet = folders["cifar"], folders["imagenet"]
    return {
        "cifar100-files": (GridSpec(task="classification", dataset="cifar100", data_dir=cifar, preset="cifar100",
                                    pairs=(("resnet32x4", "resnet8x4"),), seeds=1), "cpu"),
        "cifar100-sets": (GridSpec(task="classification", dataset="cifar100", data_dir=cifar, preset="cifar100",
                                   pairs=(("resnet56", "resnet20"),), methods=("kd", "dkd"),
                                   sets={"kd": {"temperature": 2}}, recipe={"epochs": 30, "lr": 0.1}, seeds=(3,)),
                          "cpu"),
        "imagenet-diffkd": (GridSpec(task="classification", dataset="imagenet", data_dir=imagenet,
                                     preset="imagenet-diffkd", pairs=(("resnet34", "resnet18"),),
                                     methods=("kd", "diffkd")), "cpu"),
        "digits": (GridSpec(task="classification", dataset="digits", seeds=2), "cpu"),
        "colorshapes": (GridSpec(task="classification", dataset="colorshapes", seeds=3), "cpu"),
        "colorshapes-few": (GridSpec(task="classification", dataset="colorshapes-few", seeds=3), "cpu"),
        "colorshapes-cuda": (GridSpec(task="classification", dataset="colorshapes", seeds=1, methods=("kd",)), "cuda"),
        "detection": (GridSpec(task="detection"), "cpu"),
        "detection-cuda": (GridSpec(task="detection", methods=("fitnet",)), "cuda"),
        "segmentation": (GridSpec(task="segmentation"), "cpu"),
    }  # fmt: skip


@pytest.mark.parametrize("name", sorted(PINNED))
def test_recorded_grids_keep_their_job_hashes(name, folders):
    grid, device = _grids(folders)[name]
    assert {j.label: j.job_hash for j in expand(grid, device=device)} == PINNED[name]

"""Each classification recipe preset against the configuration file it cites: the official values, as facts.

Sources (read at these commits):
* mdistiller a08d46f ``configs/cifar100/*.yaml`` lines 9-17 (SOLVER) and ``configs/cifar100/dkd/vgg13_mv2.yaml``
  line 12 (``LR: 0.01`` for MobileNetV2/ShuffleNet students); ``mdistiller/engine/trainer.py`` lines 38-46 (plain SGD,
  weight decay on every parameter);
* mdistiller a08d46f ``configs/imagenet/r34_r18/kd.yaml`` lines 14-22 (``BATCH_SIZE: 512``, ``LR: 0.2``, ``EPOCHS:
  100``, ``LR_DECAY_STAGES: [30, 60, 90]``, ``WEIGHT_DECAY: 0.0001``);
* hunto/image_classification_sota 6cb1441 ``configs/strategies/distill/diffkd/diffkd_b1.yaml`` (32 per GPU x 8 GPUs,
  lr 0.1, decay 0.1 every 30 epochs, 100 epochs, wd 1e-4, no warm-up) and ``lib/utils/optim.py`` lines 5-63
  (Nesterov, no weight decay on 1-D parameters).
"""

from __future__ import annotations

import pytest

from tasks.spec import task_spec

TASK = task_spec("classification")


@pytest.mark.parametrize("student, lr", [("resnet8x4", 0.05), ("wrn_16_2", 0.05), ("MobileNetV2", 0.01),
                                          ("ShuffleV1", 0.01), ("ShuffleV2", 0.01)])  # fmt: skip
def test_cifar100_is_mdistillers(student, lr):
    r = TASK.recipe("cifar100", student, "cifar100")
    assert (r.epochs, r.batch_size, r.lr, r.milestones, r.gamma) == (240, 64, lr, (150, 180, 210), 0.1)
    assert (r.momentum, r.weight_decay, r.nesterov, r.weight_decay_1d, r.warmup_epochs) == (0.9, 5e-4, False, True, 0)
    assert "mdistiller@a08d46f" in TASK.preset_sources["cifar100"]


def test_imagenet_b512_is_mdistillers_kd_and_dkd_recipe():
    r = TASK.recipe("imagenet", "resnet18", "imagenet-b512")
    assert (r.epochs, r.batch_size, r.lr, r.milestones, r.weight_decay) == (100, 512, 0.2, (30, 60, 90), 1e-4)
    assert (r.momentum, r.nesterov, r.weight_decay_1d) == (0.9, False, True)
    assert "configs/imagenet" in TASK.preset_sources["imagenet-b512"]


def test_imagenet_diffkd_is_diffkds_b1_recipe():
    r = TASK.recipe("imagenet", "resnet18", "imagenet-diffkd")
    assert (r.epochs, r.batch_size, r.lr, r.milestones, r.weight_decay) == (100, 256, 0.1, (30, 60, 90), 1e-4)
    assert (r.nesterov, r.weight_decay_1d, r.warmup_epochs) == (True, False, 0)
    assert "diffkd_b1.yaml" in TASK.preset_sources["imagenet-diffkd"]


def test_the_batch_256_imagenet_preset_says_it_is_no_papers():
    r = TASK.recipe("imagenet", "resnet18", "imagenet")
    assert (r.batch_size, r.lr) == (256, 0.1)
    assert "no paper" in TASK.preset_sources["imagenet"]


def test_every_preset_names_its_source():
    assert set(TASK.preset_sources) == set(TASK.presets)

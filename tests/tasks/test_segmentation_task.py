"""Segmentation task: losses with ignore, per-pixel KD/DKD rows, evaluation, recipes and defaults."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from methods.base import Progress, UserError, build_method
from tasks.base import get_task
from tasks.segmentation.task import SegmentationTask, slide_logits


@pytest.fixture(scope="module")
def task() -> SegmentationTask:
    t = get_task("segmentation")
    assert isinstance(t, SegmentationTask)
    return t


def _batch(n=2, h=32, w=48, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, h, w, generator=g)
    labels = torch.randint(0, k, (n, h, w), generator=g)
    labels[torch.rand(n, h, w, generator=g) < 0.3] = 255
    return images, labels


def _manual_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over non-ignored pixels of -log softmax at the label, written out."""
    logp = torch.log_softmax(logits, dim=1).permute(0, 2, 3, 1).reshape(-1, logits.shape[1])
    y = labels.reshape(-1)
    keep = y != 255
    return -logp[keep].gather(1, y[keep, None]).mean()


def _stride8_rows(logits: torch.Tensor, labels: torch.Tensor):
    """Valid-pixel rows built by loops: the label of cell (i, j) is the pixel (8i, 8j)."""
    rows, target = [], []
    for n in range(logits.shape[0]):
        for i in range(logits.shape[2]):
            for j in range(logits.shape[3]):
                y = int(labels[n, 8 * i, 8 * j])
                if y != 255:
                    rows.append(logits[n, :, i, j])
                    target.append(y)
    return torch.stack(rows), torch.tensor(target)


def test_task_losses_ignore_void_and_weight_aux(task):
    torch.manual_seed(0)
    model = task.build_model("deeplabv3_tiny_s", 4, "shapes")
    images, labels = _batch()
    torch.manual_seed(5)  # same seed -> same dropout masks in both forwards
    out = task.paired_forward(model, None, (images, labels), torch.device("cpu"))
    torch.manual_seed(5)
    raw = model.train()(images)
    assert set(out.losses) == {"seg", "aux"}
    up = nn.functional.interpolate(raw["out"], size=(32, 48), mode="bilinear", align_corners=False)
    up_aux = nn.functional.interpolate(raw["aux"], size=(32, 48), mode="bilinear", align_corners=False)
    assert torch.allclose(out.losses["seg"], _manual_ce(up, labels), atol=1e-5)
    assert torch.allclose(out.losses["aux"], 0.4 * _manual_ce(up_aux, labels), atol=1e-5)
    # without ignore handling the loss would differ: counting void pixels as class 0 changes it
    relabelled = labels.masked_fill(labels == 255, 0)
    assert not torch.allclose(out.losses["seg"], _manual_ce(up, relabelled), atol=1e-3)
    assert out.target.numel() == int((labels[:, ::8, ::8] != 255).sum())
    assert out.teacher_taps == {} and out.batch_size == 2


def test_model_without_aux_has_no_aux_loss(task):
    model = task.build_model("deeplabv3_mbv3", 3, "cityscapes")
    out = task.paired_forward(model, None, _batch(n=2, h=32, w=32, k=3), torch.device("cpu"))
    assert set(out.losses) == {"seg"}


@pytest.mark.parametrize("method", ["kd", "dkd"])
def test_per_pixel_logit_terms_equal_the_pure_losses_on_valid_pixels(task, method):
    torch.manual_seed(0)
    s_arch, t_arch = "deeplabv3_tiny_s", "deeplabv3_tiny_t"
    student = task.build_model(s_arch, 4, "shapes")
    teacher = task.build_model(t_arch, 4, "shapes")
    task.attach_taps(student, s_arch, 4, "shapes")
    task.attach_taps(teacher, t_arch, 4, "shapes")
    images, labels = _batch()
    torch.manual_seed(3)  # same seed -> same dropout masks in the rerun below
    out = task.paired_forward(student, teacher, (images, labels), torch.device("cpu"))
    torch.manual_seed(3)
    with torch.no_grad():
        s_rows, target = _stride8_rows(student.train()(images)["out"], labels)
        t_rows, _ = _stride8_rows(teacher.eval()(images)["out"], labels)
    assert torch.equal(out.target, target)
    assert torch.allclose(out.student_taps["logits"], s_rows, atol=1e-6)
    assert torch.allclose(out.teacher_taps["logits"], t_rows, atol=1e-6)
    hp = task.method_defaults(method, "shapes", t_arch, s_arch)
    m = build_method(method, task.tap_specs(s_arch, 4, "shapes"), task.tap_specs(t_arch, 4, "shapes"), **hp)
    terms = m(out.student_taps, out.teacher_taps, out.target, Progress(epoch=1, epochs=1))
    if method == "kd":
        from methods.kd import kd_loss

        expected = hp["kd_weight"] * kd_loss(s_rows, t_rows, hp["temperature"])
        assert torch.allclose(terms["kd"], expected, atol=1e-6)
    else:
        from methods.dkd import dkd_loss

        expected = dkd_loss(s_rows, t_rows, target, hp["alpha"], hp["beta"], hp["temperature"])
        assert torch.allclose(terms["dkd"], expected, atol=1e-6)


class PixelModel(nn.Module):
    """A per-pixel model (1x1 conv, no context) at stride 1: window placement cannot change its logits."""

    def __init__(self, k: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, k, 1)

    def forward(self, x):
        return {"out": self.conv(x)}


class ContextModel(nn.Module):
    """Output depends on the whole input (global mean), at stride 8, so windows do matter."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x):
        y = nn.functional.avg_pool2d(self.conv(x), 8, ceil_mode=True)
        return {"out": y + y.mean(dim=(2, 3), keepdim=True)}


def test_sliding_window_equals_whole_when_window_covers_image(task):
    torch.manual_seed(0)
    model = ContextModel().eval()
    x = torch.randn(2, 3, 40, 56)
    whole = task.predict(model, x, {"mode": "whole"})
    slide = task.predict(model, x, {"mode": "slide", "crop": (64, 64), "stride": (32, 32)})
    assert torch.allclose(whole, slide)
    # with smaller windows a context model differs, so the test above can fail
    assert not torch.allclose(whole, slide_logits(model, x, (16, 16), (8, 8)))


def test_sliding_window_averages_overlaps(task):
    torch.manual_seed(0)
    model = PixelModel().eval()
    x = torch.randn(1, 3, 20, 30)
    whole = task.predict(model, x, {"mode": "whole"})
    assert torch.allclose(slide_logits(model, x, (8, 12), (5, 7)), whole, atol=1e-6)


def test_evaluate_counts_pixels(task):
    # A model that predicts class = argmax of the first three input channels; labels chosen by hand.
    class Argmax(nn.Module):
        def forward(self, x):
            return {"out": x[:, :3] * 10}

    x = torch.zeros(1, 3, 2, 2)
    x[0, 0, 0, 0] = x[0, 1, 0, 1] = x[0, 2, 1, 0] = x[0, 0, 1, 1] = 1  # predictions 0, 1 / 2, 0
    y = torch.tensor([[[0, 1], [1, 255]]])  # gt: 0, 1 / 1, ignore
    metrics = task.evaluate(Argmax(), [(x, y)], torch.device("cpu"))
    # conf: gt0->0, gt1->1, gt1->2 ; IoU0 = 1, IoU1 = 1/2, IoU2 = 0/(0+1+0) = 0
    assert metrics["pixel_acc"] == pytest.approx(200 / 3)
    assert metrics["IoU.0"] == pytest.approx(100) and metrics["IoU.1"] == pytest.approx(50)
    assert metrics["IoU.2"] == pytest.approx(0)
    assert metrics["mIoU"] == pytest.approx(50)
    assert set(task.metrics) <= set(metrics)


def test_recipes(task):
    # Each preset's values against its source: tests/tasks/test_segmentation_presets.py.
    r = task.recipe("cityscapes", "deeplabv3_r18")
    assert r.max_iters == 40000 and r.epochs * (2975 // 16) >= 40000 > (r.epochs - 1) * (2975 // 16)
    with pytest.raises(UserError, match="valid"):
        task.recipe("cityscapes", "deeplabv3_r18", "160k")
    s = task.recipe("shapes", "deeplabv3_tiny_s")
    assert s.schedule == "poly" and task.recipe("shapes", "deeplabv3_tiny_t").epochs >= s.epochs


@pytest.mark.parametrize("method", ["kd", "dkd", "fitnet", "diffkd"])
@pytest.mark.parametrize(("t_arch", "s_arch"), [("deeplabv3_r101", "deeplabv3_r18"),
                                                ("deeplabv3_r101_cirkd", "deeplabv3_r18_cirkd")])  # fmt: skip
def test_method_defaults_build(task, method, t_arch, s_arch):
    hp = task.method_defaults(method, "cityscapes", t_arch, s_arch)
    assert hp["ce_weight"] == 1.0
    m = build_method(method, task.tap_specs(s_arch, 19, "cityscapes"), task.tap_specs(t_arch, 19, "cityscapes"), **hp)
    assert m.task_weight == 1.0
    if method == "diffkd":
        assert hp["use_ae"] and hp["ae_channels"] == 1024
        assert not task.method_defaults(method, "shapes", "deeplabv3_tiny_t", "deeplabv3_tiny_s")["use_ae"]
    if method == "fitnet" and t_arch.endswith("_cirkd"):
        # CIRKD's train_fitnet.sh (--lambda-kd 1.0 --lambda-fitnet 10.) and losses/fitnet.py (bias-free 1x1 conv,
        # 128 -> 256 channels on x_feat_after_aspp); KD at T = 1 (train_kd.py L76)
        assert hp == {"feat_weight": 10.0, "kd_weight": 1.0, "kd_temperature": 1.0, "adapter": "conv", "ce_weight": 1.0}
        assert m.hint_taps == ["hint"] and m.logit_taps == ["logits"]
        (conv,) = m.regressors.values()
        assert isinstance(conv, nn.Conv2d) and conv.weight.shape == (256, 128, 1, 1) and conv.bias is None
    elif method == "fitnet":
        assert hp == {"feat_weight": 10.0, "ce_weight": 1.0}


def test_synthetic_batch_and_registry(task):
    images, labels = task.synthetic_batch(2, 19, torch.device("cpu"))
    assert images.shape == (2, 3, 512, 1024) and labels.shape == (2, 512, 1024)
    assert task.default_num_classes("ade20k") == 150 and task.default_num_classes("shapes") == 4
    assert task.default_dataset == "shapes" and task.primary_metric == "mIoU"
    assert math.isclose(float((labels == 255).float().mean()), 0.1, abs_tol=0.01)


def test_evaluate_runs_padded_images_on_their_own_extent(task):
    from tasks.segmentation.data import collate

    class AboveMean(nn.Module):
        """Class 0 where the pixel exceeds its image's mean: padding zeros would lower the mean."""

        def forward(self, x):
            v = x[:, :1]
            return {"out": torch.cat([v - v.mean(dim=(2, 3), keepdim=True), torch.zeros_like(v)], dim=1)}

    small = (torch.arange(1, 13, dtype=torch.float).view(1, 3, 4).expand(3, 3, 4).clone(), torch.ones(3, 4).long())
    big = (torch.ones(3, 6, 6), torch.zeros(6, 6).long())
    padded = task.evaluate(AboveMean(), [collate([small, big])], torch.device("cpu"))
    alone = task.evaluate(AboveMean(), [collate([small]), collate([big])], torch.device("cpu"))
    assert padded == pytest.approx(alone, nan_ok=True)
    # small image (label 1): the 6 pixels below its own mean 6.5 are right (padding zeros would drop the mean
    # to 78 / 36 and leave 2 right); big image (label 0): all at the mean, a tie that argmax gives class 0
    assert alone["pixel_acc"] == pytest.approx(100 * (6 + 36) / 48)

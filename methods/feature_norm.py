"""Feature normalisation for dense-prediction feature distillation (PKD), shared by FitNet and DiffKD.

Raw FPN / backbone maps of two detectors (or segmenters) differ in scale by an order of magnitude and more,
so a plain ``MSE(f_s, f_t)`` on them starts far above the task losses and is dominated by the channels with
the largest activations. PKD (Cao et al., "PKD: General Distillation Framework for Object Detectors via
Pearson Correlation Coefficient", NeurIPS 2022) standardises every channel of both maps over the batch and
the spatial positions (zero mean, unit variance) and takes half the MSE of the standardised maps, which is
``1 - r`` with ``r`` the Pearson correlation of the two maps, bounded by ``[0, 2]`` whatever the scale.

As implemented in mmdetection / mmrazor (``mmdet/models/losses/pkd_loss.py``: ``norm`` with
``std(unbiased) + 1e-6``; ``F.mse_loss(norm_S, norm_T) / 2``; configs
``configs/distill/mmdet/pkd/pkd_fpn_faster-rcnn_r101_faster-rcnn_r50_2x_coco.py``: ``loss_weight=6`` on each
FPN level). Methods take it as ``feat_norm="pkd"``; ``"none"`` (their default) keeps the official losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from methods.base import upcast

#: Values of the methods' ``feat_norm`` hyper-parameter.
FEAT_NORMS = ("none", "pkd")


def pkd_norm(feat: torch.Tensor) -> torch.Tensor:
    """``[N, C, H, W]`` standardised per channel over ``N, H, W``: ``(x - mean) / (std + 1e-6)`` (unbiased std)."""
    if feat.dim() != 4:
        raise ValueError(f"pkd_norm needs [N, C, H, W], got {tuple(feat.shape)}")
    x = upcast(feat)
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True)
    return (x - mean) / (std + 1e-6)


def pkd_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """PKD's per-level loss ``MSE(norm(student), norm(teacher)) / 2`` (``1 - r``; the teacher is detached)."""
    return F.mse_loss(pkd_norm(student), pkd_norm(teacher.detach())) / 2


def feature_loss(student: torch.Tensor, teacher: torch.Tensor, feat_norm: str) -> torch.Tensor:
    """The feature-matching loss of ``feat_norm``: plain MSE (``"none"``) or :func:`pkd_loss` (``"pkd"``)."""
    if feat_norm == "pkd":
        return pkd_loss(student, teacher)
    return F.mse_loss(upcast(student), upcast(teacher.detach()))  # float32 under autocast (a no-op in fp32)

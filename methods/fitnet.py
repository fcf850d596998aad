"""FitNet: Romero et al., "FitNets: Hints for Thin Deep Nets" (ICLR 2015).

Reproduces mdistiller's ``mdistiller/distillers/FitNet.py`` and its ``ConvReg`` regressor
(``mdistiller/distillers/_common.py``): a small learnable regressor maps the student's hint feature to
the teacher's channels and spatial size, and the loss is ``feat_weight * MSE(regressor(f_s), f_t)``
(mean over all elements; mdistiller's ``FEAT_WEIGHT`` 100, ``CE_WEIGHT`` 1).

mdistiller sizes the regressor with a dummy forward at ``INPUT_SIZE``; here the tap specs' strides
replace it (detectron2-style shapes without running the model). Strides fix the *ratio* of the two
maps, which is all three of ConvReg's common cases need; ``input_size`` gives absolute sizes for the
remaining case (a student map more than twice the teacher's, whose kernel depends on the size).

Beyond mdistiller, every ``hint`` tap gets its own regressor (one hint layer in classification, one
per FPN level in detection), or with ``shared=True`` one regressor serves all of them; and
``feat_norm="pkd"`` compares the regressed student and the teacher map after PKD's per-channel
standardisation (:mod:`methods.feature_norm`), the scaling dense-prediction KD uses on FPN maps.

Named options for the dense-prediction settings the papers ran (each off at its default, mdistiller's FitNet):

* ``adapter``: the regressor. ``conv_bn_relu`` is mdistiller's ``ConvReg``; its final ReLU cannot produce the
  negative half of an FPN map (about half of a detector's FPN activations are negative), so ``conv_bn`` drops it;
  ``conv`` is CIRKD's bias-free 1x1 conv (``losses/fitnet.py``); ``none`` compares the maps directly, as mmrazor's
  PKD does (equal channels and strides needed).
* ``taps``: distil only these hint taps (mmrazor's PKD distils FPN levels P2-P5 of a Faster R-CNN, not P6).
* ``kd_weight`` / ``kd_temperature``: add the logit KD term (:func:`methods.kd.kd_loss`) on the logits taps, as
  CIRKD's FitNet script does (``--lambda-kd 1.0 --lambda-fitnet 10.``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

import torch
from torch import nn

from methods.base import (
    LogUniform,
    Method,
    Progress,
    Range,
    TapSpec,
    UserError,
    fetch,
    paired_taps,
    register,
    select_taps,
)
from methods.feature_norm import feature_loss
from methods.kd import kd_loss
from methods.taps import chosen_taps


class ConvReg(nn.Module):
    """mdistiller's convolutional regressor: ``conv -> BatchNorm -> ReLU`` (ReLU only if ``use_relu``).

    The conv is chosen from the student's and teacher's map heights, in mdistiller's order:

    * ``s_H == 2 * t_H``: ``Conv2d(s_C, t_C, 3, stride=2, padding=1)`` halves the student map;
    * ``2 * s_H == t_H``: ``ConvTranspose2d(s_C, t_C, 4, stride=2, padding=1)`` doubles it;
    * ``s_H >= t_H``: ``Conv2d(s_C, t_C, (1 + s_H - t_H, 1 + s_W - t_W))`` without padding shrinks it
      to the teacher's size (a 1x1 conv when the sizes are equal);
    * otherwise the student map is too small: :class:`UserError`.

    Args:
        s_channels / t_channels: channels of the student and teacher maps.
        s_size / t_size: ``(H, W)`` of the student and teacher maps.
        use_relu: apply the final ReLU (mdistiller's default, used by FitNet).
        use_bn: apply the BatchNorm (mdistiller's ``ConvReg`` always does).
    """

    def __init__(
        self,
        s_channels: int,
        t_channels: int,
        s_size: tuple[int, int],
        t_size: tuple[int, int],
        use_relu: bool = True,
        use_bn: bool = True,
    ) -> None:
        super().__init__()
        (s_h, s_w), (t_h, t_w) = s_size, t_size
        self.use_relu = use_relu
        self.conv: nn.Module
        if s_h == 2 * t_h:
            self.conv = nn.Conv2d(s_channels, t_channels, kernel_size=3, stride=2, padding=1)
        elif 2 * s_h == t_h:
            self.conv = nn.ConvTranspose2d(s_channels, t_channels, kernel_size=4, stride=2, padding=1)
        elif s_h >= t_h:
            if s_w < t_w:
                raise UserError(f"FitNet regressor: student map {s_size} is narrower than the teacher's {t_size}")
            self.conv = nn.Conv2d(s_channels, t_channels, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            raise UserError(
                f"FitNet regressor: student map {s_size} cannot be mapped onto teacher map {t_size}; "
                "valid: student height equal to, larger than, or exactly half the teacher's"
            )
        self.bn = nn.BatchNorm2d(t_channels) if use_bn else nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.relu(x) if self.use_relu else x


#: ``FitNet(adapter=...)`` values (see the module docstring).
ADAPTERS = ("conv_bn_relu", "conv_bn", "conv", "none")


def _parse_input_size(input_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if input_size is None:
        return None
    if isinstance(input_size, int):
        return (input_size, input_size)
    size = tuple(input_size)
    if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
        raise UserError(f"method 'fitnet': input_size must be an int or [H, W] of positive ints, got {input_size!r}")
    return size  # type: ignore[return-value]


def map_sizes(
    s_stride: int, t_stride: int, input_size: tuple[int, int] | None, tap: str
) -> tuple[tuple[int, int], tuple[int, int]]:
    """Student and teacher ``(H, W)`` for :class:`ConvReg`, from strides (and ``input_size`` if given).

    With ``input_size`` the sizes are ``ceil(size / stride)`` (what stride-2 convs with padding give).
    Without it, stand-in sizes with the right ratio are used; only ratios 1, 2 and 1/2 are decidable.
    """
    if s_stride <= 0 or t_stride <= 0:
        raise UserError(
            f"method 'fitnet': hint tap {tap!r} has no spatial stride (student {s_stride}, teacher {t_stride})"
        )
    if input_size is not None:
        h, w = input_size
        return (math.ceil(h / s_stride), math.ceil(w / s_stride)), (math.ceil(h / t_stride), math.ceil(w / t_stride))
    if s_stride == t_stride:
        return (1, 1), (1, 1)
    if 2 * s_stride == t_stride:
        return (2, 2), (1, 1)
    if s_stride == 2 * t_stride:
        return (1, 1), (2, 2)
    if s_stride < t_stride:
        raise UserError(
            f"method 'fitnet': hint tap {tap!r} has student stride {s_stride} vs teacher stride {t_stride}; "
            "set input_size=[H, W] so the regressor kernel can be sized"
        )
    raise UserError(
        f"method 'fitnet': hint tap {tap!r}: student map (stride {s_stride}) is smaller than half the teacher's "
        f"(stride {t_stride}); valid stride ratios: student stride <= 2 x teacher stride"
    )


@register
class FitNet(Method):
    """Hint-based feature distillation with a learnable regressor per ``hint`` tap.

    Args:
        student_taps / teacher_taps: tap specs; each student ``hint`` tap must be a teacher ``hint`` tap
            of the same name.
        feat_weight: weight of the summed MSE terms (mdistiller ``FEAT_WEIGHT`` 100).
        ce_weight: weight on the task loss (becomes :attr:`task_weight`).
        shared: one regressor for all hint taps (FPN levels), which then need equal channels and strides.
        feat_norm: ``"none"`` (mdistiller: plain MSE) or ``"pkd"`` (per tap ``MSE(norm(reg(f_s)), norm(f_t)) / 2``,
            PKD's loss; see :mod:`methods.feature_norm`).
        input_size: ``[H, W]`` (or an int) of the network input, to give absolute map sizes.
        adapter: the regressor: ``conv_bn_relu`` (mdistiller), ``conv_bn``, ``conv`` (CIRKD: a bias-free 1x1 conv)
            or ``none`` (PKD: no adapter).
        taps: the hint taps to distil (default: every hint tap both models have).
        kd_weight: weight of a logit KD term beside the hints (0: none, mdistiller; CIRKD's FitNet: 1).
        kd_temperature: that term's temperature.

    Attributes:
        regressors: ``ModuleDict`` of :class:`ConvReg` keyed by tap name with ``.`` replaced by ``_``
            (``ModuleDict`` keys cannot hold dots), or a single ``"shared"`` entry.
    """

    name = "fitnet"
    consumes = ("hint",)

    def __init__(
        self,
        student_taps: Mapping[str, TapSpec],
        teacher_taps: Mapping[str, TapSpec],
        feat_weight: Annotated[float, Range(ge=0), LogUniform(1, 1000)] = 100.0,
        ce_weight: Annotated[float, Range(ge=0)] = 1.0,
        shared: bool = False,
        input_size: int | Sequence[int] | None = None,
        feat_norm: Literal["none", "pkd"] = "none",
        adapter: Literal["conv_bn_relu", "conv_bn", "conv", "none"] = "conv_bn_relu",
        taps: Sequence[str] | None = None,
        kd_weight: Annotated[float, Range(ge=0)] = 0.0,
        kd_temperature: Annotated[float, Range(gt=0)] = 1.0,
    ) -> None:
        super().__init__(student_taps, teacher_taps)
        self.feat_weight = float(feat_weight)
        self.feat_norm = str(feat_norm)
        self.task_weight = float(ce_weight)
        self.shared = bool(shared)
        self.adapter = str(adapter)
        self.kd_weight, self.kd_temperature = float(kd_weight), float(kd_temperature)
        size = _parse_input_size(input_size)
        s_hints, t_hints = select_taps(student_taps, "hint"), select_taps(teacher_taps, "hint")
        self.hint_taps = chosen_taps(self.name, paired_taps(self.name, student_taps, teacher_taps, "hint"), taps)
        self.logit_taps = paired_taps(self.name, student_taps, teacher_taps, "logits") if self.kd_weight else []
        if self.kd_weight and not self.logit_taps:
            raise UserError("method 'fitnet': kd_weight > 0 needs a logits tap, which this pair does not provide")
        self.regressors = nn.ModuleDict()
        self._keys: dict[str, str] = {}
        if self.shared:
            shapes = {(s_hints[t].channels, s_hints[t].stride, t_hints[t].channels, t_hints[t].stride)
                      for t in self.hint_taps}
            if len(shapes) != 1:
                raise UserError(
                    "method 'fitnet': shared=True needs hint taps with equal channels and strides; got "
                    + ", ".join(
                        f"{t}: {s_hints[t].channels}ch/s{s_hints[t].stride} -> "
                        f"{t_hints[t].channels}ch/s{t_hints[t].stride}"
                        for t in s_hints
                    )
                )
            first = self.hint_taps[0]
            self.regressors["shared"] = self._make(s_hints[first], t_hints[first], size, first)
            self._keys = dict.fromkeys(self.hint_taps, "shared")
        else:
            for tap in self.hint_taps:
                key = tap.replace(".", "_")
                if key in self.regressors:
                    raise ValueError(f"fitnet: hint taps collide on module key {key!r}")
                self.regressors[key] = self._make(s_hints[tap], t_hints[tap], size, tap)
                self._keys[tap] = key

    def _make(self, s: TapSpec, t: TapSpec, size: tuple[int, int] | None, tap: str) -> nn.Module:
        if self.adapter in ("conv", "none"):
            if s.stride != t.stride or (self.adapter == "none" and s.channels != t.channels):
                raise UserError(
                    f"method 'fitnet': adapter={self.adapter!r} needs hint tap {tap!r} at the teacher's stride"
                    + (" and channels" if self.adapter == "none" else "")
                    + f" (student {s.channels}ch/s{s.stride}, teacher {t.channels}ch/s{t.stride}); use conv_bn"
                )
            return nn.Conv2d(s.channels, t.channels, kernel_size=1, bias=False) if self.adapter == "conv" else (
                nn.Identity())  # fmt: skip
        s_size, t_size = map_sizes(s.stride, t.stride, size, tap)
        return ConvReg(s.channels, t.channels, s_size, t_size, use_relu=self.adapter == "conv_bn_relu")

    def forward(
        self,
        student: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor],
        target: torch.Tensor | None,
        progress: Progress,
    ) -> dict[str, torch.Tensor]:
        total = None
        for tap in self.hint_taps:
            for who, tensors in (("student", student), ("teacher", teacher)):
                if tap not in tensors:
                    raise UserError(
                        f"method 'fitnet': the {who} forward captured no hint tap {tap!r} "
                        f"(captured: {', '.join(tensors) or 'none'})"
                    )
            f_s = self.regressors[self._keys[tap]](fetch(self.name, student, tap, "student"))
            f_t = fetch(self.name, teacher, tap, "teacher").detach()
            if f_s.shape != f_t.shape:
                raise UserError(
                    f"method 'fitnet': hint tap {tap!r}: regressed student map {tuple(f_s.shape)} does not match "
                    f"teacher map {tuple(f_t.shape)}; set input_size=[H, W] to the real input size"
                )
            term = feature_loss(f_s, f_t, self.feat_norm)  # float32 under autocast
            total = term if total is None else total + term
        terms = {"fitnet": self.feat_weight * total}
        if self.kd_weight:
            kd = sum(kd_loss(fetch(self.name, student, tap, "student"), fetch(self.name, teacher, tap, "teacher"),
                             self.kd_temperature) for tap in self.logit_taps)  # fmt: skip
            terms["kd"] = self.kd_weight * kd
        return terms

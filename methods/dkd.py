"""DKD: Zhao et al., "Decoupled Knowledge Distillation" (CVPR 2022).

Reproduces mdistiller's ``mdistiller/distillers/DKD.py``. The classical KD loss splits exactly into

* TCKD, the binary KL between ``[p_t, 1 - p_t]`` of teacher and student (how sure each is of the
  target class), and
* NCKD, the KL between the teacher's and student's distributions over the *non-target* classes,
  renormalised,

with ``KD = TCKD + (1 - p_t^teacher) * NCKD``. DKD frees the coupling weight: ``T**2 * (alpha * TCKD +
beta * NCKD)``, summed over rows and divided by the batch size, and ramps the whole term in linearly over
``warmup`` epochs.

Faithful quirk kept: the non-target distribution is obtained as mdistiller does, by subtracting
``1000`` from the target logit (already divided by ``T``) before the softmax, not by removing it.

Numerical fix (value unchanged where mdistiller is finite): mdistiller takes ``log`` of the student's
``[p_t, 1 - p_t]`` built from the softmax, which is ``log(0)`` whenever ``p_t`` rounds to exactly 1 (all
non-target probabilities underflow) or to 0 (a very negative target logit) in float32, giving an
``inf``/``nan`` loss and gradient. Here the two log-probabilities are computed in log space with
``logsumexp`` (``log p_t = z_t - lse(z)``, ``log(1 - p_t) = lse(z_{-t}) - lse(z)``), which is the same
quantity and is always finite.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import torch
import torch.nn.functional as F

from methods.base import (
    LogUniform,
    Method,
    Progress,
    Range,
    TapSpec,
    Uniform,
    UserError,
    fetch,
    paired_taps,
    register,
    upcast,
)


def _binary_log_probs(logits: torch.Tensor, target: torch.Tensor, gt_mask: torch.Tensor) -> torch.Tensor:
    """``[log p_t, log(1 - p_t)]`` per row, computed without ever forming ``log(0)``."""
    lse_all = torch.logsumexp(logits, dim=1, keepdim=True)
    log_target = logits.gather(1, target.unsqueeze(1)) - lse_all
    log_other = torch.logsumexp(logits.masked_fill(gt_mask, float("-inf")), dim=1, keepdim=True) - lse_all
    return torch.cat([log_target, log_other], dim=1)


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> torch.Tensor:
    """``T**2 * (alpha * TCKD + beta * NCKD)``, summed over rows and divided by the number of rows.

    Args:
        student_logits: ``[N, K]`` student scores, ``K >= 2``.
        teacher_logits: ``[N, K]`` teacher scores.
        target: ``[N]`` integer class of each row.
        alpha: weight of TCKD (target-class KD).
        beta: weight of NCKD (non-target-class KD).
        temperature: softening temperature ``T``.
    """
    if student_logits.shape[1] < 2:
        raise UserError(f"DKD needs at least 2 classes, got logits of shape {tuple(student_logits.shape)}")
    target = target.reshape(-1).long()
    n = target.shape[0]
    gt_mask = torch.zeros_like(student_logits, dtype=torch.bool).scatter_(1, target.unsqueeze(1), True)
    z_s = upcast(student_logits) / temperature  # float32 under autocast too (a no-op in fp32)
    z_t = upcast(teacher_logits) / temperature

    # TCKD: binary KL over [p_t, 1 - p_t]. The teacher side is mdistiller's (sums of softmax masses;
    # kl_div treats a zero teacher mass as contributing 0); the student side is in log space.
    p_t = F.softmax(z_t, dim=1)
    b_t = torch.cat([(p_t * gt_mask).sum(1, keepdim=True), (p_t * ~gt_mask).sum(1, keepdim=True)], dim=1)
    tckd = F.kl_div(_binary_log_probs(z_s, target, gt_mask), b_t, reduction="sum") * temperature**2 / n

    # NCKD: mdistiller's masking, subtracting 1000 from the (temperature-scaled) target logit.
    offset = 1000.0 * gt_mask.to(z_s.dtype)
    nckd = (
        F.kl_div(F.log_softmax(z_s - offset, dim=1), F.softmax(z_t - offset, dim=1), reduction="sum")
        * temperature**2
        / n
    )
    return alpha * tckd + beta * nckd


def warmup_factor(epoch: int, warmup: float) -> float:
    """mdistiller's ``min(epoch / warmup, 1)`` with a 1-based epoch; ``warmup <= 0`` means no ramp."""
    return 1.0 if warmup <= 0 else min(epoch / warmup, 1.0)


@register
class DKD(Method):
    """Decoupled KD on every ``logits`` tap both models share (a task normally declares one).

    Args:
        student_taps / teacher_taps: tap specs.
        alpha: TCKD weight.
        beta: NCKD weight (per pair: see :func:`tasks.classification.spec.dkd_beta`).
        temperature: softening temperature ``T``.
        ce_weight: weight on the task loss (becomes :attr:`task_weight`).
        warmup: epochs over which the DKD term ramps linearly to full weight; ``<= 0`` disables it.
    """

    name = "dkd"
    consumes = ("logits",)

    def __init__(
        self,
        student_taps: Mapping[str, TapSpec],
        teacher_taps: Mapping[str, TapSpec],
        alpha: Annotated[float, Range(ge=0), LogUniform(0.25, 4)] = 1.0,
        beta: Annotated[float, Range(ge=0), LogUniform(1, 16)] = 8.0,
        temperature: Annotated[float, Range(gt=0), Uniform(1, 8)] = 4.0,
        ce_weight: Annotated[float, Range(ge=0)] = 1.0,
        warmup: float = 20,
    ) -> None:
        super().__init__(student_taps, teacher_taps)
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.temperature = float(temperature)
        self.task_weight = float(ce_weight)
        self.warmup = warmup
        self.logits_taps = paired_taps(self.name, student_taps, teacher_taps, "logits")

    def forward(
        self,
        student: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor],
        target: torch.Tensor | None,
        progress: Progress,
    ) -> dict[str, torch.Tensor]:
        if target is None:
            raise UserError("method 'dkd' needs the integer target of each logits row; this task gave none")
        total = None
        for name in self.logits_taps:
            z_s = fetch(self.name, student, name, "student")
            z_t = fetch(self.name, teacher, name, "teacher").detach()
            if z_s.shape[0] != target.numel():
                raise ValueError(f"dkd: tap {name!r} has {z_s.shape[0]} rows but target has {target.numel()}")
            term = dkd_loss(z_s, z_t, target, self.alpha, self.beta, self.temperature)
            total = term if total is None else total + term
        return {"dkd": warmup_factor(progress.epoch, self.warmup) * total}

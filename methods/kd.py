"""KD: Hinton et al., "Distilling the Knowledge in a Neural Network" (2015).

Reproduces mdistiller's ``mdistiller/distillers/KD.py``: the student matches the teacher's softened
class distribution under a temperature ``T``; the KL divergence is summed over classes, averaged over
rows and multiplied by ``T**2`` so its gradient keeps the same scale as the cross-entropy whatever ``T``
is. The CIFAR-100 defaults are mdistiller's ``CFG.KD`` (``T=4``, ``CE_WEIGHT=0.1``,
``KD_WEIGHT=0.9``); ImageNet's (``T=1``, 0.5/0.5) come from the task's ``method_defaults``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

import torch
import torch.nn.functional as F

from methods.base import LogUniform, Method, Progress, Range, TapSpec, Uniform, fetch, paired_taps, register, upcast


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T**2 * mean_rows KL(softmax(z_t / T) || softmax(z_s / T))``.

    Args:
        student_logits: ``[N, K]`` student scores.
        teacher_logits: ``[N, K]`` teacher scores (the target distribution; not differentiated here
            only because the caller usually computes it under ``no_grad``).
        temperature: softening temperature ``T > 0``.

    Returns:
        A scalar: the per-row KL summed over classes, averaged over rows, times ``T**2``.
    """
    # float32 whatever the autocast dtype (a no-op in fp32): softmax in bf16 loses the small probabilities KD is about.
    log_p_s = F.log_softmax(upcast(student_logits) / temperature, dim=1)
    p_t = F.softmax(upcast(teacher_logits) / temperature, dim=1)
    # kl_div(input=log q, target=p) = sum p * (log p - log q), with 0 * log 0 = 0 for the teacher.
    per_row = F.kl_div(log_p_s, p_t, reduction="none").sum(dim=1)
    return per_row.mean() * temperature**2


@register
class KD(Method):
    """Logit distillation with a softened KL divergence.

    Args:
        student_taps / teacher_taps: tap specs; every ``logits`` tap both share is distilled (a task
            normally declares exactly one) and the terms are summed.
        temperature: softening temperature ``T``.
        ce_weight: weight on the task loss (becomes :attr:`task_weight`).
        kd_weight: weight on the KD term.
    """

    name = "kd"
    consumes = ("logits",)

    def __init__(
        self,
        student_taps: Mapping[str, TapSpec],
        teacher_taps: Mapping[str, TapSpec],
        temperature: Annotated[float, Range(gt=0), LogUniform(1, 16)] = 4.0,
        ce_weight: Annotated[float, Range(ge=0), Uniform(0, 1)] = 0.1,
        kd_weight: Annotated[float, Range(ge=0), LogUniform(0.1, 4)] = 0.9,
    ) -> None:
        super().__init__(student_taps, teacher_taps)
        self.temperature = float(temperature)
        self.task_weight = float(ce_weight)
        self.kd_weight = float(kd_weight)
        self.logits_taps = paired_taps(self.name, student_taps, teacher_taps, "logits")

    def forward(
        self,
        student: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor],
        target: torch.Tensor | None,
        progress: Progress,
    ) -> dict[str, torch.Tensor]:
        total = None
        for name in self.logits_taps:
            z_s = fetch(self.name, student, name, "student")
            # Detached: the teacher is a fixed target even if a caller forgot no_grad.
            z_t = fetch(self.name, teacher, name, "teacher").detach()
            term = kd_loss(z_s, z_t, self.temperature)
            total = term if total is None else total + term
        return {"kd": self.kd_weight * total}

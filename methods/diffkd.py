"""DiffKD: Knowledge Diffusion for Distillation (Huang et al., NeurIPS 2023).

The student's feature is treated as a *noisy* teacher feature: a small diffusion model trained on the
teacher's features (epsilon-prediction, DDIM) denoises it, and the distillation loss compares the
denoised student feature with the teacher's. Reproduces the official classification code
(``hunto/image_classification_sota``, ``lib/models/losses/diffkd/`` and ``lib/models/losses/kd_loss.py``):

* :class:`DiffKD` has the official sub-modules and attribute names (``ae``, ``trans``, ``model``,
  ``noise_adapter``, ``proj``), so official checkpoints' keys match; its ``forward`` returns the official
  ``(refined_student, teacher_or_latent, diffusion_loss, ae_loss)``.
* Classification distills the last stage (``kernel_size=3``, MSE) and the logits viewed as ``[N, K, 1, 1]``
  (``kernel_size=1``, KL with ``tau=1``); the official total is ``CE + sum_taps(kd + diff + ae)``, all
  weights 1 (``ori_loss_weight = kd_loss_weight = 1``).

Differences from the official code, none of which changes the math in the official setting:

* our own :class:`~methods.ddim.DDIMScheduler` (no diffusers), whose ``alphas_cumprod`` stays float32
  under autocast (the official one is cast to fp16 by ``add_noise`` and then yields NaN at ``t = 0``);
* the teacher tensor is detached on entry (the official relies on the teacher running under ``no_grad``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import (
    IntUniform,
    LogUniform,
    Method,
    Progress,
    Range,
    TapSpec,
    UserError,
    register,
    select_taps,
    upcast,
)
from methods.ddim import DDIMScheduler
from methods.feature_norm import feature_loss, pkd_norm
from methods.taps import chosen_taps

#: Rows of the learned time embedding (official ``nn.Embedding(1280, C)``); bounds ``num_train_timesteps``.
TIME_EMBEDDING_ROWS = 1280


# ---------------------------------------------------------------------------------------------- sub-modules
class Bottleneck(nn.Module):
    """Residual 1x1 -> 3x3 -> 1x1 bottleneck (width ``in_channels // reduction``), each conv + BN."""

    def __init__(self, in_channels: int, out_channels: int, reduction: int = 4) -> None:
        super().__init__()
        mid = in_channels // reduction
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, mid, 1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, out_channels, 1),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + x


class NoiseAdapter(nn.Module):
    """Adaptive noise matching: predicts per sample how much of the student feature to keep.

    ``gamma = softmax(Linear(pool(f(x))))[:, 0]``; the denoiser starts from ``gamma x + (1 - gamma) noise``,
    so a student feature judged noisier gets more Gaussian noise before denoising. ``f`` is a bottleneck
    (reduction 8) + global pool for feature maps, a 2x-expansion 1x1 MLP for ``kernel_size=1`` (logits).
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size == 3:
            self.feat = nn.Sequential(Bottleneck(channels, channels, reduction=8), nn.AdaptiveAvgPool2d(1))
        else:
            self.feat = nn.Sequential(
                nn.Conv2d(channels, channels * 2, 1),
                nn.BatchNorm2d(channels * 2),
                nn.ReLU(inplace=True),
                nn.Conv2d(channels * 2, channels, 1),
                nn.BatchNorm2d(channels),
            )
        self.pred = nn.Linear(channels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``gamma`` of shape ``[N]`` in (0, 1)."""
        return self.pred(self.feat(x).flatten(1)).softmax(1)[:, 0]


class DiffusionModel(nn.Module):
    """The light noise predictor ``eps(x_t, t)``: a learned time embedding added per channel, then convs.

    ``kernel_size=3``: two bottlenecks + 1x1 conv + BN; ``kernel_size=1``: two 4x-expansion 1x1 MLP blocks.
    """

    def __init__(self, channels_in: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.time_embedding = nn.Embedding(TIME_EMBEDDING_ROWS, channels_in)
        c = channels_in
        if kernel_size == 3:
            self.pred = nn.Sequential(Bottleneck(c, c), Bottleneck(c, c), nn.Conv2d(c, c, 1), nn.BatchNorm2d(c))
        else:
            self.pred = nn.Sequential(
                nn.Conv2d(c, c * 4, 1),
                nn.BatchNorm2d(c * 4),
                nn.ReLU(inplace=True),
                nn.Conv2d(c * 4, c, 1),
                nn.BatchNorm2d(c),
                nn.Conv2d(c, c * 4, 1),
                nn.BatchNorm2d(c * 4),
                nn.ReLU(inplace=True),
                nn.Conv2d(c * 4, c, 1),
            )

    def forward(self, noisy: torch.Tensor, t: torch.Tensor | int) -> torch.Tensor:
        """``t``: one timestep for the whole batch (int or 0-d tensor) or one per sample (``[N]``)."""
        t = torch.as_tensor(t, device=noisy.device).long()
        return self.pred(noisy + self.time_embedding(t)[..., None, None])


class AutoEncoder(nn.Module):
    """Linear autoencoder compressing the teacher feature: 1x1 conv + BN encoder, 1x1 conv decoder."""

    def __init__(self, channels: int, latent_channels: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, latent_channels, 1, padding=0), nn.BatchNorm2d(latent_channels)
        )
        self.decoder = nn.Sequential(nn.Conv2d(latent_channels, channels, 1, padding=0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(latent, reconstruction)``."""
        hidden = self.encoder(x)
        return hidden, self.decoder(hidden)

    def forward_encoder(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


# ---------------------------------------------------------------------------------------------- DiffKD
class DiffKD(nn.Module):
    """The official DiffKD module for one student/teacher feature pair.

    Args:
        student_channels: channels of the student feature (classes for logits).
        teacher_channels: channels of the teacher feature.
        kernel_size: 3 for feature maps, 1 for logits viewed as ``[N, K, 1, 1]``.
        inference_steps: denoising steps; the official runs the second half of a ``2 * inference_steps``
            DDIM schedule (``t = 400, 300, 200, 100, 0`` for 5 steps of a 1000-step schedule).
        num_train_timesteps: length of the training noise schedule (at most 1280, the embedding's rows).
        use_ae: compress the teacher feature with a linear autoencoder and diffuse in its latent space.
        ae_channels: latent channels (official default ``teacher_channels // 2``).
    """

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        kernel_size: int = 3,
        inference_steps: int = 5,
        num_train_timesteps: int = 1000,
        use_ae: bool = False,
        ae_channels: int | None = None,
    ) -> None:
        super().__init__()
        if kernel_size not in (1, 3):
            raise UserError(f"DiffKD kernel_size must be 3 (feature maps) or 1 (logits), got {kernel_size}")
        if not 1 <= num_train_timesteps <= TIME_EMBEDDING_ROWS:
            raise UserError(
                f"DiffKD num_train_timesteps must be in [1, {TIME_EMBEDDING_ROWS}], got {num_train_timesteps}"
            )
        if not 1 <= 2 * inference_steps <= num_train_timesteps:
            raise UserError(
                f"DiffKD inference_steps must be in [1, {num_train_timesteps // 2}] "
                f"(half of num_train_timesteps={num_train_timesteps}), got {inference_steps}"
            )
        self.use_ae = use_ae
        self.diffusion_inference_steps = inference_steps
        if use_ae:
            if ae_channels is None:
                ae_channels = teacher_channels // 2
            self.ae = AutoEncoder(teacher_channels, ae_channels)
            teacher_channels = ae_channels
        if kernel_size == 3 and teacher_channels < 8:
            raise UserError(
                f"DiffKD with kernel_size=3 needs at least 8 teacher (or latent) channels (its noise adapter "
                f"is a bottleneck of width channels // 8), got {teacher_channels}"
            )
        self.trans = nn.Conv2d(student_channels, teacher_channels, 1)
        self.model = DiffusionModel(channels_in=teacher_channels, kernel_size=kernel_size)
        self.scheduler = DDIMScheduler(num_train_timesteps=num_train_timesteps)
        self.noise_adapter = NoiseAdapter(teacher_channels, kernel_size)
        self.proj = nn.Sequential(nn.Conv2d(teacher_channels, teacher_channels, 1), nn.BatchNorm2d(teacher_channels))
        # The denoising steps, decided once: the second half of a 2 * inference_steps DDIM schedule, as Python
        # ints for the scheduler and as a (non-persistent) device buffer for the time embedding, so the loop
        # issues no host->device copy per step and its shapes are static (CUDA graphs, torch.compile).
        steps = self.scheduler.set_timesteps(inference_steps * 2)
        steps = steps[len(steps) // 2 :]
        self._steps: list[int] = steps.tolist()
        self.register_buffer("step_timesteps", steps.clone(), persistent=False)

    def denoise(self, feat: torch.Tensor) -> torch.Tensor:
        """The official ``DDIMPipeline`` with the noise adapter: mix with noise, then DDIM steps (eta = 0).

        The noise is drawn like the official: ``torch.randn`` on ``feat``'s device *and dtype*. Nothing is
        detached: the KD loss trains ``trans``, the noise adapter and the diffusion model through this loop.
        """
        noise = torch.randn(feat.shape, device=feat.device, dtype=feat.dtype)
        image = self.scheduler.mix_with_noise(feat, noise, self.noise_adapter(feat))
        for i, t in enumerate(self._steps):
            noise_pred = self.model(image, self.step_timesteps[i])
            image = self.scheduler.step(noise_pred, t, image, eta=0.0, use_clipped_model_output=True).prev_sample
        return image

    def ddim_loss(self, gt_feat: torch.Tensor) -> torch.Tensor:
        """Epsilon-prediction loss on the (detached) teacher feature: ``MSE(eps(x_t, t), eps)``, ``t ~ U[0, T)``.

        As the official: float32 noise (``torch.randn`` without a dtype) and one random ``t`` per sample.
        """
        noise = torch.randn(gt_feat.shape, device=gt_feat.device)
        t = torch.randint(0, self.scheduler.num_train_timesteps, (gt_feat.shape[0],), device=gt_feat.device)
        noisy = self.scheduler.add_noise(gt_feat, noise, t)
        return F.mse_loss(upcast(self.model(noisy, t)), noise)

    def forward(
        self, student_feat: torch.Tensor, teacher_feat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Denoise the student feature and train the diffusion model on the teacher's.

        Args:
            student_feat: ``[N, C_s, H, W]``.
            teacher_feat: ``[N, C_t, H, W]``.

        Returns:
            ``(refined_student [N, C, H, W], teacher_target, diffusion_loss, ae_loss)`` in the official
            order, where ``C`` and ``teacher_target`` are the teacher's channels/feature, or the AE latent's
            (detached) with ``use_ae``; ``ae_loss`` (reconstruction MSE) is ``None`` without the AE.
        """
        teacher_feat = teacher_feat.detach()
        student_feat = self.trans(student_feat)
        if self.use_ae:
            hidden, rec = self.ae(teacher_feat)
            rec_loss: torch.Tensor | None = F.mse_loss(upcast(teacher_feat), upcast(rec))
            teacher_feat = hidden.detach()
        else:
            rec_loss = None
        refined = self.proj(self.denoise(student_feat))
        return refined, teacher_feat, self.ddim_loss(teacher_feat), rec_loss


# ---------------------------------------------------------------------------------------------- pure losses
def feature_kd_loss(refined: torch.Tensor, target: torch.Tensor, feat_norm: str = "none") -> torch.Tensor:
    """DiffKD's feature loss: ``MSE(denoised student, teacher-or-latent)``, mean over all elements (official);
    with ``feat_norm="pkd"`` PKD's ``MSE(norm(refined), norm(target)) / 2`` (:mod:`methods.feature_norm`)."""
    return feature_loss(refined, target, feat_norm)  # float32 under autocast (a no-op in fp32)


def logits_kd_loss(
    refined_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(teacher || denoised student) on logits, as the official ``KLDivergence(tau)`` (``batchmean``).

    ``tau^2 * sum_k p_t log(p_t / p_s) / N`` with softmax over dim 1; accepts ``[N, K]`` or ``[N, K, 1, 1]``.
    """
    s = upcast(refined_logits.flatten(1)) / temperature  # float32 under autocast (a no-op in fp32)
    t = upcast(teacher_logits.detach().flatten(1)) / temperature
    return temperature**2 * F.kl_div(F.log_softmax(s, dim=1), F.softmax(t, dim=1), reduction="batchmean")


# ---------------------------------------------------------------------------------------------- the method
def _module_key(name: str) -> str:
    """``nn.ModuleDict`` keys cannot contain dots (``fpn.p3``)."""
    return name.replace(".", "_")


@register
class DiffKDMethod(Method):
    """DiffKD over every ``feature`` tap (``kernel_size=3``) and, optionally, the ``logits`` tap (``kernel_size=1``).

    Loss terms (already weighted, summed over taps; absent terms omitted):
    ``kd_feat = kd_weight * sum MSE(denoised student, teacher-or-latent)``,
    ``kd_logits = kd_weight * sum KL_tau(denoised student logits, teacher logits)``,
    ``diff = diff_weight * sum diffusion losses`` (feature and logits modules),
    ``ae = ae_weight * sum AE reconstruction losses`` (feature modules with ``use_ae``).
    The official classification total is ``CE + kd_feat + kd_logits + diff + ae`` (all weights 1).

    Modules live in ``self.diff`` keyed by tap name (dots -> underscores), so the official student
    checkpoint's ``_diff.layer4.*`` / ``_diff.fc.*`` map to ``diff.feat.*`` / ``diff.logits.*``.

    ``share_levels=True`` builds a single feature module (key ``"shared"``) applied to every feature tap,
    which then must all have the same student and the same teacher channels. This is our choice for
    detection FPN levels (one denoiser learns the teacher's feature distribution across scales, with a
    fifth of the parameters); each level contributes its own terms to the sums. Without it (the default)
    every tap gets its own module, as the official classification code does per distilled layer.

    Args:
        student_taps: student tap specs (needs a ``feature`` tap; ``logits`` optional).
        teacher_taps: teacher tap specs with the same names.
        use_ae: compress teacher features with a linear autoencoder (official ImageNet: True, 1024).
        ae_channels: AE latent channels (``None``: teacher channels // 2).
        inference_steps: denoising steps (official 5).
        num_train_timesteps: diffusion schedule length (official 1000).
        feat_kernel_size: kernel size of the feature modules (official 3).
        distill_logits: also run DiffKD (kernel 1) + KL on the ``logits`` tap when both sides have one.
        kd_weight: weight of the MSE / KL distillation terms (official ``kd_loss_weight`` 1).
        diff_weight: weight of the diffusion (noise-prediction) losses (official 1).
        ae_weight: weight of the AE reconstruction losses (official 1).
        logit_temperature: KL temperature on the logits (official ``tau`` 1).
        share_levels: one feature module for all feature taps (see above).
        feat_norm: ``"none"`` (official) or ``"pkd"``: both feature maps are standardised per channel (PKD's
            ``norm``) before the DiffKD module, so the diffusion model sees unit-scale teacher features whatever
            the network, and the feature term is PKD's ``MSE(norm(refined), norm(goal)) / 2``
            (:mod:`methods.feature_norm`). Logits are not affected.
        ce_weight: weight of the task loss (``task_weight``; official ``ori_loss_weight`` 1).
        taps: the feature taps to distil (default: every feature tap both models have; mmrazor's PKD setting on a
            Faster R-CNN distils FPN levels P2-P5, not P6).
    """

    name = "diffkd"
    consumes = ("feature",)

    def __init__(
        self,
        student_taps: Mapping[str, TapSpec],
        teacher_taps: Mapping[str, TapSpec],
        use_ae: bool = False,
        ae_channels: Annotated[int | None, Range(ge=1)] = None,
        inference_steps: Annotated[int, Range(ge=1), IntUniform(1, 10)] = 5,
        num_train_timesteps: Annotated[int, Range(ge=2, le=TIME_EMBEDDING_ROWS)] = 1000,
        feat_kernel_size: Annotated[int, Range(ge=1, le=3)] = 3,
        distill_logits: bool = True,
        kd_weight: Annotated[float, Range(ge=0), LogUniform(0.1, 10)] = 1.0,
        diff_weight: Annotated[float, Range(ge=0), LogUniform(0.1, 10)] = 1.0,
        ae_weight: Annotated[float, Range(ge=0)] = 1.0,
        logit_temperature: Annotated[float, Range(gt=0)] = 1.0,
        share_levels: bool = False,
        ce_weight: Annotated[float, Range(ge=0)] = 1.0,
        feat_norm: Literal["none", "pkd"] = "none",
        taps: Sequence[str] | None = None,
    ) -> None:
        super().__init__(student_taps, teacher_taps)
        self.feat_norm = str(feat_norm)
        self.task_weight = float(ce_weight)
        self.kd_weight = float(kd_weight)
        self.diff_weight = float(diff_weight)
        self.ae_weight = float(ae_weight)
        self.logit_temperature = float(logit_temperature)
        self.share_levels = bool(share_levels)

        s_feat = select_taps(student_taps, "feature")
        t_feat = select_taps(teacher_taps, "feature")
        self.feature_names = [n for n in s_feat if n in t_feat]
        if not self.feature_names:
            raise UserError(
                f"method 'diffkd': student feature taps {sorted(s_feat)} and teacher feature taps "
                f"{sorted(t_feat)} share no name"
            )
        self.feature_names = chosen_taps(self.name, self.feature_names, taps)
        common = dict(inference_steps=inference_steps, num_train_timesteps=num_train_timesteps)
        self.diff = nn.ModuleDict()
        self._route: dict[str, str] = {}
        if self.share_levels:
            s_ch = {s_feat[n].channels for n in self.feature_names}
            t_ch = {t_feat[n].channels for n in self.feature_names}
            if len(s_ch) != 1 or len(t_ch) != 1:
                raise UserError(
                    f"diffkd share_levels=True needs equal channels on every feature tap; got student "
                    f"{sorted(s_ch)}, teacher {sorted(t_ch)} (use share_levels=False)"
                )
            self.diff["shared"] = DiffKD(
                s_ch.pop(), t_ch.pop(), feat_kernel_size, use_ae=use_ae, ae_channels=ae_channels, **common
            )
            self._route = {n: "shared" for n in self.feature_names}
        else:
            for n in self.feature_names:
                self._route[n] = self._add(
                    n,
                    DiffKD(
                        s_feat[n].channels,
                        t_feat[n].channels,
                        feat_kernel_size,
                        use_ae=use_ae,
                        ae_channels=ae_channels,
                        **common,
                    ),
                )

        self.logit_names: list[str] = []
        if distill_logits:
            s_log = select_taps(student_taps, "logits")
            t_log = select_taps(teacher_taps, "logits")
            for n in s_log:
                if n in t_log and n not in self._route:
                    # The official never puts the AE on logits: use_ae=(kernel_size != 1) and use_ae.
                    self._route[n] = self._add(n, DiffKD(s_log[n].channels, t_log[n].channels, 1, **common))
                    self.logit_names.append(n)

    def _add(self, tap: str, module: DiffKD) -> str:
        key = _module_key(tap)
        if key in self.diff:
            raise UserError(f"diffkd: taps {tap!r} and another tap map to the same module key {key!r}; rename one")
        self.diff[key] = module
        return key

    def forward(
        self,
        student: Mapping[str, torch.Tensor],
        teacher: Mapping[str, torch.Tensor],
        target: torch.Tensor | None,
        progress: Progress,
    ) -> dict[str, torch.Tensor]:
        kd_feat: list[torch.Tensor] = []
        kd_logits: list[torch.Tensor] = []
        diff: list[torch.Tensor] = []
        ae: list[torch.Tensor] = []
        for name in self.feature_names:
            s, t = student[name], teacher[name]
            if s.dim() != 4 or t.dim() != 4 or s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
                raise UserError(
                    f"diffkd: feature tap {name!r} needs [N, C, H, W] maps with equal N, H, W on both sides; "
                    f"got student {tuple(s.shape)}, teacher {tuple(t.shape)}"
                )
            if self.feat_norm == "pkd":
                s, t = pkd_norm(s), pkd_norm(t)
            refined, goal, d, a = self.diff[self._route[name]](s, t)
            kd_feat.append(feature_kd_loss(refined, goal, self.feat_norm))
            diff.append(d)
            if a is not None:
                ae.append(a)
        for name in self.logit_names:
            s, t = student[name], teacher[name]
            if s.shape[0] == 0:  # e.g. a batch without valid rows: nothing to distill
                continue
            refined, goal, d, _ = self.diff[self._route[name]](
                s.reshape(*s.shape[:2], 1, 1), t.reshape(*t.shape[:2], 1, 1)
            )
            kd_logits.append(logits_kd_loss(refined, goal, self.logit_temperature))
            diff.append(d)
        terms: dict[str, torch.Tensor] = {}
        if kd_feat:
            terms["kd_feat"] = self.kd_weight * sum(kd_feat)
        if kd_logits:
            terms["kd_logits"] = self.kd_weight * sum(kd_logits)
        if diff:
            terms["diff"] = self.diff_weight * sum(diff)
        if ae:
            terms["ae"] = self.ae_weight * sum(ae)
        return terms

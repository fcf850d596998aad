"""A small DDIM scheduler: the part of diffusers' ``DDIMScheduler`` that DiffKD uses.

DiffKD (Huang et al., NeurIPS 2023) ships a trimmed copy of diffusers' ``DDIMScheduler`` and calls it with
``num_train_timesteps=1000, beta_schedule="linear", clip_sample=False`` and the library defaults
``beta_start=1e-4, beta_end=0.02, set_alpha_to_one=True, steps_offset=0, prediction_type="epsilon"``.
This module reproduces exactly that configuration's ``set_timesteps`` / ``step`` / ``add_noise`` math so
the benchmark needs no diffusers dependency.

One deliberate fix (the official code's fp16 hazard): the official ``add_noise`` overwrites
``self.alphas_cumprod`` with a copy cast to the sample's dtype. Under mixed precision the teacher feature
is fp16, so after the first training step the table is fp16, where ``alphas_cumprod[0] = 0.9999`` rounds
to ``1.0``; the next denoising step at ``t = 0`` then divides ``0 / sqrt(1 - 1)`` and returns NaN. Here
the table is computed once in float32 on the CPU and never cast: the step math runs in float32 (on
Python-float coefficients) whatever the sample's dtype, and only the result is cast back to it.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class DDIMStepOutput(NamedTuple):
    """What one reverse step returns (diffusers' ``DDIMSchedulerOutput``)."""

    prev_sample: torch.Tensor
    pred_original_sample: torch.Tensor


class DDIMScheduler:
    """Linear-beta, epsilon-prediction DDIM (Song et al., 2021) as diffusers implements it.

    Deliberately a plain object, not an ``nn.Module``, like the official one: it has no state to save, so
    the owning module's ``state_dict`` keys match the official checkpoints, and ``module.half()`` cannot
    touch its float32 tables.

    Args:
        num_train_timesteps: length of the training noise schedule (DiffKD: 1000).
        beta_start: first beta of the linear schedule (diffusers default 1e-4).
        beta_end: last beta of the linear schedule (diffusers default 0.02).
        set_alpha_to_one: use ``alpha_bar = 1`` as the "previous" value of the last step (diffusers default).
        steps_offset: added to every inference timestep (diffusers default 0).
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
    ) -> None:
        self.num_train_timesteps = int(num_train_timesteps)
        self.steps_offset = int(steps_offset)
        # Same construction as diffusers (float32 linspace, float32 cumprod) so the numbers match bit for bit.
        self.betas = torch.linspace(beta_start, beta_end, self.num_train_timesteps, dtype=torch.float32)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        # The same float32 values as Python floats: a reverse step reads two of them without touching a tensor
        # (no device sync, nothing for torch.compile to break its graph on).
        self._alpha_bar = self.alphas_cumprod.tolist()
        self.final_alpha_cumprod = 1.0 if set_alpha_to_one else float(self.alphas_cumprod[0])
        self.num_inference_steps: int | None = None
        self.timesteps = torch.arange(self.num_train_timesteps - 1, -1, -1, dtype=torch.int64)
        self._device_tables: dict[torch.device, torch.Tensor] = {}

    # ------------------------------------------------------------------ schedule
    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """Choose ``num_inference_steps`` evenly spaced timesteps, largest first ("leading" spacing).

        ``t_i = i * (T // n) + steps_offset`` for ``i = n-1, ..., 0``; e.g. ``T = 1000, n = 10`` gives
        ``900, 800, ..., 0``.
        """
        if not 1 <= num_inference_steps <= self.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be in [1, {self.num_train_timesteps}], got {num_inference_steps}"
            )
        self.num_inference_steps = int(num_inference_steps)
        step_ratio = self.num_train_timesteps // self.num_inference_steps
        steps = torch.arange(self.num_inference_steps - 1, -1, -1, dtype=torch.int64) * step_ratio
        self.timesteps = steps + self.steps_offset
        return self.timesteps

    def alpha_bar(self, timestep: int) -> float:
        """``alphas_cumprod[t]`` as a Python float; ``final_alpha_cumprod`` for ``t < 0``."""
        return self._alpha_bar[timestep] if timestep >= 0 else self.final_alpha_cumprod

    # ------------------------------------------------------------------ reverse step
    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = True,
        variance_noise: torch.Tensor | None = None,
    ) -> DDIMStepOutput:
        """One DDIM update ``x_t -> x_{t - T//n}`` (DDIM eq. 12), computed in float32.

        ``x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)``;
        ``x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z`` with
        ``sigma = eta * sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))``.
        With ``use_clipped_model_output`` (DiffKD passes ``True``) ``eps`` is re-derived from ``x0`` as
        diffusers does; without clipping this is the same value up to rounding.

        Args:
            model_output: predicted noise ``eps``.
            timestep: current timestep ``t`` (an int or a 0-d tensor).
            sample: current sample ``x_t``.
            eta: DDIM stochasticity (DiffKD: 0, deterministic).
            use_clipped_model_output: re-derive ``eps`` from ``x0`` (diffusers' flag).
            variance_noise: ``z`` for ``eta > 0``; drawn with ``torch.randn`` when omitted.

        Returns:
            ``prev_sample`` and ``pred_original_sample``, both in ``sample``'s dtype.
        """
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps() before step()")
        t = int(timestep)
        prev_t = t - self.num_train_timesteps // self.num_inference_steps
        a_t = self.alpha_bar(t)
        a_prev = self.alpha_bar(prev_t)
        b_t = 1.0 - a_t
        x = sample.float()
        eps = model_output.float()
        x0 = (x - b_t**0.5 * eps) / a_t**0.5
        variance = (1.0 - a_prev) / b_t * (1.0 - a_t / a_prev)
        std = eta * variance**0.5
        if use_clipped_model_output:
            eps = (x - a_t**0.5 * x0) / b_t**0.5
        prev = a_prev**0.5 * x0 + (1.0 - a_prev - std**2) ** 0.5 * eps
        if eta > 0:
            z = variance_noise if variance_noise is not None else torch.randn_like(eps)
            prev = prev + std * z.float()
        return DDIMStepOutput(prev.to(sample.dtype), x0.to(sample.dtype))

    # ------------------------------------------------------------------ forward process
    def _table(self, device: torch.device) -> torch.Tensor:
        """The float32 ``alphas_cumprod`` on ``device`` (cached: one copy per device, never re-cast)."""
        table = self._device_tables.get(device)
        if table is None:
            table = self.alphas_cumprod.to(device)
            self._device_tables[device] = table
        return table

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward diffusion ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps`` per sample (timesteps ``[N]``).

        The coefficients stay float32; the result follows type promotion (float32 for a half ``x_0``).
        """
        a = self._table(original.device)[timesteps.to(original.device)]
        shape = (-1,) + (1,) * (original.dim() - 1)
        return a.sqrt().view(shape) * original + (1.0 - a).sqrt().view(shape) * noise

    @staticmethod
    def mix_with_noise(feat: torch.Tensor, noise: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """DiffKD's adaptive noise matching: ``gamma * feat + (1 - gamma) * noise`` per sample.

        The official ``add_noise_diff2``: the noise adapter's ``gamma`` (one value per sample) plays the role
        of ``sqrt(alpha_bar)`` *and* its complement plays ``sqrt(1 - alpha_bar)`` -- no square roots, as
        in the official code.
        """
        g = gamma.flatten().view((-1,) + (1,) * (feat.dim() - 1))
        return g * feat + (1.0 - g) * noise

    def __getstate__(self) -> dict:
        # Device copies are a cache: do not ship GPU tensors when the owning module is pickled.
        state = dict(self.__dict__)
        state["_device_tables"] = {}
        return state

    def __len__(self) -> int:
        return self.num_train_timesteps

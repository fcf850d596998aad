"""Which device a job trains on and how many CPUs it may use (torch only)."""

from __future__ import annotations

import os

import torch

from methods.errors import UserError, unknown


def pick_device(device: str | None) -> torch.device:
    """``auto`` (or None) → CUDA when available, else CPU; a CUDA request without CUDA is a UserError."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    if device.startswith("cuda:") and device[5:].isdigit() and int(device[5:]) >= torch.cuda.device_count():
        raise UserError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device != "cpu" and not device.startswith("cuda"):
        raise unknown("device", device, ("auto", "cpu", "cuda", "cuda:N"))
    try:
        return torch.device(device)
    except RuntimeError:
        raise unknown("device", device, ("auto", "cpu", "cuda", "cuda:N")) from None


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what Ray, Slurm or ``taskset`` gave it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)

"""The machine a speed figure was measured on, and fencing a device before reading a clock."""

from __future__ import annotations

import os
from typing import Any

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on: device name, torch/CUDA versions, CPU threads."""
    env: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, device_mem_mb=props.total_memory / 2**20, cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), capability=f"{props.major}.{props.minor}")  # fmt: skip
    else:
        env["device_name"] = cpu_name()
    return env


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux) and the cores this process may use."""
    import platform

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name}, {cores} cores"

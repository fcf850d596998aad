"""Model FLOPs of a training step and the dense peak of the device they ran on.

``diffbench speed`` divides the FLOPs one training step performs by its time: the achieved TFLOP/s, and
the fraction of the device's *dense* tensor-core peak (what the datasheets call the figure "without
sparsity") that a distillation job reaches. That fraction says whether a job is compute-bound (near the
peak: only a faster chip or fewer FLOPs help) or bound by something else (launch overhead, memory traffic,
the data pipeline: software can help).

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode` over one whole step: teacher forward,
student forward and backward, the method's forward and backward. It counts matrix products and
convolutions (2 FLOPs per multiply-add), forward and backward, and nothing element-wise (activations,
normalisation, the optimiser), which is the usual "model FLOPs" convention: the work a perfect
implementation cannot avoid.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

#: Dense peaks (TFLOP/s, no 2:4 sparsity) by a pattern searched in ``torch.cuda.get_device_name()``, first
#: match wins. Keys: ``fp32`` = CUDA cores (no tensor cores), ``tf32``, ``bf16``, ``fp16`` = tensor cores
#: with fp32 accumulation. NVIDIA's datasheets print tensor-core figures *with* sparsity (marked * there);
#: the dense figure is half of it:
#:
#: - H100 SXM / H200 SXM (H100 and H200 datasheets; the H200 has the H100's GH100 compute and more
#:   memory): FP32 67, TF32 989*, BF16/FP16 1,979* -> 67 / 494.7 / 989.4 dense.
#: - H100 PCIe (H100 datasheet): FP32 51, TF32 756*, BF16/FP16 1,513* -> 51 / 378 / 756.
#: - A100 SXM4 and PCIe (nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf): FP32 19.5, TF32 156
#:   (312*), BF16/FP16 312 (624*).
#: - L40S datasheet: FP32 91.6, TF32 366*, BF16/FP16 733* -> 183 / 366.
#: - L4 datasheet: FP32 30.3, TF32 120*, BF16/FP16 242* -> 60 / 121.
#: - A40 datasheet: FP32 37.4, TF32 74.8 (149.6*), BF16/FP16 with fp32 accumulate 149.7 (299.4*).
#: - A10 datasheet: FP32 31.2, TF32 62.5 (125*), BF16/FP16 125 (250*).
#: - GeForce RTX 4090 (Ada Lovelace architecture whitepaper, appendix): FP32 82.6, TF32 82.6, FP16/BF16
#:   tensor with FP32 accumulate 165.2 (GeForce parts run fp32 accumulation at half rate).
#: - Tesla V100 SXM2 / PCIe (V100 datasheet): FP32 15.7 / 14, tensor (FP16) 125 / 112; no TF32 or bf16.
#: - Tesla T4 datasheet: FP32 8.1, FP16 tensor 65; no TF32 or bf16.
#:
#: Variants whose clocks differ (H100/H200 NVL, A10G, ...) are deliberately unmatched: no figure beats a
#: wrong one (``--peak-tflops`` supplies it).
DENSE_PEAKS: list[tuple[str, dict[str, float]]] = [
    (r"\bH200\b(?!.*NVL)", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),
    (r"\bH100\b.*PCIe", {"fp32": 51.0, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0}),
    (r"\bH100\b.*(SXM|HBM3)", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}),
    (r"\bA100\b", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0}),
    (r"\bL40S\b", {"fp32": 91.6, "tf32": 183.0, "bf16": 366.0, "fp16": 366.0}),
    (r"\bL4\b", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0}),
    (r"\bA40\b", {"fp32": 37.4, "tf32": 74.8, "bf16": 149.7, "fp16": 149.7}),
    (r"\bA10\b", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0}),
    (r"RTX 4090", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2}),
    (r"V100-SXM2", {"fp32": 15.7, "fp16": 125.0}),
    (r"V100-PCIE", {"fp32": 14.0, "fp16": 112.0}),
    (r"\bT4\b", {"fp32": 8.1, "fp16": 65.0}),
]


def conv_tf32_enabled() -> bool:
    """Whether float32 convolutions may run on TF32 tensor cores (PyTorch's default for cuDNN convs).

    CIFAR/ImageNet CNNs spend nearly all their FLOPs in convolutions, so an ``fp32`` job on an Ampere or
    newer GPU is measured against the TF32 peak when this is on (matmuls stay IEEE fp32 by default, but
    they are a rounding error of these models' FLOPs).
    """
    conv = getattr(torch.backends.cudnn, "conv", None)
    mode = getattr(conv, "fp32_precision", None)
    if mode is not None and mode != "none":
        return mode == "tf32"
    return bool(torch.backends.cudnn.allow_tf32)


def dense_peak(device_name: str | None, precision: str) -> tuple[float, str] | None:
    """``(TFLOP/s, kind)`` of the device's dense peak for a job at ``precision``, or None when unknown.

    ``precision`` is a resolved recipe precision (``fp32``, ``bf16``, ``fp16``); ``kind`` names the figure
    used (``tf32`` for an ``fp32`` job whose convolutions run on TF32 tensor cores). CPUs and unlisted
    GPUs give None (pass ``--peak-tflops`` to compare against a figure of your own).
    """
    if not device_name:
        return None
    table = next((peaks for pattern, peaks in DENSE_PEAKS if re.search(pattern, device_name, re.IGNORECASE)), None)
    if table is None:
        return None
    kind = precision
    if precision == "fp32" and "tf32" in table and conv_tf32_enabled():
        kind = "tf32"
    return (table[kind], kind) if kind in table else None


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs (matmuls and convolutions, forward and backward) of everything ``fn`` runs."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


__all__ = ["DENSE_PEAKS", "conv_tf32_enabled", "count_flops", "dense_peak"]

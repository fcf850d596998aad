"""``diffbench speed``: time full training steps per method and speed variant on synthetic batches.

A step is what training pays for, run by the training loop's own :class:`bench.engine.step.Stepper`: the
teacher's forward, the student's forward and backward, the method's loss (and its extras' backward) and
the optimiser step, at the variant's precision, memory format and compilation. Every (method, variant)
pair is one *row* with its own models, built once. Rows are *interleaved* round by round, in an order
that rotates every round, so thermal drift, other processes and allocator warm-up hit every row alike;
the median over rounds is reported.

On a GPU a round times ``inner`` consecutive steps of a row and divides: a training loop does not wait
for the GPU after every step (the CPU queues the next step's kernels while the GPU runs this one's), so a
sync per step would charge a launch-bound step its whole launch latency. On a CPU ``inner`` is 1.

Beside the time, each row reports the model FLOPs of one training image (:mod:`bench.speed.flops`, counted once
per row outside the timed rounds), the achieved TFLOP/s, the fraction of the device's dense peak and
(CUDA) the peak memory of one job of that row (its teacher, student, extras, optimiser state and
activations). Imports neither Ray nor MLflow (nor typer or rich): ``python -m bench.speed``
(:mod:`bench.speed.__main__`) runs on a machine that has only torch and torchvision.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from bench.engine.build import Built, build_models, make_optimizer, set_lr
from bench.engine.device import pick_device
from bench.engine.step import Stepper
from bench.jobs.spec import VANILLA
from bench.speed.flops import count_flops, dense_peak
from bench.speed.system import environment, sync
from bench.speed.variants import INNER_CUDA, Variant, check_args, expand_variants, to_memory_format
from methods.taps import Progress
from tasks.base import Task, get_task
from tasks.recipe import Recipe


@dataclass
class SpeedRow:
    """One (method, variant) row of ``diffbench speed``; ``None`` where a figure does not apply."""

    method: str
    ms_per_step: float
    ms_iqr: float
    images_per_s: float
    peak_mem_mb: float | None
    vs_vanilla: float | None = None
    vs_kd: float | None = None
    precision: str = "fp32"
    channels_last: bool = False
    compile: str = "off"
    variant: str = "fp32"
    #: model FLOPs (matmuls and convolutions, forward and backward) of one training image.
    flops_per_image: float | None = None
    tflops: float | None = None
    peak_tflops: float | None = None
    #: which peak figure: ``bf16``, ``tf32``, ... or ``given`` (``--peak-tflops``).
    peak_kind: str | None = None
    pct_of_peak: float | None = None
    #: first compiled step (tracing, code generation, autotuning), seconds.
    compile_time_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Row:
    """A row's job: models, optimiser and :class:`Stepper`, stepped like the training loop steps them."""

    def __init__(self, task: Task, method: str, variant: Variant, built: Built, recipe: Recipe, batch: Any,
                 device: torch.device, log: Callable[[str], None]) -> None:  # fmt: skip
        self.method, self.variant, self.built, self.recipe, self.batch = method, variant, built, recipe, batch
        self.device = device
        self.optimizer = make_optimizer(recipe, built.student, built.method, device)
        self.stepper = Stepper(built, self.optimizer, device, variant.precision, variant.compile, log)
        self.it = 0
        self.times: list[float] = []

    def step(self) -> None:
        """One training-loop iteration: lr, step, the loop's (possibly skipped) loss read."""
        r = self.recipe
        set_lr(self.optimizer, r.lr)
        progress = Progress(epoch=r.epochs, epochs=r.epochs, step=self.it, steps_per_epoch=1_000_000)
        self.stepper.step(self.batch, progress)
        self.stepper.check(r.epochs, self.it)
        self.it += 1

    def flops(self) -> int:
        """FLOPs of one step of this row's models, counted eagerly (the same math a compiled step runs)."""
        eager = Stepper(self.built, self.optimizer, self.device, self.variant.precision, "off", lambda _m: None)
        r = self.recipe
        progress = Progress(epoch=r.epochs, epochs=r.epochs, step=self.it, steps_per_epoch=1_000_000)
        return count_flops(lambda: eager.step(self.batch, progress))


def benchmark(
    task_name: str,
    teacher: str | None,
    student: str,
    methods: list[str],
    batch_size: int = 64,
    steps: int = 20,
    warmup: int = 3,
    device: str = "auto",
    dataset: str | None = None,
    num_classes: int = 100,
    hparams: dict[str, dict[str, Any]] | None = None,
    variants: Sequence[Variant] | None = None,
    inner: int | None = None,
    peak_tflops: float | None = None,
    flops: bool = True,
    log: Callable[[str], None] = lambda _msg: None,
) -> list[SpeedRow]:
    """Median step time and throughput figures per (method, variant); see the module docstring.

    Args:
        dataset: whose method defaults, recipe and model variants to use (``cifar100`` for 32×32 CIFAR models).
        hparams: per-method overrides of the task's method defaults.
        variants: speed settings to compare (default: what a training job on ``device`` runs, ``auto``).
        inner: steps per timed block (default 1 on CPU, :data:`INNER_CUDA` on CUDA).
        peak_tflops: the device's dense peak, overriding the table of :mod:`bench.speed.flops`.
        flops: count FLOPs (one extra step per row, untimed).
        log: progress lines (building, compiling).
    """
    task = get_task(task_name)
    dataset = dataset or task.default_dataset
    dev = pick_device(device)
    check_args(methods, teacher, batch_size, steps, warmup, inner)
    variants = list(variants or expand_variants(device_type=dev.type))
    inner = inner or (INNER_CUDA if dev.type == "cuda" else 1)
    if any(v.compile != "off" for v in variants):
        # Every compiled row is another specialisation of the same forward code; keep dynamo compiling them.
        import torch._dynamo.config as dynamo_config

        limit = 8 * len(methods) * len(variants)
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, limit)
        dynamo_config.accumulated_recompile_limit = max(dynamo_config.accumulated_recompile_limit, 4 * limit)
    torch.manual_seed(0)
    recipe = task.recipe(dataset, student)
    base_batch = task.synthetic_batch(batch_size, num_classes, dev, dataset=dataset, arch=student)
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else None

    rows: list[_Row] = []
    peaks: dict[int, float | None] = {}
    for variant, name in itertools.product(variants, methods):
        hp = {**task.method_defaults(name, dataset, teacher, student), **(hparams or {}).get(name, {})} \
            if name != VANILLA else {}  # fmt: skip
        base_mem = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        log(f"building {name} [{variant.label}]")
        s, t, m = build_models(task, student, teacher if name != VANILLA else None, name, hp, num_classes, dataset,
                               None, dev, channels_last=variant.channels_last)  # fmt: skip
        built = Built(task, s, t, m, None, None, num_classes, {})
        row = _Row(task, name, variant, built, recipe, to_memory_format(base_batch, variant.channels_last), dev, log)
        for _ in range(max(warmup, 3) if variant.compile != "off" else warmup):
            row.step()
        sync(dev)
        peaks[id(row)] = (torch.cuda.max_memory_allocated(dev) - base_mem) / 2**20 if dev.type == "cuda" else None
        rows.append(row)
    flop_counts = {id(r): r.flops() for r in rows} if flops else {}

    for rnd in range(steps):
        k = rnd % len(rows)
        for row in rows[k:] + rows[:k]:
            sync(dev)
            t0 = time.perf_counter()
            for _ in range(inner):
                row.step()
            sync(dev)
            row.times.append((time.perf_counter() - t0) / inner)

    out: list[SpeedRow] = []
    for row in rows:
        med = statistics.median(row.times)
        q = statistics.quantiles(row.times, n=4) if len(row.times) >= 2 else [med, med, med]
        v = row.variant
        sr = SpeedRow(row.method, med * 1e3, (q[2] - q[0]) * 1e3, batch_size / med, peaks[id(row)],
                      precision=v.precision, channels_last=v.channels_last, compile=v.compile, variant=v.label,
                      compile_time_s=row.stepper.compile_time_s if v.compile != "off" else None)  # fmt: skip
        if id(row) in flop_counts:
            sr.flops_per_image = flop_counts[id(row)] / batch_size
            sr.tflops = flop_counts[id(row)] / med / 1e12
            peak = (peak_tflops, "given") if peak_tflops else dense_peak(device_name, v.precision)
            if peak is not None:
                sr.peak_tflops, sr.peak_kind = peak
                sr.pct_of_peak = 100.0 * sr.tflops / peak[0]
        out.append(sr)
    for v in variants:
        ref = {r.method: r.ms_per_step for r in out if r.variant == v.label}
        for r in out:
            if r.variant == v.label:
                r.vs_vanilla = r.ms_per_step / ref[VANILLA] if VANILLA in ref else None
                r.vs_kd = r.ms_per_step / ref["kd"] if "kd" in ref else None
    return out


def run(
    task: str, teacher: str | None, student: str, methods: list[str], dataset: str | None, batch_size: int,
    steps: int, warmup: int, device: str, precisions: Sequence[str], channels_last: Sequence[str],
    compiles: Sequence[str], inner: int | None = None, peak_tflops: float | None = None, flops: bool = True,
    sets: dict[str, dict[str, Any]] | None = None, num_classes: int | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:  # fmt: skip
    """The JSON payload of ``diffbench speed``: the settings, the environment and one dict per row.

    ``vanilla`` is always timed (first), so every row has its ``× vanilla``.
    """
    t = get_task(task)
    dataset = dataset or ("cifar100" if task == "classification" else t.default_dataset)
    methods = [VANILLA] + [m for m in dict.fromkeys(methods) if m != VANILLA]
    dev = pick_device(device)
    variants = expand_variants(precisions, channels_last, compiles, dev.type)
    rows = benchmark(task, teacher, student, methods, batch_size=batch_size, steps=steps, warmup=warmup,
                     device=str(dev), dataset=dataset, num_classes=num_classes or t.default_num_classes(dataset),
                     hparams=sets, variants=variants, inner=inner, peak_tflops=peak_tflops, flops=flops,
                     log=log)  # fmt: skip
    return {
        "task": task,
        "dataset": dataset,
        "teacher": teacher,
        "student": student,
        "batch_size": batch_size,
        "steps": steps,
        "inner": inner or (INNER_CUDA if dev.type == "cuda" else 1),
        "variants": [v.label for v in variants],
        **environment(dev),
        "rows": [r.to_dict() for r in rows],
    }


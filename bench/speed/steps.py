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
activations). Imports neither Ray nor MLflow (nor typer or rich): ``python -m bench.speed`` runs on a
machine that has only torch and torchvision.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from bench.engine.build import Built, build_models, make_optimizer, pick_device, set_lr
from bench.speed.flops import count_flops, dense_peak
from bench.jobs.spec import VANILLA
from bench.engine.step import Stepper
from methods.base import Progress, UserError
from tasks.base import COMPILE_MODES, Recipe, Task, get_task

#: ``--channels-last`` / ``--compile`` spellings of the CLI, as recipe values.
_CHANNELS_LAST = {"auto": None, "on": True, "off": False, "true": True, "false": False}
_COMPILE_ALIASES = {"on": "default", "true": "default", "false": "off"}
#: Steps a row runs per timed block on CUDA (see the module docstring).
INNER_CUDA = 10


@dataclass(frozen=True)
class Variant:
    """One speed setting of a job, resolved for a device: what ``Recipe.resolved`` would run."""

    precision: str
    channels_last: bool
    compile: str = "off"

    @property
    def label(self) -> str:
        """``bf16 cl compile`` style name (``fp32`` for the plain reproduction setting)."""
        parts = [self.precision] + (["cl"] if self.channels_last else [])
        if self.compile != "off":
            parts.append("compile" if self.compile == "default" else f"compile:{self.compile}")
        return " ".join(parts)


def expand_variants(
    precisions: Sequence[str] = ("auto",),
    channels_last: Sequence[str | bool | None] = ("auto",),
    compiles: Sequence[str] = ("off",),
    device_type: str = "cpu",
) -> list[Variant]:
    """The cartesian product of the given settings, ``auto`` resolved for ``device_type``, duplicates dropped.

    Args:
        precisions: ``auto``, ``fp32``, ``bf16``, ``fp16``.
        channels_last: ``auto``, ``on``, ``off`` (or ``True``/``False``/``None``).
        compiles: ``off``, ``on`` (= ``default``) or a ``torch.compile`` mode.
        device_type: ``cpu`` or ``cuda`` (decides the ``auto`` values, as for a training job).
    """
    cls_: list[bool | None] = []
    for v in channels_last or ("auto",):
        key = v if isinstance(v, bool) or v is None else str(v).lower()
        if key not in (True, False, None) and key not in _CHANNELS_LAST:
            raise UserError(f"--channels-last {v!r}: expected auto, on or off")
        cls_.append(key if key in (True, False, None) else _CHANNELS_LAST[key])  # type: ignore[index]
    comps = [_COMPILE_ALIASES.get(c, c) for c in (compiles or ("off",))]
    for c in comps:
        if c not in COMPILE_MODES:
            raise UserError(f"--compile {c!r}: expected off, on or one of {', '.join(COMPILE_MODES[1:])}")
    for p in precisions or ("auto",):
        if p not in ("auto", "fp32", "bf16", "fp16"):
            raise UserError(f"--precision {p!r}: expected auto, fp32, bf16 or fp16")
    out: list[Variant] = []
    for p, cl, c in itertools.product(precisions or ("auto",), cls_, comps):
        r = Recipe(epochs=1, batch_size=1, lr=1.0, precision=p, channels_last=cl, compile=c).resolved(device_type, True)
        v = Variant(r.precision, bool(r.channels_last), r.compile)
        if v not in out:
            out.append(v)
    return out


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _memory_format(batch: Any, channels_last: bool) -> Any:
    """The synthetic batch as the training pipeline hands it over: NHWC images for channels_last jobs."""
    if channels_last and isinstance(batch, tuple | list) and isinstance(batch[0], torch.Tensor) and batch[0].ndim == 4:
        return (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])
    return batch


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


def check_args(
    methods: Sequence[str], teacher: str | None, batch_size: int, steps: int, warmup: int, inner: int | None
) -> None:
    """The arguments every step benchmark shares, refused in one line each."""
    if not methods:
        raise UserError("no methods to time")
    if any(m != VANILLA for m in methods) and teacher is None:
        raise UserError("--teacher is needed to time distillation methods")
    if batch_size < 1 or steps < 1 or warmup < 0 or (inner is not None and inner < 1):
        raise UserError("--batch-size, --steps and --inner must be >= 1 and --warmup >= 0")


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
        row = _Row(task, name, variant, built, recipe, _memory_format(base_batch, variant.channels_last), dev, log)
        for _ in range(max(warmup, 3) if variant.compile != "off" else warmup):
            row.step()
        _sync(dev)
        peaks[id(row)] = (torch.cuda.max_memory_allocated(dev) - base_mem) / 2**20 if dev.type == "cuda" else None
        rows.append(row)
    flop_counts = {id(r): r.flops() for r in rows} if flops else {}

    for rnd in range(steps):
        k = rnd % len(rows)
        for row in rows[k:] + rows[:k]:
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(inner):
                row.step()
            _sync(dev)
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


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on: device name, torch/CUDA versions, CPU threads."""
    env: dict[str, Any] = {"device": str(device), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, device_mem_mb=props.total_memory / 2**20, cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), capability=f"{props.major}.{props.minor}")  # fmt: skip
    else:
        env["device_name"] = _cpu_name()
    return env


def _cpu_name() -> str:
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


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.speed``: the step benchmark without typer/rich (GPU machines with only torch)."""
    ap = argparse.ArgumentParser(description="Time full training steps per method and speed variant.")
    ap.add_argument("--task", default="classification")
    ap.add_argument("--teacher", default="resnet32x4")
    ap.add_argument("--student", default="resnet8x4")
    ap.add_argument("--methods", default="vanilla,kd,dkd,fitnet,diffkd")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--inner", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--channels-last", default="auto")
    ap.add_argument("--compile", default="off")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--no-flops", action="store_true")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout")
    ap.add_argument("--workers", default=None, help="comma list: data-parallel scaling with N local workers")
    a = ap.parse_args(argv)
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    if a.workers is not None:
        _main_workers(a, split)
        return
    try:
        payload = run(a.task, a.teacher, a.student, split(a.methods), a.dataset, a.batch_size, a.steps, a.warmup,
                      a.device, split(a.precision), split(a.channels_last), split(a.compile), a.inner,
                      a.peak_tflops, not a.no_flops, log=lambda m: print(m, file=sys.stderr))  # fmt: skip
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if a.json:
        print(json.dumps(payload))
    else:
        from bench.speed.table import markdown_table

        print(markdown_table([SpeedRow(**r) for r in payload["rows"]]))


def _main_workers(a: argparse.Namespace, split: Callable[[str], list[str]]) -> None:
    """``python -m bench.speed --workers N,M``: the scaling table of :mod:`bench.speed.workers`."""
    from bench import speed_workers as sw

    try:
        if a.peak_tflops is not None:
            raise UserError("--peak-tflops does not apply to --workers (no FLOP figures in scaling rows)")
        payload = sw.run_workers(a.task, a.teacher, a.student, split(a.methods), sw.parse_workers(a.workers),
                                 a.dataset, a.batch_size, a.steps, a.warmup, a.device, split(a.precision),
                                 split(a.channels_last), split(a.compile), a.inner,
                                 log=lambda m: print(m, file=sys.stderr))  # fmt: skip
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    if a.json:
        print(json.dumps(payload))
    else:
        print(sw.describe(payload))
        print(sw.markdown_table([sw.WorkerRow(**r) for r in payload["rows"]]))


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


if __name__ == "__main__":
    main()

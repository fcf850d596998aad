"""``diffbench speed --workers N[,M...]``: data-parallel scaling of one training step (weak scaling).

For every N of the list, N local processes (``torch.multiprocessing`` spawn; gloo on CPU, NCCL on CUDA with
one GPU per rank) each build the same teacher, student and method as ``diffbench speed`` does for a method
(seeded identically) and step them through the training loop's own :class:`bench.engine.step.Stepper` with
``Dist(rank, N)``: the student and the method's extras inside one DDP module, gradients averaged over the
ranks every step. **Weak scaling**: every worker processes ``--batch-size`` images per step, so N workers
train a global batch of N × B. On a CPU each rank gets ``max(1, cores // N)`` threads.

Rank 0 times blocks of ``inner`` steps (1 on CPU, :data:`bench.speed.variants.INNER_CUDA` on CUDA) between two
fences (a device sync and an all-reduce over the ranks), so a block lasts as long as its slowest rank;
the median over rounds is the step time, ``images/s = N × B / step time`` and

    efficiency(N) = images/s(N) / (N × images/s(1))

(1 worker — a plain process without a process group — is always timed, since efficiency needs it). Methods
are interleaved round by round in a rotating order, as in :mod:`bench.speed.steps`. Imports neither Ray nor MLflow
(nor typer or rich).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from bench.jobs.spec import VANILLA
from bench.speed.system import environment
from bench.speed.variants import INNER_CUDA, Variant, check_args, expand_variants, to_memory_format
from methods.errors import UserError
from methods.taps import Progress

#: Column titles of the scaling table, in order (CPU threads per N are in :func:`describe`'s line). Short words
#: that wrap: the table fits an 80-column terminal.
COLUMNS = ("method", "workers", "batch per worker", "global batch", "ms/step", "IQR ms", "images/s", "efficiency %")


@dataclass
class WorkerRow:
    """One (method, N workers) row; ``efficiency_pct`` = images/s(N) / (N × images/s(1)) in percent."""

    method: str
    workers: int
    batch_per_worker: int
    global_batch: int
    ms_per_step: float
    ms_iqr: float
    images_per_s: float
    efficiency_pct: float | None
    threads_per_worker: int | None = None
    backend: str = "gloo"
    variant: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_workers(values: str | Sequence[str] | None) -> list[int]:
    """``"1,2,4"`` (or ``["1", "2,4"]``) → ``[1, 2, 4]``, sorted and deduplicated; one UserError line otherwise."""
    items = [values] if isinstance(values, str) else list(values or [])
    parts = [p.strip() for v in items for p in str(v).split(",") if p.strip()]
    if not parts:
        raise UserError("--workers: expected a comma list of worker counts, e.g. --workers 1,2,4")
    out: list[int] = []
    for p in parts:
        try:
            n = int(p)
        except ValueError:
            raise UserError(f"--workers {p!r}: not an integer (expected e.g. --workers 1,2,4)") from None
        if n < 1:
            raise UserError(f"--workers {n}: a worker count must be >= 1")
        out.append(n)
    return sorted(set(out))


def cpu_cores() -> int:
    """The cores this process may use (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def threads_for(workers: int, cores: int | None = None) -> int:
    """CPU threads per rank when ``workers`` ranks share the machine: ``max(1, cores // workers)``."""
    return max(1, (cores or cpu_cores()) // workers)


def scaling_rows(
    times: dict[tuple[str, int], list[float]], batch_size: int, threads: dict[int, int | None] | None = None,
    backend: str = "gloo", variant: str = "fp32",
) -> list[WorkerRow]:  # fmt: skip
    """Rows from the timed step seconds of each (method, N workers): median, IQR, images/s, efficiency.

    Efficiency is relative to the same method's 1-worker row (``None`` if there is none); rows come out
    per method (in the order first seen), workers ascending.
    """
    methods = list(dict.fromkeys(m for m, _ in times))
    rows: list[WorkerRow] = []
    for m in methods:
        one: float | None = None
        for n in sorted(k for mm, k in times if mm == m):
            ts = times[(m, n)]
            med = statistics.median(ts)
            q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [med, med, med]
            ips = n * batch_size / med
            if n == 1:
                one = ips
            eff = 100.0 * ips / (n * one) if one else None
            rows.append(WorkerRow(m, n, batch_size, n * batch_size, med * 1e3, (q[2] - q[0]) * 1e3, ips, eff,
                                  (threads or {}).get(n), backend, variant))  # fmt: skip
    return rows


# -- one rank ---------------------------------------------------------------------------------------------


class _Job:
    """One method's models, optimiser and DDP-wrapped :class:`Stepper` on one rank."""

    def __init__(self, name: str, built: Any, recipe: Any, batch: Any, device: torch.device, variant: Variant,
                 dist: Any) -> None:  # fmt: skip
        from bench.engine.build import make_optimizer
        from bench.engine.step import Stepper

        self.name, self.recipe, self.batch = name, recipe, batch
        self.optimizer = make_optimizer(recipe, built.student, built.method, device)
        self.stepper = Stepper(built, self.optimizer, device, variant.precision, variant.compile, lambda _m: None,
                               dist)  # fmt: skip
        self.it = 0
        self.times: list[float] = []

    def step(self) -> None:
        """One training-loop iteration: lr, the (DDP) step, the loop's loss read (an all-reduce on CPU)."""
        from bench.engine.build import set_lr

        r = self.recipe
        set_lr(self.optimizer, r.lr)
        self.stepper.step(self.batch, Progress(epoch=r.epochs, epochs=r.epochs, step=self.it, steps_per_epoch=10**6))
        self.stepper.check(r.epochs, self.it)
        self.it += 1


def _fence(device: torch.device, parallel: bool) -> None:
    """Wait for this rank's device and then for every rank: after it, all ranks have finished their work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    if parallel:
        import torch.distributed as dist

        dist.all_reduce(torch.zeros(1, device=device))
        if device.type == "cuda":
            torch.cuda.synchronize(device)


def _rank(rank: int, world: int, port: int, cfg: dict[str, Any], out_file: str) -> None:
    """Process body: build, join the group, warm up, time; rank 0 writes the step times (or the error)."""
    try:
        result = _rank_body(rank, world, port, cfg)
    except UserError as err:  # the same on every rank (raised while building, before the group is joined)
        result = {"error": str(err)}
    if rank == 0:
        Path(out_file).write_text(json.dumps(result))


def _rank_body(rank: int, world: int, port: int, cfg: dict[str, Any]) -> dict[str, Any]:
    import time

    from bench.engine.build import Built, build_models
    from bench.engine.distributed import Dist, convert_sync_bn
    from tasks.base import get_task

    if cfg["imports"] is not None:
        from bench.jobs.plugins import load_plugins

        load_plugins(cfg["imports"])
    cuda = cfg["device_type"] == "cuda"
    dev = torch.device("cuda", rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    else:
        torch.set_num_threads(cfg["threads"])
    task, variant, dataset, student = get_task(cfg["task"]), Variant(**cfg["variant"]), cfg["dataset"], cfg["student"]
    torch.manual_seed(0)  # every rank (and every N) builds the same models and batch
    recipe = task.recipe(dataset, student)
    batch = task.synthetic_batch(cfg["batch_size"], cfg["num_classes"], dev, dataset=dataset, arch=student)
    batch = to_memory_format(batch, variant.channels_last)
    builts = []
    for name in cfg["methods"]:
        hp = {**task.method_defaults(name, dataset, cfg["teacher"], student), **cfg["hparams"].get(name, {})} \
            if name != VANILLA else {}  # fmt: skip
        s, t, m = build_models(task, student, cfg["teacher"] if name != VANILLA else None, name, hp,
                               cfg["num_classes"], dataset, None, dev, channels_last=variant.channels_last)  # fmt: skip
        if world > 1 and cuda and (recipe.sync_bn if recipe.sync_bn is not None else task.sync_bn_default):
            s, m = convert_sync_bn([s, m], dev, lambda _m: None)  # what a data-parallel training job runs
        builts.append((name, Built(task, s, t, m, None, None, cfg["num_classes"], {})))
    if world > 1:
        import torch.distributed as tdist

        if not cuda and sys.platform.startswith("linux"):
            os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        tdist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                 world_size=world)  # fmt: skip
    try:
        d = Dist(rank, world)
        jobs = [_Job(name, built, recipe, batch, dev, variant, d) for name, built in builts]
        for job in jobs:
            for _ in range(max(cfg["warmup"], 3) if variant.compile != "off" else cfg["warmup"]):
                job.step()
        inner = cfg["inner"]
        for rnd in range(cfg["steps"]):
            k = rnd % len(jobs)
            for job in jobs[k:] + jobs[:k]:
                _fence(dev, d.parallel)
                t0 = time.perf_counter()
                for _ in range(inner):
                    job.step()
                _fence(dev, d.parallel)
                job.times.append((time.perf_counter() - t0) / inner)
        return {"times": {job.name: job.times for job in jobs}}
    finally:
        if world > 1:
            tdist.destroy_process_group()


# -- the driver -----------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(world: int, cfg: dict[str, Any]) -> dict[str, list[float]]:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="diffbench-speed-workers-") as tmp:
        out = Path(tmp) / "rank0.json"
        mp.start_processes(_rank, args=(world, _free_port(), cfg, str(out)), nprocs=world, start_method="spawn",
                           join=True)  # fmt: skip
        if not out.is_file():
            raise RuntimeError(f"{world} worker(s): rank 0 left no result")
        result = json.loads(out.read_text())
    if "error" in result:
        raise UserError(result["error"])
    return result["times"]


def benchmark_workers(
    task_name: str,
    teacher: str | None,
    student: str,
    methods: list[str],
    workers: Sequence[int],
    batch_size: int = 64,
    steps: int = 20,
    warmup: int = 3,
    device: str = "auto",
    dataset: str | None = None,
    num_classes: int = 100,
    hparams: dict[str, dict[str, Any]] | None = None,
    variant: Variant | None = None,
    inner: int | None = None,
    imports: list[str] | None = None,
    log: Callable[[str], None] = lambda _msg: None,
) -> tuple[list[WorkerRow], dict[str, Any]]:
    """Time each method with every N of ``workers`` (and 1) data-parallel local workers; see the module docstring.

    Args:
        batch_size: images per worker and step (weak scaling: N workers step N × ``batch_size`` images).
        variant: the one speed setting to time (default: what a training job on ``device`` runs).
        inner: steps per timed block (default 1 on CPU, :data:`bench.speed.variants.INNER_CUDA` on CUDA).
        imports: plugin modules for the workers to load (``None``: load no plugins).

    Returns:
        The rows and what they ran under (backend, threads per N, the worker counts timed).
    """
    from bench.engine.device import pick_device
    from tasks.base import get_task

    task = get_task(task_name)
    dataset = dataset or task.default_dataset
    dev = pick_device(device)
    counts = sorted({1, *workers})
    check_args(methods, teacher, batch_size, steps, warmup, inner)
    if any(n < 1 for n in counts):
        raise UserError("--workers: a worker count must be >= 1")
    if dev.type == "cuda" and counts[-1] > torch.cuda.device_count():
        raise UserError(f"--workers {counts[-1]}: one GPU per worker, and {torch.cuda.device_count()} CUDA "
                        f"device(s) are visible here")  # fmt: skip
    variant = variant or expand_variants(device_type=dev.type)[0]
    inner = inner or (INNER_CUDA if dev.type == "cuda" else 1)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    cores = cpu_cores()
    threads: dict[int, int | None] = {n: (threads_for(n, cores) if dev.type == "cpu" else None) for n in counts}
    if dev.type == "cpu" and counts[-1] > cores:
        log(f"warning: {counts[-1]} workers on {cores} cores: the ranks share cores (1 thread each)")
    cfg = {"task": task_name, "teacher": teacher, "student": student, "methods": list(dict.fromkeys(methods)),
           "batch_size": batch_size, "steps": steps, "warmup": warmup, "inner": inner, "device_type": dev.type,
           "dataset": dataset, "num_classes": num_classes, "hparams": hparams or {}, "variant": asdict(variant),
           "imports": imports}  # fmt: skip
    times: dict[tuple[str, int], list[float]] = {}
    for n in counts:
        where = f"{threads[n]} CPU thread(s) each" if dev.type == "cpu" else f"GPUs 0..{n - 1}"
        log(f"timing {n} worker(s) ({backend}, {where}): per-worker batch {batch_size}, global batch {n * batch_size}")
        for name, ts in _spawn(n, {**cfg, "threads": threads[n] or 1}).items():
            times[(name, n)] = ts
    info = {"backend": backend, "cores": cores, "threads_per_worker": {str(n): threads[n] for n in counts},
            "workers": counts, "inner": inner, "variant": variant.label}  # fmt: skip
    return scaling_rows(times, batch_size, threads, backend, variant.label), info


def run_workers(
    task: str, teacher: str | None, student: str, methods: list[str], workers: Sequence[int], dataset: str | None,
    batch_size: int, steps: int, warmup: int, device: str, precisions: Sequence[str], channels_last: Sequence[str],
    compiles: Sequence[str], inner: int | None = None, sets: dict[str, dict[str, Any]] | None = None,
    num_classes: int | None = None, imports: list[str] | None = None, log: Callable[[str], None] = lambda _m: None,
    peak_tflops: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """The JSON payload of ``diffbench speed --workers``: settings, environment and one dict per row.

    Exactly the given methods are timed (no implicit vanilla: scaling rows compare a method with itself).
    ``peak_tflops`` is refused: scaling rows have no FLOP figures.
    """
    from bench.engine.device import pick_device
    from tasks.base import get_task

    if peak_tflops is not None:
        raise UserError("--peak-tflops does not apply to --workers (no FLOP figures in scaling rows)")
    t = get_task(task)
    dataset = dataset or ("cifar100" if task == "classification" else t.default_dataset)
    dev = pick_device(device)
    variants = expand_variants(precisions, channels_last, compiles, dev.type)
    if len(variants) > 1:
        raise UserError(f"--workers times one speed variant; got {len(variants)} "
                        f"({', '.join(v.label for v in variants)}): give one --precision, --channels-last "
                        f"and --compile value")  # fmt: skip
    rows, info = benchmark_workers(task, teacher, student, methods, workers, batch_size=batch_size, steps=steps,
                                   warmup=warmup, device=str(dev), dataset=dataset,
                                   num_classes=num_classes or t.default_num_classes(dataset), hparams=sets,
                                   variant=variants[0], inner=inner, imports=imports, log=log)  # fmt: skip
    return {
        "task": task,
        "dataset": dataset,
        "teacher": teacher,
        "student": student,
        "scaling": "weak",
        "batch_size": batch_size,
        "per_worker_batch": batch_size,
        "steps": steps,
        "warmup": warmup,
        **info,
        **environment(dev),
        "rows": [r.to_dict() for r in rows],
    }


# -- rendering --------------------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def row_cells(r: WorkerRow) -> list[str]:
    """One table row's cells (``—`` where a figure does not apply)."""
    ms = ".1f" if r.ms_per_step >= 10 else ".2f"
    return [r.method, str(r.workers), str(r.batch_per_worker), str(r.global_batch), _fmt(r.ms_per_step, ms),
            _fmt(r.ms_iqr, ms), _fmt(r.images_per_s, ",.0f"), _fmt(r.efficiency_pct, ".1f")]  # fmt: skip


def describe(payload: dict[str, Any]) -> str:
    """The one-line setting of a scaling table: weak scaling, batches, backend, threads."""
    b, ns = payload["per_worker_batch"], payload["workers"]
    line = (f"weak scaling: per-worker batch {b}, global batch N×{b} ({', '.join(str(n * b) for n in ns)}); "
            f"{payload['backend']} on {payload['device']} ({payload['device_name']}), {payload['variant']}, "
            f"{payload['steps']} rounds × {payload['inner']} steps")  # fmt: skip
    if payload["backend"] == "gloo":
        per = ", ".join(f"{n}→{t}" for n, t in payload["threads_per_worker"].items())
        line += f"; CPU threads per worker = max(1, {payload['cores']} cores // N): {per}"
    return line


def markdown_table(rows: Sequence[WorkerRow]) -> str:
    """The scaling table as Markdown (``python -m bench.speed --workers``)."""
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if c == "method" else "--:" for c in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(row_cells(r)) + " |" for r in rows]
    return "\n".join(lines)

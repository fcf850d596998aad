"""Many jobs per GPU: N concurrent CIFAR-shaped distillation jobs on one device, per-job and aggregate images/s.

A CIFAR student such as resnet8x4 at batch 64 leaves most of a large GPU idle: its kernels are small and
a step is bound by kernel launches, not by arithmetic. Several jobs in separate processes keep the device
busy with each other's kernels (``diffbench run --gpus-per-job 0.25`` packs four). This benchmark
measures what packing buys: it starts 1, 2, 4, 8 concurrent jobs (``multiprocessing`` spawn, no Ray),
each a real training loop — its own teacher, student, method, fused SGD and :class:`bench.engine.step.Stepper`
at the job's precision and memory format — over its own device-resident synthetic CIFAR-shaped ``uint8``
training set, augmented on the device by :class:`tasks.classification.resident.ResidentLoader`. All jobs
of a configuration build and warm up (compile) first, then start their timed steps together at a barrier.

Reported per configuration: every job's images/s and peak memory (allocated by tensors, and reserved by
PyTorch's caching allocator), and the aggregate: all images / (last job's end - first job's start).
:func:`max_packing` turns one job's measured peak into the number of jobs a device holds.

    python -m bench.perf.packing                     # CUDA: resnet32x4->resnet8x4 KD, batch 64, bf16 + channels_last
    python -m bench.perf.packing --device cpu --tiny # a CPU check of the machinery (tiny sizes)

Speed is measured here, never asserted in tests. Imports neither Ray nor MLflow.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue as queue_mod
import sys
import time
import traceback
from dataclasses import asdict, dataclass, replace
from typing import Any

#: What one CUDA process costs beyond its tensors: the CUDA context and kernel images (~0.5 GB on recent
#: GPUs and CUDA 12) plus cuDNN/cuBLAS workspaces. A conservative round figure.
CUDA_CONTEXT_MB = 768.0


def max_packing(peak_mem_mb: float, device_mem_mb: float, context_mb: float = CUDA_CONTEXT_MB,
                headroom: float = 0.1) -> int:  # fmt: skip
    """How many jobs whose measured peak is ``peak_mem_mb`` fit together on a device of ``device_mem_mb``.

    Each job needs its peak (``torch.cuda.max_memory_reserved``, or ``max_memory_allocated`` plus some
    slack) and its own CUDA context; ``headroom`` of the device stays free for fragmentation and the
    driver. A scheduler that packs more jobs than this risks out-of-memory failures mid-run.

    Args:
        peak_mem_mb: one job's measured peak memory, MiB.
        device_mem_mb: the device's total memory, MiB.
        context_mb: per-process overhead outside PyTorch's allocator, MiB.
        headroom: fraction of the device kept free.
    """
    if peak_mem_mb < 0 or device_mem_mb <= 0:
        raise ValueError(f"need peak_mem_mb >= 0 and device_mem_mb > 0, got {peak_mem_mb} and {device_mem_mb}")
    usable = device_mem_mb * (1.0 - headroom)
    return max(0, int(usable // (peak_mem_mb + context_mb)))


@dataclass(frozen=True)
class JobConfig:
    """One packed job's setting (every job of a configuration runs the same)."""

    teacher: str = "resnet32x4"
    student: str = "resnet8x4"
    method: str = "kd"
    batch_size: int = 64
    steps: int = 300
    warmup: int = 20
    images: int = 50_000
    precision: str = "bf16"
    channels_last: bool = True
    compile: str = "off"
    device: str = "cuda"
    num_classes: int = 100
    #: CPU threads per job (0: the CPUs divided by the jobs).
    threads: int = 0


def _job(rank: int, cfg: JobConfig, n_jobs: int, barrier: Any, results: Any) -> None:
    """One job process: build, warm up, wait for the others, train ``cfg.steps`` timed steps, report."""
    try:
        import torch

        from bench.engine.build import Built, build_models, make_optimizer, set_lr
        from bench.engine.device import pick_device
        from bench.engine.step import Stepper
        from bench.speed.data import random_cifar
        from methods.base import Progress
        from tasks.base import get_task
        from tasks.classification.resident import ResidentLoader

        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(cfg.threads or max(1, cpus // n_jobs))
        dev = pick_device(cfg.device)
        torch.manual_seed(rank)
        task = get_task("classification")
        recipe = task.recipe("cifar100", cfg.student)
        hp = task.method_defaults(cfg.method, "cifar100", cfg.teacher, cfg.student) if cfg.method != "vanilla" else {}
        s, t, m = build_models(task, cfg.student, cfg.teacher if cfg.method != "vanilla" else None, cfg.method, hp,
                               cfg.num_classes, "cifar100", None, dev, channels_last=cfg.channels_last)  # fmt: skip
        built = Built(task, s, t, m, None, None, cfg.num_classes, {})
        data = random_cifar(cfg.images, seed=rank)
        loader = ResidentLoader(data, cfg.batch_size, dev, train=True, generator=torch.Generator().manual_seed(rank),
                                channels_last=cfg.channels_last)  # fmt: skip
        optimizer = make_optimizer(recipe, s, m, dev)
        stepper = Stepper(built, optimizer, dev, cfg.precision, cfg.compile, log=lambda _msg: None)

        def batches():
            while True:
                yield from loader

        it = batches()
        step = 0

        def train(n: int) -> int:
            nonlocal step
            seen = 0
            for _ in range(n):
                set_lr(optimizer, recipe.lr)
                progress = Progress(epoch=recipe.epochs, epochs=recipe.epochs, step=step, steps_per_epoch=len(loader))
                seen += stepper.step(next(it), progress)
                stepper.check(recipe.epochs, step)
                step += 1
            stepper.check(recipe.epochs, step, force=True)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return seen

        train(max(cfg.warmup, 3 if cfg.compile != "off" else 0))
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        barrier.wait(timeout=900)
        t0 = time.time()
        seen = train(cfg.steps)
        t1 = time.time()
        out = {"rank": rank, "images": seen, "start": t0, "end": t1, "images_per_s": seen / (t1 - t0),
               "compile_time_s": stepper.compile_time_s or None, "loss": stepper.last_loss}  # fmt: skip
        if dev.type == "cuda":
            out["peak_mem_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
            out["peak_reserved_mb"] = torch.cuda.max_memory_reserved(dev) / 2**20
        results.put(out)
    except BaseException as err:  # noqa: BLE001 - reported to the parent, which carries on
        try:
            barrier.abort()
        except Exception:  # noqa: BLE001
            pass
        results.put({"rank": rank, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()})


def run_packed(n_jobs: int, cfg: JobConfig, timeout_s: float = 900.0) -> dict[str, Any]:
    """Run ``n_jobs`` concurrent jobs of ``cfg``; per-job figures and the aggregate images/s."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(n_jobs)
    results = ctx.Queue()
    procs = [ctx.Process(target=_job, args=(r, cfg, n_jobs, barrier, results), daemon=True) for r in range(n_jobs)]
    t_start = time.time()
    for p in procs:
        p.start()
    jobs: list[dict[str, Any]] = []
    deadline = time.time() + timeout_s
    while len(jobs) < n_jobs and time.time() < deadline:
        try:
            jobs.append(results.get(timeout=1.0))
        except queue_mod.Empty:
            if not any(p.is_alive() for p in procs) and results.empty():
                break  # a process died without reporting (killed, segfault)
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.terminate()
            p.join(timeout=5)
    missing = sorted(set(range(n_jobs)) - {j["rank"] for j in jobs})
    jobs += [{"rank": r, "error": "no report (process died or timed out)"} for r in missing]
    jobs.sort(key=lambda j: j["rank"])
    ok = [j for j in jobs if "error" not in j]
    out: dict[str, Any] = {"jobs": n_jobs, "per_job": jobs, "wall_s": time.time() - t_start,
                           "errors": [j["error"] for j in jobs if "error" in j]}  # fmt: skip
    if ok:
        span = max(j["end"] for j in ok) - min(j["start"] for j in ok)
        out["aggregate_images_per_s"] = sum(j["images"] for j in ok) / span if len(ok) == n_jobs else None
        out["mean_job_images_per_s"] = sum(j["images_per_s"] for j in ok) / len(ok)
        out["min_job_images_per_s"] = min(j["images_per_s"] for j in ok)
        mems = [j["peak_reserved_mb"] for j in ok if "peak_reserved_mb" in j]
        out["peak_reserved_mb_max"] = max(mems) if mems else None
    return out


def packing_benchmark(jobs: list[int], cfg: JobConfig, log: Any = print, timeout_s: float = 900.0) -> dict[str, Any]:
    """Every configuration of ``jobs`` in turn, and how many jobs of this kind the device could hold."""
    import torch

    out: dict[str, Any] = {"config": asdict(cfg), "torch": torch.__version__, "configs": []}
    if cfg.device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(cfg.device))
        out.update(device_name=props.name, device_mem_mb=props.total_memory / 2**20)
    for n in jobs:
        log(f"packing: {n} concurrent job(s) of {cfg.method} {cfg.teacher}->{cfg.student}, batch {cfg.batch_size}, "
            f"{cfg.precision}{' channels_last' if cfg.channels_last else ''}, {cfg.steps} steps")  # fmt: skip
        res = run_packed(n, cfg, timeout_s)
        agg = res.get("aggregate_images_per_s")
        log(f"  -> aggregate {agg:,.0f} images/s, per job {res['mean_job_images_per_s']:,.0f} (min "
            f"{res['min_job_images_per_s']:,.0f})" if agg else f"  -> failed: {res['errors'][:1]}")  # fmt: skip
        out["configs"].append(res)
        if res["errors"]:
            break  # more jobs would fail the same way (out of memory)
    first = next((c for c in out["configs"] if c.get("peak_reserved_mb_max")), None)
    if first is not None and "device_mem_mb" in out:
        out["max_packing"] = max_packing(first["peak_reserved_mb_max"], out["device_mem_mb"])
    return out


def markdown(result: dict[str, Any]) -> str:
    """The packing table as Markdown."""
    lines = ["| jobs | aggregate images/s | per job images/s (mean / min) | peak reserved MiB / job | errors |",
             "|--:|--:|--:|--:|:--|"]  # fmt: skip
    for c in result["configs"]:
        agg = c.get("aggregate_images_per_s")
        per = f"{c['mean_job_images_per_s']:,.0f} / {c['min_job_images_per_s']:,.0f}" if "mean_job_images_per_s" in c \
            else "—"  # fmt: skip
        mem = c.get("peak_reserved_mb_max")
        lines.append(f"| {c['jobs']} | {'—' if agg is None else f'{agg:,.0f}'} | {per} | "
                     f"{'—' if mem is None else f'{mem:,.0f}'} | {'; '.join(c['errors'])[:200] or ''} |")  # fmt: skip
    if "max_packing" in result:
        lines.append(f"\nJobs of this kind that fit on the device (measured peak + {CUDA_CONTEXT_MB:.0f} MiB context "
                     f"each, 10 % kept free): {result['max_packing']}")  # fmt: skip
    return "\n".join(lines)


#: Sizes of ``--tiny``: a CPU check that the machinery works, in seconds.
TINY = {"teacher": "resnet8", "student": "resnet8", "batch_size": 8, "steps": 3, "warmup": 1, "images": 64,
        "precision": "fp32", "channels_last": False}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="N concurrent CIFAR-shaped KD jobs on one device: aggregate images/s.")
    ap.add_argument("--jobs", default="1,2,4,8", help="comma list of concurrent job counts")
    ap.add_argument("--teacher", default=JobConfig.teacher)
    ap.add_argument("--student", default=JobConfig.student)
    ap.add_argument("--method", default=JobConfig.method)
    ap.add_argument("--batch-size", type=int, default=JobConfig.batch_size)
    ap.add_argument("--steps", type=int, default=JobConfig.steps, help="timed steps per job")
    ap.add_argument("--warmup", type=int, default=JobConfig.warmup)
    ap.add_argument("--images", type=int, default=JobConfig.images, help="resident synthetic training images per job")
    ap.add_argument("--precision", default=None, help="fp32 | bf16 | fp16 (default: bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--channels-last", choices=("on", "off"), default=None, help="default: on for CUDA")
    ap.add_argument("--compile", default="off")
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes (a CPU check)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration")
    ap.add_argument("--json", default=None, help="also write the result to this file")
    a = ap.parse_args(argv)
    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = device.startswith("cuda")
    cfg = JobConfig(teacher=a.teacher, student=a.student, method=a.method, batch_size=a.batch_size, steps=a.steps,
                    warmup=a.warmup, images=a.images, precision=a.precision or ("bf16" if cuda else "fp32"),
                    channels_last=(a.channels_last or ("on" if cuda else "off")) == "on",
                    compile={"on": "default"}.get(a.compile, a.compile), device=device)  # fmt: skip
    if a.tiny:
        cfg = replace(cfg, **TINY)
    jobs = [int(x) for x in a.jobs.split(",") if x.strip()]
    result = packing_benchmark(jobs, cfg, log=lambda m: print(m, file=sys.stderr, flush=True), timeout_s=a.timeout)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    print(markdown(result))


if __name__ == "__main__":
    main()

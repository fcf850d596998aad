"""The GPU suite: speed, epoch time, packing, profiles and compilation on one GPU, one section per process
(``bench/perf/gpu_suite.sh`` runs them all).

Sections (``python -m bench.perf.gpu_suite SECTION --out DIR [--smoke]``), each writing ``DIR/SECTION.json``:

* ``env``: device, memory, torch/CUDA/cuDNN versions, ``nvidia-smi``.
* ``speed``: ``diffbench speed`` rows for resnet32x4->resnet8x4 at batch 64, every method, fp32/bf16 x
  channels_last on/off (eager): ms/step, images/s, FLOPs, % of the dense peak, memory; DiffKD/KD ratio.
* ``epoch``: one timed training epoch of KD and DiffKD over 50,000 synthetic CIFAR-shaped ``uint8`` images
  held on the device (the CIFAR training pipeline: pad-4 crop, flip, normalise on the device) plus the
  10,000-image evaluation, at bf16 + channels_last; the 240-epoch estimate is 240 x (epoch + evaluation).
* ``e2e``: a real ``run_job`` (the training loop itself: build, teacher evaluation, epochs with evaluation
  and atomic checkpoints) for 2 epochs on a generated CIFAR-100 archive on disk (official pickle format);
  per-epoch wall time from the loop's own reporter, and the 240-epoch estimate from it.
* ``packing``: 1, 2, 4, 8 concurrent KD jobs on the device (:mod:`bench.perf.packing`).
* ``profile``: ``torch.profiler`` of KD and DiffKD steps: top kernels, CPU-side ops, launches per step.
* ``compile_default`` / ``compile_ro``: KD and DiffKD with ``torch.compile`` (default / reduce-overhead)
  beside eager, interleaved; compile time separately.
* ``summary``: ``DIR/summary.md`` from whatever sections finished, against the targets
  (:data:`bench.perf.gpu_suite_summary.TARGETS`).

A failing section writes ``{"error": ...}`` and exits 1; the others still run. ``--smoke`` shrinks every
size so the whole script runs on a CPU in a few minutes (a check of the script, not a measurement).
Imports neither Ray nor MLflow (nor typer or rich): the GPU machine has only torch and torchvision.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from methods import catalog

PAIR = ("resnet32x4", "resnet8x4")
METHODS = [catalog.VANILLA, *catalog.BUILTIN]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _device(smoke: bool) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")


def _pair(smoke: bool) -> tuple[str, str]:
    return ("resnet8", "resnet8") if smoke else PAIR


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


# -- sections -------------------------------------------------------------------------------------------


def section_env(a: argparse.Namespace) -> dict[str, Any]:
    from bench.speed.system import environment

    dev = _device(a.smoke)
    out = environment(dev)
    out.update(python=sys.version.split()[0], cpus=os.cpu_count(), torchvision=_version("torchvision"),
               ray_importable=_importable("ray"), mlflow_importable=_importable("mlflow"))  # fmt: skip
    try:
        out["nvidia_smi"] = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        out["nvidia_smi"] = None
    return out


def section_speed(a: argparse.Namespace) -> dict[str, Any]:
    from bench.speed.steps import SpeedRow, run
    from bench.speed.table import markdown_table

    teacher, student = _pair(a.smoke)
    precisions = ["fp32", "bf16"]
    payload = run("classification", teacher, student, METHODS, "cifar100", 4 if a.smoke else 64,
                  2 if a.smoke else 15, 1 if a.smoke else 5, str(_device(a.smoke)), precisions, ["on", "off"],
                  ["off"], inner=1 if a.smoke else 20, log=_log)  # fmt: skip
    rows = [SpeedRow(**r) for r in payload["rows"]]
    payload["markdown"] = markdown_table(rows)
    payload["diffkd_kd_ratio"] = {r.variant: r.vs_kd for r in rows if r.method == "diffkd"}
    return payload


def _cifar_bundle(n_train: int, n_val: int) -> Any:
    """Synthetic CIFAR-100-shaped ``uint8`` splits with the real CIFAR transforms (random pixels and labels)."""
    import numpy as np

    from tasks.base import DataBundle
    from tasks.classification.data import CIFAR100Pickle, cifar100_transform

    rng = np.random.default_rng(0)
    classes = [f"class{i}" for i in range(100)]

    def split(n: int, train: bool) -> CIFAR100Pickle:
        data = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        return CIFAR100Pickle.from_arrays(data, rng.integers(0, 100, size=n).tolist(), classes,
                                          cifar100_transform(train))  # fmt: skip

    return DataBundle(split(n_train, True), split(n_val, False), 100)


def _epoch_of(method: str, bundle: Any, recipe: Any, dev: torch.device, smoke: bool) -> dict[str, Any]:
    """One warm training epoch of ``method`` through the loop's loaders and Stepper, then one evaluation."""
    from bench.engine.build import Built, build_models, make_loaders, make_optimizer, set_lr
    from bench.engine.loop import lr_factor
    from bench.engine.step import Stepper
    from methods.base import Progress
    from tasks.base import get_task

    teacher, student = _pair(smoke)
    task = get_task("classification")
    train, val = make_loaders(task, bundle, recipe, dev, torch.Generator().manual_seed(0))
    hp = task.method_defaults(method, "cifar100", teacher, student)
    s, t, m = build_models(task, student, teacher, method, hp, 100, "cifar100", None, dev,
                           channels_last=bool(recipe.channels_last))  # fmt: skip
    opt = make_optimizer(recipe, s, m, dev)
    stepper = Stepper(Built(task, s, t, m, train, val, 100, {}), opt, dev, recipe.precision, recipe.compile, _log)
    iters = len(train)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def epoch(limit: int | None = None) -> tuple[float, int]:
        stepper.reset()
        _sync(dev)
        t0, seen = time.perf_counter(), 0
        for step, batch in enumerate(train):
            if limit is not None and step >= limit:
                break
            set_lr(opt, recipe.lr * lr_factor(recipe, step, iters))
            seen += stepper.step(batch, Progress(1, recipe.epochs, step, iters))
            stepper.check(1, step, force=step + 1 == iters)
        _sync(dev)
        return time.perf_counter() - t0, seen

    epoch(limit=min(20, iters))  # warm-up: cuDNN autotuning, the allocator's pools
    t_train, seen = epoch()
    t0 = time.perf_counter()
    metrics = stepper.evaluate(s, val)
    _sync(dev)
    t_eval = time.perf_counter() - t0
    return {"train_epoch_s": t_train, "eval_s": t_eval, "images_per_s": seen / t_train, "steps": iters,
            "val_top1": metrics["top1"], "run_240_min": 240 * (t_train + t_eval) / 60,
            "peak_mem_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None}  # fmt: skip


def section_epoch(a: argparse.Namespace) -> dict[str, Any]:
    from tasks.base import get_task

    dev = _device(a.smoke)
    cuda = dev.type == "cuda"
    recipe = get_task("classification").recipe("cifar100", _pair(a.smoke)[1]).updated(
        precision="bf16" if cuda else "fp32", channels_last=cuda, data_pipeline="device")
    n_train, n_val = (256, 128) if a.smoke else (50_000, 10_000)
    bundle = _cifar_bundle(n_train, n_val)
    out: dict[str, Any] = {"images": n_train, "val_images": n_val,
                           "recipe": {k: v for k, v in recipe.to_dict().items() if k != "extra"}}  # fmt: skip
    for method in ("kd", "diffkd"):
        _log(f"epoch: {method}")
        e = out[method] = _epoch_of(method, bundle, recipe, dev, a.smoke)
        _log(f"  {method}: epoch {e['train_epoch_s']:.2f}s ({e['images_per_s']:,.0f} img/s) + eval {e['eval_s']:.2f}s"
             f" -> 240 epochs {e['run_240_min']:.1f} min")  # fmt: skip
        if cuda:
            torch.cuda.empty_cache()
    return out


def _write_cifar_archive(root: Path, n_train: int, n_test: int) -> None:
    """A CIFAR-100 python-version archive (``train``, ``test``, ``meta`` pickles) of random images."""
    import numpy as np

    rng = np.random.default_rng(0)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        entry = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 "fine_labels": rng.integers(0, 100, size=n).tolist()}  # fmt: skip
        with (folder / name).open("wb") as f:
            pickle.dump(entry, f, protocol=4)
    with (folder / "meta").open("wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)]}, f)


def section_e2e(a: argparse.Namespace) -> dict[str, Any]:
    from bench.engine.loop import run_job
    from bench.jobs.spec import resolve_job
    from tasks.classification.models import zoo

    dev = _device(a.smoke)
    teacher, student = _pair(a.smoke)
    cuda = dev.type == "cuda"
    n_train, n_test = (256, 128) if a.smoke else (50_000, 10_000)
    with tempfile.TemporaryDirectory(prefix="diffbench_e2e_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        _write_cifar_archive(root / "data", n_train, n_test)
        t_write = time.perf_counter() - t0
        ckpt = root / "teacher.pth"
        torch.save({"model": zoo.build(teacher, 100).state_dict()}, ckpt)
        overrides: dict[str, Any] = {"epochs": 2, "data_pipeline": "device"}
        if a.smoke:
            overrides["batch_size"] = 32
        spec = resolve_job(task="classification", dataset="cifar100", student=student, method="kd", teacher=teacher,
                           teacher_ref=f"file:{ckpt}", data_dir=root / "data", recipe_overrides=overrides,
                           device=dev.type)  # fmt: skip
        marks: dict[str, float] = {}
        t_start = time.perf_counter()

        def on_begin(_done: int) -> None:
            marks["begin"] = time.perf_counter()

        def reporter(epoch: int, _metrics: dict[str, float], _path: Path) -> None:
            marks[f"epoch{epoch}"] = time.perf_counter()

        result = run_job(spec, root / "out", device=str(dev), log=_log, on_begin=on_begin, reporter=reporter)
        t_end = time.perf_counter()
    setup = marks["begin"] - t_start
    first = marks["epoch1"] - marks["begin"]
    steady = marks["epoch2"] - marks["epoch1"]
    hist = result.history
    return {
        "recipe": {k: v for k, v in spec.recipe.items() if k != "extra"},
        "images": n_train,
        "archive_write_s": t_write,
        "setup_s": setup,
        "epoch1_wall_s": first,
        "epoch2_wall_s": steady,
        "epoch_train_s": [h["epoch_time_s"] for h in hist],
        "run_job_wall_s": t_end - t_start,
        "images_per_s": result.metrics.get("images_per_s"),
        "peak_mem_mb": result.metrics.get("peak_mem_mb"),
        "run_240_min": (setup + first + 239 * steady) / 60,
        "cuda": cuda,
    }


def section_packing(a: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import replace

    from bench.perf.packing import TINY, JobConfig, markdown, packing_benchmark

    dev = _device(a.smoke)
    if a.smoke:
        cfg, jobs = replace(JobConfig(device="cpu", threads=1), **TINY), [1, 2]
    else:
        cfg, jobs = JobConfig(device=str(dev), steps=400, warmup=20), [1, 2, 4, 8]
    out = packing_benchmark(jobs, cfg, log=_log, timeout_s=60 if a.smoke else 100)
    out["markdown"] = markdown(out)
    return out


def _profile_one(method: str, dev: torch.device, smoke: bool, out_dir: Path) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    from bench.engine.build import Built, build_models, make_optimizer, set_lr
    from bench.engine.step import Stepper
    from methods.base import Progress
    from tasks.base import get_task

    teacher, student = _pair(smoke)
    task = get_task("classification")
    cuda = dev.type == "cuda"
    recipe = task.recipe("cifar100", student)
    hp = task.method_defaults(method, "cifar100", teacher, student)
    s, t, m = build_models(task, student, teacher, method, hp, 100, "cifar100", None, dev, channels_last=cuda)
    opt = make_optimizer(recipe, s, m, dev)
    stepper = Stepper(Built(task, s, t, m, None, None, 100, {}), opt, dev, "bf16" if cuda else "fp32", "off", _log)
    images, labels = task.synthetic_batch(4 if smoke else 64, 100, dev, dataset="cifar100", arch=student)
    batch = (images.contiguous(memory_format=torch.channels_last) if cuda else images, labels)
    n = 2 if smoke else 10

    def steps(k: int) -> None:
        for i in range(k):
            set_lr(opt, recipe.lr)
            stepper.step(batch, Progress(recipe.epochs, recipe.epochs, i, 1000))
            stepper.check(recipe.epochs, i)

    steps(3 if smoke else 20)
    _sync(dev)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        steps(n)
        _sync(dev)
    wall = (time.perf_counter() - t0) / n
    events = prof.key_averages()
    dev_key = "self_device_time_total" if hasattr(events[0], "self_device_time_total") else "self_cuda_time_total"
    on_gpu = [e for e in events if str(getattr(e, "device_type", "")).endswith("CUDA")]
    kernels = sum(e.count for e in on_gpu)
    gpu_us = sum(getattr(e, dev_key, 0) for e in on_gpu)
    launches = sum(e.count for e in events if "LaunchKernel" in e.key or "LaunchCooperativeKernel" in e.key)
    # ops the Python step (or autograd) dispatched itself, not those an op called inside: what launch cost scales with
    top_ops = sum(1 for e in prof.events() if e.name.startswith("aten::")
                  and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))) / n  # fmt: skip
    text = [f"{method}: {n} profiled steps, {wall * 1e3:.2f} ms/step wall (under the profiler)",
            f"per step: {launches / n:.0f} kernel launch calls, {kernels / n:.0f} GPU kernels/copies taking "
            f"{gpu_us / n / 1e3:.3f} ms, {top_ops:.0f} top-level aten ops", ""]  # fmt: skip
    if cuda:
        text += ["== top 25 by self CUDA time ==", events.table(sort_by=dev_key, row_limit=25), ""]
    text += ["== top 25 by self CPU time ==", events.table(sort_by="self_cpu_time_total", row_limit=25)]
    (out_dir / f"profile_{method}.txt").write_text("\n".join(text))
    return {"wall_ms_per_step": wall * 1e3, "launches_per_step": launches / n, "kernels_per_step": kernels / n,
            "gpu_kernel_ms_per_step": gpu_us / n / 1e3, "top_level_ops_per_step": top_ops,
            "gpu_busy_fraction": (gpu_us / n / 1e3) / (wall * 1e3) if cuda and wall else None}  # fmt: skip


def section_profile(a: argparse.Namespace) -> dict[str, Any]:
    dev = _device(a.smoke)
    out: dict[str, Any] = {}
    for method in ("kd", "diffkd"):
        _log(f"profile: {method}")
        try:
            out[method] = _profile_one(method, dev, a.smoke, Path(a.out))
        except Exception as err:  # noqa: BLE001 - the other method's profile is still worth having
            out[method] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    return out


def _section_compile(a: argparse.Namespace, mode: str) -> dict[str, Any]:
    from bench.speed.steps import Variant, benchmark
    from bench.speed.table import markdown_table

    dev = _device(a.smoke)
    teacher, student = _pair(a.smoke)
    cuda = dev.type == "cuda"
    prec = "bf16" if cuda else "fp32"
    variants = [Variant(prec, cuda, "off"), Variant(prec, cuda, mode)]
    rows = benchmark("classification", teacher, student, ["kd", "diffkd"], batch_size=4 if a.smoke else 64,
                     steps=2 if a.smoke else 10, warmup=1 if a.smoke else 5, device=str(dev), dataset="cifar100",
                     num_classes=100, variants=variants, inner=1 if a.smoke else 20, flops=False,
                     log=_log)  # fmt: skip
    by = {(r.method, r.compile): r for r in rows}
    ratio = {c: by[("diffkd", c)].ms_per_step / by[("kd", c)].ms_per_step for c in ("off", mode)}
    return {"mode": mode, "rows": [r.to_dict() for r in rows], "markdown": markdown_table(rows),
            "diffkd_kd_ratio": ratio}


def section_compile_default(a: argparse.Namespace) -> dict[str, Any]:
    return _section_compile(a, "default")


def section_compile_ro(a: argparse.Namespace) -> dict[str, Any]:
    return _section_compile(a, "reduce-overhead")


SECTIONS = {
    "env": section_env,
    "speed": section_speed,
    "epoch": section_epoch,
    "e2e": section_e2e,
    "packing": section_packing,
    "profile": section_profile,
    "compile_default": section_compile_default,
    "compile_ro": section_compile_ro,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="The GPU suite, one section per call.")
    ap.add_argument("section", choices=[*SECTIONS, "summary"])
    ap.add_argument("--out", required=True, help="folder for SECTION.json (and profile_*.txt, summary.md)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks the script, measures nothing")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.section == "summary":
        from bench.perf.gpu_suite_summary import write_summary

        print(write_summary(out))
        return 0
    t0 = time.perf_counter()
    _log(f"section {a.section} starts")
    try:
        result = SECTIONS[a.section](a)
        rc = 0
    except Exception as err:  # noqa: BLE001 - recorded; the script's other sections still run
        traceback.print_exc()
        result, rc = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}, 1
    result["section_s"] = time.perf_counter() - t0
    result["smoke"] = a.smoke
    (out / f"{a.section}.json").write_text(json.dumps(result, indent=2, default=_jsonable))
    _log(f"section {a.section} {'done' if rc == 0 else 'FAILED'} in {result['section_s']:.1f}s")
    return rc


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return str(obj)


def _version(mod: str) -> str | None:
    try:
        return __import__(mod).__version__
    except Exception:  # noqa: BLE001
        return None


def _importable(mod: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(mod) is not None


if __name__ == "__main__":
    raise SystemExit(main())

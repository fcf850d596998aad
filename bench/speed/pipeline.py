"""Data-pipeline benchmark: the per-sample PIL ``DataLoader`` against the device-resident loader.

Both pipelines produce the same CIFAR training batches (pad-4 crop, flip, normalisation) from the same
in-memory ``uint8`` images on the same CPU cores; the figure of merit is images/s. The PIL path is timed
as a training loop sees it: ``DataLoader(shuffle=True, num_workers=W)`` plus the copy to ``device``
(pinned, non-blocking on CUDA). Worker start-up and the first batch are excluded from both.

    python -m bench.speed.pipeline            # 50,000 random CIFAR-shaped images, batch 64, CPU

``diffbench speed --data`` calls :func:`time_pipeline`. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tasks.classification.data import CIFAR100Pickle, cifar100_transform
from tasks.classification.resident import ResidentLoader, supports


def random_cifar(n: int = 50_000, seed: int = 0) -> CIFAR100Pickle:
    """A CIFAR-100-shaped training split of ``n`` random ``uint8`` images with the training transform."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, size=n).tolist()
    return CIFAR100Pickle.from_arrays(data, labels, [f"class{i}" for i in range(100)], cifar100_transform(True))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _endless(loader: Iterable) -> Iterator[Any]:
    while True:
        yield from loader


def _rate(batches: Iterator[Any], steps: int, device: torch.device, to_device: bool) -> float:
    """Images/s over ``steps`` batches after one warm-up batch."""

    def take() -> int:
        x, y = next(batches)
        if to_device:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        return int(x.shape[0])

    take()
    _sync(device)
    t0 = time.perf_counter()
    n = sum(take() for _ in range(steps))
    _sync(device)
    return n / (time.perf_counter() - t0)


def time_pipeline(
    dataset: Dataset | None,
    batch_size: int,
    device: torch.device | str,
    steps: int,
    *,
    num_workers: Iterable[int] | None = None,
    threads: Iterable[int] | None = None,
    repeats: int = 3,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Images/s of the PIL ``DataLoader`` and of :class:`ResidentLoader` on one training set.

    Each figure is the best of ``repeats`` runs of ``steps`` batches (others may share the CPUs: the best
    run is the least disturbed one). The PIL path is timed with every worker count in ``num_workers``
    (default: 0 and the CPUs this process may use) and its best is the baseline, so the ratio is never
    flattered by a bad worker count. The resident path is timed with every intra-op thread count in
    ``threads`` (default: 1 and torch's current count) and its best is reported: on a CPU shared with other
    work, two OpenMP threads can lose to one on batches this small.

    Args:
        dataset: a training split that :func:`~tasks.classification.resident.supports` accepts and that
            a ``DataLoader`` can read (default: :func:`random_cifar`, 50,000 images).
        batch_size: images per batch (the CIFAR recipe's 64 is the honest figure).
        device: where the resident images live and the PIL batches are copied to.
        steps: timed batches per run.
        num_workers: ``DataLoader`` worker counts to try.
        threads: ``torch.set_num_threads`` values to try for the resident loader (restored afterwards).
        repeats: runs per configuration.
        channels_last: resident output memory format.

    Returns:
        ``images``, ``batch_size``, ``device``, ``cpus``, ``torch_threads``, ``pil`` (best images/s),
        ``pil_workers`` (its worker count), ``pil_by_workers``, ``resident`` (best images/s),
        ``resident_threads`` (its thread count), ``resident_by_threads``, ``resident_upload_s`` (moving the
        data set to the device once), ``speedup``.
    """
    device = torch.device(device)
    dataset = random_cifar() if dataset is None else dataset
    if not supports(dataset):
        raise ValueError(f"{type(dataset).__name__} has no device-resident form to compare")
    workers = sorted(set(num_workers if num_workers is not None else (0, _cpus())))
    cuda = device.type == "cuda"

    pil_by_workers: dict[int, float] = {}
    for w in workers:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=w,
                            pin_memory=cuda, persistent_workers=w > 0, generator=torch.Generator().manual_seed(0))
        batches = _endless(loader)
        pil_by_workers[w] = max(_rate(batches, steps, device, to_device=True) for _ in range(repeats))
        del batches, loader  # stop the workers before the next configuration

    t0 = time.perf_counter()
    resident = ResidentLoader(dataset, batch_size, device, train=True, generator=torch.Generator().manual_seed(0),
                              channels_last=channels_last)
    _sync(device)
    upload = time.perf_counter() - t0
    batches = _endless(resident)
    default_threads = torch.get_num_threads()
    res_by_threads: dict[int, float] = {}
    try:
        for t in sorted(set(threads if threads is not None else (1, default_threads))):
            torch.set_num_threads(t)
            res_by_threads[t] = max(_rate(batches, steps, device, to_device=False) for _ in range(repeats))
    finally:
        torch.set_num_threads(default_threads)

    best_w = max(pil_by_workers, key=pil_by_workers.__getitem__)
    best_t = max(res_by_threads, key=res_by_threads.__getitem__)
    return {
        "images": len(dataset),  # type: ignore[arg-type]
        "batch_size": batch_size,
        "device": str(device),
        "cpus": _cpus(),
        "torch_threads": default_threads,
        "pil": pil_by_workers[best_w],
        "pil_workers": best_w,
        "pil_by_workers": pil_by_workers,
        "resident": res_by_threads[best_t],
        "resident_threads": best_t,
        "resident_by_threads": res_by_threads,
        "resident_upload_s": upload,
        "speedup": res_by_threads[best_t] / pil_by_workers[best_w],
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: print :func:`time_pipeline`'s figures for a random CIFAR-shaped training set."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="*", default=None,
                    help="torch intra-op thread counts to try for the resident loader (default: 1 and torch's)")
    ap.add_argument("--workers", type=int, nargs="*", default=None,
                    help="DataLoader worker counts to try (default: 0 and the CPU count)")
    args = ap.parse_args(argv)
    r = time_pipeline(random_cifar(args.images), args.batch_size, args.device, args.steps,
                      num_workers=args.workers, threads=args.threads, repeats=args.repeats)
    by_w = ", ".join(f"{w} workers {v:,.0f}" for w, v in r["pil_by_workers"].items())
    by_t = ", ".join(f"{t} threads {v:,.0f}" for t, v in r["resident_by_threads"].items())
    print(f"{r['images']:,} CIFAR-shaped uint8 images, batch {r['batch_size']}, device {r['device']}, "
          f"{r['cpus']} CPUs")
    print(f"PIL DataLoader   {r['pil']:>12,.0f} images/s  (best of: {by_w})")
    print(f"device-resident  {r['resident']:>12,.0f} images/s  (best of: {by_t})")
    print(f"resident upload  {r['resident_upload_s']:>12.2f} s (once per job)")
    print(f"speed-up         {r['speedup']:>12.1f}x")


if __name__ == "__main__":
    main()

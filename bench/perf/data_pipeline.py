"""Data-pipeline benchmark: the per-sample PIL ``DataLoader`` against the device-resident loader, on a random
CIFAR-shaped training set, with thread and worker sweeps (``diffbench speed --data`` times the same two
pipelines on a given data set).

    python -m bench.perf.data_pipeline            # 50,000 random CIFAR-shaped images, batch 64

Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse

import torch

from bench.speed.data import random_cifar, time_pipeline


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

"""Benchmark: how long ``diffbench report`` takes over a large MLflow store.

Logs a synthetic grid of job runs (tags, params, summary metrics and a per-epoch history, as the
training loop writes them) into a fresh SQLite store with ``log_batch``, then times
:func:`bench.report.load_runs`, :func:`bench.report.leaderboard` (with the Welch comparisons against
vanilla and ``--vs dkd``, provenance and published-number matching), each renderer and the figure.
Timings are printed, never asserted: speed is measured here, not in tests.

    python -m bench.perf.report_timing --runs 2000 [--store /tmp/x/mlflow.db] [--repeats 3]

``--store`` reuses an existing store (skipping the slow logging) when the file exists.
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import tempfile
import time
from pathlib import Path

METHODS = ("kd", "dkd", "fitnet", "diffkd")


def populate(uri: str, n_runs: int, epochs: int = 20, seed: int = 0) -> int:
    """Log about ``n_runs`` job runs (teachers, vanilla students, distillation runs, some failed)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    rng = random.Random(seed)
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("diffbench")
    parent = client.create_run(exp, tags={"diffbench.kind": "grid"}).info.run_id
    # 40 pairs over 20 students; each pair: 4 methods × seeds; each student: vanilla × seeds; 20 teachers.
    students = [f"student{i}" for i in range(20)]
    pairs = [(f"teacher{i % 20}", students[i // 2]) for i in range(40)]
    seeds = max(1, (n_runs - 20) // (len(pairs) * len(METHODS) + len(students)))
    jobs = [("teacher", f"teacher{i}", "", "vanilla", 0) for i in range(20)]
    jobs += [("student", s, "", "vanilla", k) for s in students for k in range(seeds)]
    jobs += [("student", s, t, m, k) for (t, s), m, k in itertools.product(pairs, METHODS, range(seeds))]
    jobs = jobs[:n_runs]
    t0 = 1_700_000_000_000
    for i, (role, student, teacher, method, k) in enumerate(jobs):
        tags = {
            "diffbench.kind": "job", "mlflow.parentRunId": parent, "task": "classification",
            "dataset": "cifar100", "teacher": teacher, "student": student, "method": method, "seed": str(k),
            "role": role, "job_hash": f"{i:012x}", "git_commit": "0" * 40, "torch_version": "2.15.0",
            "torchvision_version": "0.29.2", "device": "cuda:0", "recipe_preset": "cifar100",
            "diffbench_version": "0.1.0",
        }  # fmt: skip
        run = client.create_run(exp, start_time=t0 + i, tags=tags)
        base = 70.0 + rng.gauss(0, 1) + (0 if method == "vanilla" else 1.5)
        metrics = [
            Metric(f"val/{name}", base - 10 + e * 0.5, t0 + e, e) for e in range(epochs) for name in ("top1", "top5")
        ]
        metrics += [Metric("train/loss", 2.0 / (e + 1), t0 + e, e) for e in range(epochs)]
        metrics += [Metric("lr", 0.05 * 0.95**e, t0 + e, e) for e in range(epochs)]
        summary = {"best_top1": base, "last_top1": base - 0.2, "best_top5": base + 20, "last_top5": base + 19.8}
        summary |= {"best_epoch": epochs - 2, "train_time_s": 3600.0, "images_per_s": 5000.0, "peak_mem_mb": 2048.0}
        if teacher:
            summary["teacher_top1"] = 75.0
        metrics += [Metric(k_, v, t0, 0) for k_, v in summary.items()]
        recipe = (("epochs", "240"), ("lr", "0.05"), ("batch_size", "64"), ("precision", "fp32"))
        params = [Param(f"recipe.{k_}", v) for k_, v in recipe]
        if method != "vanilla":
            params += [Param("hp.temperature", "4"), Param("hp.weight", "1.0")]
        failed = rng.random() < 0.03
        extra = [RunTag("failure_reason", "CUDA out of memory")] if failed else []
        client.log_batch(run.info.run_id, metrics=metrics, params=params, tags=extra)
        client.set_terminated(run.info.run_id, status="FAILED" if failed else "FINISHED", end_time=t0 + i + 1)
    return len(jobs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--store", type=Path, default=None, help="SQLite file (reused when it exists)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from bench import report

    db = args.store or Path(tempfile.mkdtemp(prefix="diffbench-report-")) / "mlflow.db"
    uri = f"sqlite:///{db.resolve()}"
    if not db.exists():
        t = time.perf_counter()
        n = populate(uri, args.runs)
        print(f"logged {n} job runs into {db} in {time.perf_counter() - t:.1f} s")

    report.load_runs(uri)  # warm-up: schema checks, imports
    ref = report.load_reference()
    report.leaderboard(report.load_runs(uri), "best", reference=ref, vs="dkd")  # warm-up: scipy import
    load_t, agg_t = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        runs = report.load_runs(uri)
        load_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        lb = report.leaderboard(runs, "best", reference=ref, vs="dkd")
        agg_t.append(time.perf_counter() - t)
    render_t = {}
    for fmt in report.FORMATS:  # html draws and embeds the figure
        t = time.perf_counter()
        report.render(lb, fmt)
        render_t[fmt] = time.perf_counter() - t
    t = time.perf_counter()
    png = report.plot(lb, db.parent / "leaderboard.png")
    plot_t = time.perf_counter() - t
    med = statistics.median
    print(f"{len(runs)} runs -> {len(lb.table)} pairs x {len(lb.methods)} methods, {len(lb.failed)} failed")
    print(f"load_runs   median {med(load_t):.2f} s  (all: {', '.join(f'{x:.2f}' for x in load_t)})")
    print(f"leaderboard median {med(agg_t):.3f} s  (Welch vs vanilla and vs dkd, provenance, published)")
    print("render      " + ", ".join(f"{k} {v:.3f} s" for k, v in render_t.items()))
    print(f"plot        {plot_t:.2f} s -> {png}")


if __name__ == "__main__":
    main()

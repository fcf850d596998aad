"""Benchmark: how long ``diffbench report`` takes over a large MLflow store.

Logs a synthetic grid of job runs (tags, params, summary metrics and a per-epoch history, as the
training loop writes them) into a fresh SQLite store with ``log_batch``, then times
:func:`bench.report.load_runs`, :func:`bench.report.leaderboard` (with the Welch comparisons against
vanilla and ``--vs dkd``, provenance and published-number matching), each renderer and the figure.
Timings are printed, never asserted: speed is measured here, not in tests.

    python -m bench.perf.report_timing --runs 2000 [--store /tmp/x/mlflow.db] [--repeats 3] [--mlflow]

``--store`` reuses an existing store (skipping the slow logging) when the file exists. Wall and CPU times are
printed: on a shared machine the CPU time is the steadier figure. ``--mlflow`` also times the
``MlflowClient.search_runs`` path (what every SQLite report took before the store was read directly).
"""

from __future__ import annotations

import argparse
import itertools
import random
import statistics
import tempfile
import time
from pathlib import Path

from methods import catalog

METHODS = catalog.BUILTIN


def populate(uri: str, n_runs: int, epochs: int = 20, seed: int = 0) -> int:
    """Log about ``n_runs`` job runs (teachers, vanilla students, distillation runs, some failed)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    rng = random.Random(seed)
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("diffbench")
    parent = client.create_run(exp, tags={"diffbench.kind": "grid"}).info.run_id
    # Up to 40 pairs over 20 students (a 16-run store is one pair: the default grid's shape); each pair: the
    # methods × seeds; each student: vanilla × seeds; one teacher job per teacher.
    n_pairs = max(1, min(40, n_runs // 50))
    n_students, n_teachers = max(1, n_pairs // 2), min(20, n_pairs)
    students = [f"student{i}" for i in range(n_students)]
    # Distinct pairs: past the 20 teachers, each teacher is paired with the next student.
    pairs = [(f"teacher{i % n_teachers}", students[(i + i // n_teachers) % n_students]) for i in range(n_pairs)]
    seeds = max(1, (n_runs - n_teachers) // (len(pairs) * len(METHODS) + len(students)))
    jobs = [("teacher", f"teacher{i}", "", "vanilla", 0) for i in range(n_teachers)]
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


def _timed(fn, repeats: int) -> tuple[list[float], list[float], object]:
    """Wall and CPU seconds of ``repeats`` calls of ``fn``, and its last result."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        cpus.append(time.process_time() - c)
        walls.append(time.perf_counter() - w)
    return walls, cpus, out


def _line(name: str, walls: list[float], cpus: list[float], what: str = "") -> str:
    med = statistics.median
    shown = ", ".join(f"{x:.2f}" for x in walls)
    return f"{name:<12} median {med(walls):.3f} s wall, {med(cpus):.3f} s CPU  (wall: {shown}){what}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--store", type=Path, default=None, help="SQLite file (reused when it exists)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mlflow", action="store_true", help="also time loading through MlflowClient.search_runs")
    args = ap.parse_args()

    import io

    from rich.console import Console

    from bench import report
    from bench.report import load

    db = args.store or Path(tempfile.mkdtemp(prefix="diffbench-report-")) / "mlflow.db"
    uri = f"sqlite:///{db.resolve()}"
    if not db.exists():
        t = time.perf_counter()
        n = populate(uri, args.runs)
        print(f"logged {n} job runs into {db} in {time.perf_counter() - t:.1f} s")

    report.load_runs(uri)  # warm-up: schema checks, imports
    ref = report.load_reference()
    report.leaderboard(report.load_runs(uri), "best", reference=ref, vs="dkd")  # warm-up: scipy import
    load_w, load_c, runs = _timed(lambda: report.load_runs(uri), args.repeats)
    agg_w, agg_c, lb = _timed(lambda: report.leaderboard(runs, "best", reference=ref, vs="dkd"), args.repeats)
    print(f"{len(runs)} runs -> {len(lb.table)} pairs x {len(lb.methods)} methods, {len(lb.failed)} failed")
    print(_line("load_runs", load_w, load_c, " (SQLite read directly)"))
    if args.mlflow:
        mw, mc, _ = _timed(lambda: load._load_runs(uri, read_sqlite=False), args.repeats)
        print(_line("  via MLflow", mw, mc, " (MlflowClient.search_runs, the path of non-SQLite stores)"))
    print(_line("leaderboard", agg_w, agg_c, " (Welch vs vanilla and vs dkd, provenance, published)"))
    render_t = {}
    t = time.perf_counter()
    Console(file=io.StringIO(), width=160).print(report.to_rich(lb))  # what `diffbench report` prints
    render_t["terminal"] = time.perf_counter() - t
    for fmt in report.FORMATS:  # html draws and embeds the figure
        t = time.perf_counter()
        report.render(lb, fmt)
        render_t[fmt] = time.perf_counter() - t
    t = time.perf_counter()
    png = report.plot(lb, db.parent / "leaderboard.png")
    plot_t = time.perf_counter() - t
    print("render       " + ", ".join(f"{k} {v:.3f} s" for k, v in render_t.items()) + " (wall)")
    print(f"plot         {plot_t:.2f} s -> {png}")


if __name__ == "__main__":
    main()

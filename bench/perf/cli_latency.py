"""How long the commands that do not train take to answer: ``--help``, ``list methods``, a misspelt method, and
``report`` over a store of N job runs. Each is a fresh process (what a user waits for), timed ``--repeats`` times;
the median wall time and the median CPU time (user + system, of the process and its children) are printed. Speed is
measured here, never asserted in tests. CPU time is the steadier figure on a shared machine.

    python -m bench.perf.cli_latency [--runs 16] [--repeats 5]
    python -m bench.perf.cli_latency --runs 10000 --store /tmp/big/mlflow.db --report-only

``--store`` keeps the synthetic store (populating 10,000 runs takes minutes) and reuses it when the file exists.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.perf.report_timing import populate


def _time(args: list[str], repeats: int, cwd: Path) -> tuple[float, float, float, int]:
    """Median wall, user and system seconds of ``python -m bench.cli ARGS`` over ``repeats`` runs, and its exit code."""
    walls, users, systems, code = [], [], [], 0
    for _ in range(repeats):
        before = os.times()
        t0 = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", "bench.cli", *args], cwd=cwd, capture_output=True).returncode
        walls.append(time.perf_counter() - t0)
        after = os.times()
        users.append(after.children_user - before.children_user)
        systems.append(after.children_system - before.children_system)
    med = statistics.median
    return med(walls), med(users), med(systems), code


def _store(path: Path | None, tmp: Path, runs: int) -> Path:
    """The SQLite store to report on: ``path`` (populated when missing) or a fresh one under ``tmp``."""
    db = path.resolve() if path else tmp / "results" / "mlflow.db"
    if not db.exists():
        db.parent.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        populate(f"sqlite:///{db}", runs)
        print(f"logged about {runs} job runs into {db} in {time.perf_counter() - t:.0f} s")
    return db


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=16, help="job runs in the report's store (when it is populated)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--store", type=Path, default=None, help="SQLite file to report on (populated when missing)")
    ap.add_argument("--report-only", action="store_true", help="time only `report`")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = _store(args.store, Path(tmp), args.runs)
        # --output when the file is <folder>/mlflow.db (the default store), else the URI.
        where = ["--output", str(db.parent)] if db.name == "mlflow.db" else ["--tracking-uri", f"sqlite:///{db}"]
        cases = {
            "--help": ["--help"],
            "list methods": ["list", "methods"],
            "a misspelt method (run --methods kdd)": ["run", "--methods", "kdd"],
        }
        if args.report_only:
            cases = {}
        cases[f"report over {args.runs} runs"] = ["report", *where]
        for name, argv in cases.items():
            wall, user, system, code = _time(argv, args.repeats, Path(tmp))
            print(
                f"{name:<40} {wall:6.2f} s wall, {user:5.2f} s user + {system:4.2f} s sys CPU "
                f"(medians of {args.repeats}, exit {code})"
            )


if __name__ == "__main__":
    main()

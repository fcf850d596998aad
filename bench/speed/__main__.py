"""``python -m bench.speed``: the step benchmark without typer/rich (GPU machines with only torch).

The same library as ``diffbench speed`` (:mod:`bench.speed.steps`, :mod:`bench.speed.workers`); a refused
argument is one ``error:`` line and exit code 2, as there.
"""

from __future__ import annotations

import argparse
import json
import sys

from methods import catalog
from methods.errors import UserError


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _table(a: argparse.Namespace) -> str:
    """The JSON payload (``--json``) or the Markdown table of the benchmark ``a`` asks for."""
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if a.workers is not None:
        from bench.speed import workers as sw

        payload = sw.run_workers(a.task, a.teacher, a.student, _split(a.methods), sw.parse_workers(a.workers),
                                 a.dataset, a.batch_size, a.steps, a.warmup, a.device, _split(a.precision),
                                 _split(a.channels_last), _split(a.compile), a.inner, log=log,
                                 peak_tflops=a.peak_tflops)  # fmt: skip
        rows = sw.describe(payload) + "\n" + sw.markdown_table([sw.WorkerRow(**r) for r in payload["rows"]])
    else:
        from bench.speed.steps import SpeedRow, run
        from bench.speed.table import markdown_table

        payload = run(a.task, a.teacher, a.student, _split(a.methods), a.dataset, a.batch_size, a.steps, a.warmup,
                      a.device, _split(a.precision), _split(a.channels_last), _split(a.compile), a.inner,
                      a.peak_tflops, not a.no_flops, log=log)  # fmt: skip
        rows = markdown_table([SpeedRow(**r) for r in payload["rows"]])
    return json.dumps(payload) if a.json else rows


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.speed``: parse the arguments, print the table (or JSON); a refusal exits 2."""
    ap = argparse.ArgumentParser(description="Time full training steps per method and speed variant.")
    ap.add_argument("--task", default="classification")
    ap.add_argument("--teacher", default="resnet32x4")
    ap.add_argument("--student", default="resnet8x4")
    ap.add_argument("--methods", default=",".join([catalog.VANILLA, *catalog.BUILTIN]))
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
    try:
        print(_table(ap.parse_args(argv)))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

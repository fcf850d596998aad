"""The ``diffbench speed`` step table: one row of cells per (method, variant), shared by the CLI's rich
table, the Markdown of ``python -m bench.speed`` and the GPU script's summary. Plain Python (no rich)."""

from __future__ import annotations

from collections.abc import Sequence

from bench.speed.steps import SpeedRow

#: Column titles of the step table, in order.
COLUMNS = ("method", "variant", "ms/step", "IQR ms", "images/s", "GFLOP/img", "TFLOP/s", "% peak", "peak MiB",
           "compile s", "× vanilla", "× kd")  # fmt: skip


def _fmt(v: float | None, spec: str) -> str:
    return "—" if v is None else format(v, spec)


def row_cells(r: SpeedRow) -> list[str]:
    """One table row's cells, ``—`` where a figure does not apply (no peak known, CPU memory, eager)."""
    return [
        r.method,
        r.variant,
        _fmt(r.ms_per_step, ".1f" if r.ms_per_step >= 10 else ".2f"),
        _fmt(r.ms_iqr, ".1f" if r.ms_per_step >= 10 else ".2f"),
        _fmt(r.images_per_s, ",.0f"),
        _fmt(None if r.flops_per_image is None else r.flops_per_image / 1e9, ".3f"),
        _fmt(r.tflops, ".3g"),
        _fmt(r.pct_of_peak, ".1f"),
        _fmt(r.peak_mem_mb, ".0f"),
        _fmt(r.compile_time_s, ".1f"),
        _fmt(r.vs_vanilla, ".2f"),
        _fmt(r.vs_kd, ".2f"),
    ]


def visible_columns(rows: Sequence[SpeedRow]) -> list[int]:
    """Indices of :data:`COLUMNS` to show: the optional ones only when some row has a figure for them."""
    optional = {"GFLOP/img", "TFLOP/s", "% peak", "peak MiB", "compile s"}
    cells = [row_cells(r) for r in rows]
    return [i for i, col in enumerate(COLUMNS) if col not in optional or any(c[i] != "—" for c in cells)]


def markdown_table(rows: Sequence[SpeedRow]) -> str:
    """The step table as Markdown (the README, the GPU script's summary, ``python -m bench.speed``)."""
    keep = visible_columns(rows)
    align = ["---" if COLUMNS[i] in ("method", "variant") else "--:" for i in keep]
    lines = ["| " + " | ".join(COLUMNS[i] for i in keep) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(row_cells(r)[i] for i in keep) + " |" for r in rows]
    return "\n".join(lines)



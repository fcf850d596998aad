"""The JSON rendering: the tidy records plus the legend, provenance, failures and notes."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from bench.report.cells import runs_url

if TYPE_CHECKING:
    from bench.report.board import Leaderboard


def _plain(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, pd.Timestamp):
        return None if pd.isna(v) else v.strftime("%Y-%m-%dT%H:%M:%SZ")
    if v is pd.NaT:
        return None
    if hasattr(v, "item"):  # numpy scalars
        return v.item()
    return v


def records(lb: Leaderboard, ui_url: str | None = None) -> list[dict[str, Any]]:
    out = []
    for r in lb.tidy.to_dict(orient="records"):
        r = {k: _plain(v) for k, v in r.items()}
        r["pair"] = f"{r['teacher']}:{r['student']}" if r["teacher"] else r["student"]
        r["run_ids"] = [x for x in (r["run_ids"] or "").split(",") if x]
        if ui_url:
            r["runs_url"] = runs_url(ui_url, r["experiment_id"] or "", ",".join(r["run_ids"]))
        out.append(r)
    return out


def render_json(lb: Leaderboard, ui_url: str | None = None) -> str:
    failed = [{k: _plain(v) for k, v in f.items()} for f in lb.failed.to_dict(orient="records")]
    doc = {
        "title": lb.title,
        "epoch": lb.epoch,
        "vs": lb.vs,
        "legend": lb.legend(),
        "provenance": lb.provenance,
        "grid": {k: v for k, v in lb.grid.items() if k != "notes"} if lb.grid else None,
        "records": records(lb, ui_url),
        "failed": failed,
        "unfinished": lb.unfinished,
        "notes": lb.notes,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"

"""`diffbench report --tuning` in a terminal: every search's numbers, names and winning values whole, at any width."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from bench.report.tuning import to_rich


def _record(method: str, winner: dict) -> dict:
    return {"tune_run": "cb27c2b1658f401089f13ab5ef94f50e", "status": "FINISHED", "budget": "4 trials per method",
            "search_alg": "random search with ASHA early stopping (Ray Tune)",
            "holdout": json.dumps({"fraction": 0.1, "seed": 0}), "trial_recipe": "6 epochs",
            "search": f"{method} resnet20→resnet8", "trials": 4, "completed": 2, "stopped": 2, "failed": 0,
            "best_by_trial": [25.38, 68.46, 97.31, 97.31], "winner": winner, "winner_trial": 2, "cost": 0.2,
            "cost_unit": "CPU-hours"}  # fmt: skip


RECORDS = [_record("diffkd", {"diffkd.diff_weight": 2.877, "diffkd.inference_steps": 7, "diffkd.kd_weight": 1.634}),
           _record("kd", {"kd.ce_weight": 0.8159, "kd.kd_weight": 0.101, "kd.temperature": 13.36})]  # fmt: skip


@pytest.mark.parametrize("width", [80, 120, 200])
def test_no_piece_is_cut_at_any_width(width):
    buf = io.StringIO()
    Console(file=buf, width=width, force_terminal=False, color_system=None).print(to_rich(RECORDS))
    text = buf.getvalue()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= width
    for piece in ("resnet20→resnet8", "diff_weight=2.877", "inference_steps=7", "kd_weight=1.634", "temperature=13.36",
                  "ce_weight=0.8159", "25.38", "97.31", "0.2 CPU-hours", "(trial 2)"):  # fmt: skip
        assert piece in text, (width, piece, text)

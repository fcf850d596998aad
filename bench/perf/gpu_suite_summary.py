"""``summary.md`` of ``bench/perf/gpu_suite.sh``: the targets beside what each section measured.

Reads the ``SECTION.json`` files :mod:`bench.perf.gpu_suite` wrote; a missing or failed section is named with
its error, never silently left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: What the suite is judged against: KD images/s, packed images/s, minutes for a 240-epoch CIFAR run, DiffKD/KD
#: step-time ratio.
TARGETS = {"kd_images_per_s": 25_000, "packed_images_per_s": 60_000, "run_240_min": 10.0, "diffkd_kd_ratio": 1.3}


def _load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        return {"error": f"unreadable {path.name}: {err}"}


def _ok(d: dict[str, Any] | None) -> bool:
    return d is not None and "error" not in d and "skipped" not in d


def _f(v: float | None, spec: str = ",.0f") -> str:
    return "—" if v is None else format(v, spec)


def _mark(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "**no**")


def write_summary(out: Path) -> str:
    """Write ``out/summary.md`` and return its text."""
    s = {n: _load(out, n) for n in ("env", "speed", "epoch", "e2e", "packing", "profile", "compile_default",
                                     "compile_ro")}  # fmt: skip
    env = s["env"] or {}
    lines = [f"# GPU suite: {env.get('device_name', '?')} (torch {env.get('torch', '?')}, CUDA "
             f"{env.get('cuda', '—')}, cuDNN {env.get('cudnn', '—')})", ""]  # fmt: skip
    if any((d or {}).get("smoke") for d in s.values()):
        lines += ["**Smoke run** (tiny sizes, CPU): checks the script end to end; these are not measurements.", ""]

    # -- the targets --------------------------------------------------------------------------------
    kd_rows: list[tuple[str, float]] = []
    for name in ("speed", "compile_default", "compile_ro"):
        if _ok(s[name]):
            kd_rows += [(f"{name}: {r['variant']}", r["images_per_s"]) for r in s[name]["rows"] if r["method"] == "kd"]
    if _ok(s["epoch"]) and "kd" in s["epoch"]:
        kd_rows.append(("epoch: resident data, bf16 cl", s["epoch"]["kd"]["images_per_s"]))
    best_kd = max(kd_rows, key=lambda x: x[1]) if kd_rows else None
    packed = None
    if _ok(s["packing"]):
        cands = [(c["jobs"], c["aggregate_images_per_s"]) for c in s["packing"]["configs"]
                 if c.get("aggregate_images_per_s") and c["jobs"] >= 4]  # fmt: skip
        packed = max(cands, key=lambda x: x[1]) if cands else None
    run240 = s["epoch"]["kd"]["run_240_min"] if _ok(s["epoch"]) and "kd" in s["epoch"] else None
    run240_e2e = s["e2e"]["run_240_min"] if _ok(s["e2e"]) else None
    ratios: list[tuple[str, float]] = []
    if _ok(s["speed"]):
        ratios += [(f"speed: {k}", v) for k, v in s["speed"]["diffkd_kd_ratio"].items() if v is not None]
    for name in ("compile_default", "compile_ro"):
        if _ok(s[name]):
            ratios += [(f"{name}: compile {k}", v) for k, v in s[name]["diffkd_kd_ratio"].items()]
    best_ratio = min(ratios, key=lambda x: x[1]) if ratios else None
    lines += ["## Targets", "", "| measure | target | reached | met | where |", "|:--|--:|--:|:--|:--|"]
    t = TARGETS
    def target(measure: str, goal: str, value: str, met: bool | None, where: str) -> None:
        lines.append(f"| {measure} | {goal} | {value} | {_mark(met)} | {where} |")

    pair = f"{s['speed']['teacher']}→{s['speed']['student']}" if _ok(s["speed"]) else "resnet32x4→resnet8x4"
    target(f"KD {pair}, batch 64, images/s per job", f"≥ {t['kd_images_per_s']:,}",
           _f(best_kd[1]) if best_kd else "—", best_kd[1] >= t["kd_images_per_s"] if best_kd else None,
           best_kd[0] if best_kd else "")  # fmt: skip
    target("same, aggregate of 4+ packed jobs", f"≥ {t['packed_images_per_s']:,}", _f(packed[1]) if packed else "—",
           packed[1] >= t["packed_images_per_s"] if packed else None,
           f"{packed[0]} jobs" if packed else "")  # fmt: skip
    target("240-epoch CIFAR-100 KD run, minutes (estimate)", f"< {t['run_240_min']:.0f}", _f(run240, ".1f"),
           run240 < t["run_240_min"] if run240 is not None else None, "epoch section (train + eval)")  # fmt: skip
    target("same, from the real loop's epoch wall time", f"< {t['run_240_min']:.0f}", _f(run240_e2e, ".1f"),
           run240_e2e < t["run_240_min"] if run240_e2e is not None else None, "e2e (run_job, 2 epochs)")  # fmt: skip
    target("DiffKD / KD step time", f"≤ {t['diffkd_kd_ratio']}", _f(best_ratio[1], ".2f") if best_ratio else "—",
           best_ratio[1] <= t["diffkd_kd_ratio"] if best_ratio else None,
           best_ratio[0] if best_ratio else "")  # fmt: skip
    if ratios:
        lines += ["", "DiffKD/KD ratio per setting: " + "; ".join(f"{k} {v:.2f}" for k, v in ratios)]

    # -- the sections -------------------------------------------------------------------------------
    if _ok(s["speed"]):
        sp = s["speed"]
        lines += ["", f"## Step times ({sp['teacher']}→{sp['student']}, batch {sp['batch_size']}, {sp['steps']} "
                      f"interleaved rounds × {sp['inner']} steps, synthetic batch)", "", sp["markdown"]]  # fmt: skip
    for name in ("compile_default", "compile_ro"):
        if _ok(s[name]):
            lines += ["", f"## torch.compile mode={s[name]['mode']} beside eager (compile s = first step)", "",
                      s[name]["markdown"]]  # fmt: skip
    if _ok(s["epoch"]):
        ep = s["epoch"]
        lines += ["", f"## One epoch on {ep['images']:,} device-resident CIFAR-shaped uint8 images "
                      f"(+ {ep['val_images']:,}-image evaluation)", "",
                  "| method | train epoch s | images/s | eval s | 240 epochs, min | peak MiB |",
                  "|:--|--:|--:|--:|--:|--:|"]
        for m in ("kd", "diffkd"):
            if m in ep:
                e = ep[m]
                lines.append(f"| {m} | {e['train_epoch_s']:.2f} | {e['images_per_s']:,.0f} | {e['eval_s']:.2f} | "
                             f"{e['run_240_min']:.1f} | {_f(e['peak_mem_mb'])} |")  # fmt: skip
    if _ok(s["e2e"]):
        e = s["e2e"]
        lines += ["", "## The real training loop (run_job, KD, 2 epochs, generated CIFAR-100 archive on disk)", "",
                  f"setup {e['setup_s']:.1f} s (data, models, teacher evaluation); epoch 1 {e['epoch1_wall_s']:.1f} s, "
                  f"epoch 2 {e['epoch2_wall_s']:.1f} s wall (train + evaluation + checkpoint); training alone "
                  f"{', '.join(f'{x:.1f}' for x in e['epoch_train_s'])} s; {_f(e['images_per_s'])} images/s; "
                  f"→ 240 epochs ≈ {e['run_240_min']:.1f} min."]  # fmt: skip
    if _ok(s["packing"]):
        c = s["packing"]["config"]
        lines += ["", f"## Many jobs per GPU ({c['method']} {c['teacher']}→{c['student']}, batch {c['batch_size']}, "
                      f"{c['precision']}{' channels_last' if c['channels_last'] else ''}, {c['steps']} timed steps per "
                      "job, resident synthetic data)", "",
                  s["packing"]["markdown"]]  # fmt: skip
    if _ok(s["profile"]):
        lines += ["", "## Profile (one step, under torch.profiler; full tables in profile_*.txt)", "",
                  "| method | wall ms/step | GPU kernel ms/step | GPU busy | launches/step | top-level aten ops/step |",
                  "|:--|--:|--:|--:|--:|--:|"]  # fmt: skip
        for m, p in s["profile"].items():
            if isinstance(p, dict) and "error" not in p and "wall_ms_per_step" in p:
                busy = p.get("gpu_busy_fraction")
                lines.append(f"| {m} | {p['wall_ms_per_step']:.2f} | {p['gpu_kernel_ms_per_step']:.3f} | "
                             f"{_f(None if busy is None else 100 * busy, '.0f')}{'' if busy is None else ' %'} | "
                             f"{p['launches_per_step']:.0f} | {p['top_level_ops_per_step']:.0f} |")  # fmt: skip
        lines += ["", "GPU busy well below 100 % means the step is bound by the CPU issuing kernels (launch "
                      "overhead), not by the GPU's arithmetic."]  # fmt: skip
    failed = [(n, (d or {}).get("error") or (d or {}).get("skipped") or "did not run") for n, d in s.items()
              if not _ok(d)]  # fmt: skip
    if failed:
        lines += ["", "## Sections without results", ""] + [f"- {n}: {why}" for n, why in failed]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text

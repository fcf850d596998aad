"""How large each loss term is at the start of training, per method: ``python -m bench.perf.term_scales``.

Builds every job of a grid whose teachers are already trained in ``--output`` (run the grid, or its teacher
jobs, first), and averages each weighted term of the first ``--batches`` training batches at initialisation
(student and method extras as the job builds them, no optimizer step). Prints one row per method: the task's
own loss (the sum of its terms, e.g. the four Faster R-CNN losses), every distillation term and the largest
term's ratio to the task loss. Dense-prediction feature distillation is scaled so that this ratio stays a
small factor (see ``methods/feature_norm.py``); the per-epoch means of the same terms are logged to MLflow as
``train/<term>``.

Example: ``python -m bench.perf.term_scales --task detection --output results``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bench.engine.build import build_job, make_optimizer
from bench.engine.step import Stepper
from bench.jobs.grid import GridSpec, expand
from methods.base import Progress


def term_means(spec, output: Path, batches: int) -> dict[str, float]:
    """Mean of each weighted term of ``spec``'s job over its first ``batches`` training batches, at initialisation."""
    torch.manual_seed(spec.seed)
    cpu = torch.device("cpu")
    built = build_job(spec, output, cpu, log=lambda _m: None)
    built.start_epoch(0)
    recipe = spec.recipe_obj()
    step = Stepper(built, make_optimizer(recipe, built.student, built.method), cpu, log=lambda _m: None)
    sums: dict[str, float] = {}
    seen = 0
    with torch.no_grad():
        for i, batch in enumerate(built.train_loader):
            if i == batches:
                break
            terms, _ = step.forward(batch, Progress(epoch=1, epochs=recipe.epochs, step=i))
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            seen += 1
    return {k: v / max(seen, 1) for k, v in sums.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="classification")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--output", default="results", help="the grid's output folder, holding its trained teachers")
    ap.add_argument("--methods", default="kd,dkd,fitnet,diffkd")
    ap.add_argument("--batches", type=int, default=5)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    output = Path(args.output).expanduser().resolve()
    grid = GridSpec(task=args.task, dataset=args.dataset, methods=tuple(args.methods.split(",")))
    jobs = [j for j in expand(grid) if j.role == "student" and j.method != "vanilla" and j.seed == 0]
    task_losses = None
    for spec in jobs:
        ckpt = spec.teacher_checkpoint(output)
        if ckpt is None or not ckpt.is_file():
            raise SystemExit(f"error: no trained teacher for {spec.teacher} in {output}; run the grid first")
        means = term_means(spec, output, args.batches)
        if task_losses is None:
            task_losses = _task_term_names(spec, output)
        task = sum(v for k, v in means.items() if k in task_losses)
        extra = {k: v for k, v in means.items() if k not in task_losses}
        worst = max(extra.values(), default=0.0)
        cells = "  ".join(f"{k} {v:.3g}" for k, v in extra.items())
        print(f"{spec.method:8s} {spec.teacher}->{spec.student}: task loss {task:.3g}  {cells}  "
              f"largest/task {worst / task:.2f}x")  # fmt: skip


def _task_term_names(spec, output: Path) -> set[str]:
    """The task's own loss names: the terms of a vanilla job of the same student."""
    from dataclasses import replace

    vanilla = replace(spec, method="vanilla", teacher=None, teacher_ref=None, hparams=(), teacher_path=None)
    return set(term_means(vanilla, output, 1))


if __name__ == "__main__":
    main()

"""Process bodies for the data-parallel tests (a module of its own so spawned processes can import it).

Each body joins a gloo process group of ``world`` ranks on localhost, runs diffbench code as one rank,
and leaves its answer in a file; rank 0's answer is what the test compares with a single process.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


class NoBN(nn.Module):
    """Stands in for BatchNorm2d: a per-channel affine map (BN with frozen statistics). Batch statistics are
    per rank under DDP on CPU (PyTorch's SyncBatchNorm is GPU-only), which would make N workers differ from
    one process for a reason that is not DDP's."""

    def __init__(self, num_features: int, *_args: Any, **_kwargs: Any) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight[:, None, None] + self.bias[:, None, None]


def deterministic_diffkd() -> None:
    """Fix DiffKD's draws (noise 0, timestep 500): two ranks cannot draw the noise one process draws for the
    same samples, so the equivalence of N workers and one process is tested with the draws taken out."""
    import methods.diffkd as d

    class _Torch:
        def __getattr__(self, name: str) -> Any:
            return getattr(torch, name)

        @staticmethod
        def randn(size: Any, **kw: Any) -> torch.Tensor:
            kw.pop("generator", None)
            return torch.zeros(size, **kw)

        @staticmethod
        def randint(_low: int, _high: int, size: Any, **kw: Any) -> torch.Tensor:
            return torch.full(size, 500, dtype=torch.long, device=kw.get("device"))

    d.torch = _Torch()  # only the module's own references change


def patch_models() -> None:
    nn.BatchNorm2d = NoBN  # type: ignore[misc]
    deterministic_diffkd()


def _join(rank: int, world: int, port: int) -> None:
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.set_num_threads(1)


def train_rank(rank: int, world: int, port: int, spec_dict: dict, output: str) -> None:
    """Run one job as ``rank`` of ``world`` (``world == 1``: a plain single process, no group)."""
    from bench.engine.distributed import Dist
    from bench.engine.loop import run_job
    from bench.jobs.spec import JobSpec

    patch_models()
    if world > 1:
        _join(rank, world, port)
    run_job(JobSpec.from_dict(spec_dict), output, device="cpu", log=lambda _m: None, dist=Dist(rank, world))
    if world > 1:
        dist.destroy_process_group()


def evaluate_rank(rank: int, world: int, port: int, cases: list[tuple[str, str, str, str, int]], out_file: str) -> None:
    """Evaluate fixed weights on this rank's shard of each case's validation set; rank 0 writes the metrics.

    ``cases``: ``(task, dataset, arch, weights file, batch)``; one process group serves them all.
    """
    from bench.engine.build import make_loaders
    from bench.engine.distributed import Dist
    from tasks.base import get_task

    if world > 1:
        _join(rank, world, port)
    results = []
    for task_name, dataset, arch, weights, batch in cases:
        task = get_task(task_name)
        recipe = task.recipe(dataset, arch).updated(batch_size=batch, eval_batch_size=3, num_workers=0)
        bundle = task.build_data(dataset, None, recipe)
        model = task.build_model(arch, bundle.num_classes, dataset)
        model.load_state_dict(torch.load(weights, weights_only=True))
        _, val = make_loaders(task, bundle, recipe, torch.device("cpu"), torch.Generator(), 1, Dist(rank, world))
        with torch.inference_mode():
            results.append(task.evaluate(model, val, torch.device("cpu")))
    if rank == 0:
        Path(out_file).write_text(json.dumps(results))
    if world > 1:
        dist.destroy_process_group()

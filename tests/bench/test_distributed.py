"""Data-parallel jobs on CPU with gloo workers.

(a) two workers with half the batch each train the same parameters as one process with the whole batch;
(b) evaluation sharded over two ranks gives exactly the single-process metrics (top-1/top-5 counts,
confusion matrices, COCO AP from gathered detections). The Ray Train path (a worker killed mid-epoch, a
two-worker job inside a grid and its report) is in ``test_distributed_ray.py``.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from bench.jobs.spec import job_dir, resolve_job

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, world: int, *args) -> None:
    mp.start_processes(fn, args=(world, _port(), *args), nprocs=world, start_method="spawn", join=True)


def _student(out: Path, spec) -> dict[str, torch.Tensor]:
    return torch.load(job_dir(out, spec.job_hash) / "student.pt", weights_only=False)["student"]


@pytest.mark.parametrize("method", ["kd", "diffkd"])
def test_two_workers_with_half_batches_train_what_one_process_with_the_batch_trains(tmp_path, monkeypatch, method):
    """Same images per global step (one order per epoch, sliced per rank), gradients averaged by DDP.

    Tolerance 2e-5 (absolute, on weights of magnitude ~0.1-1 after 3 SGD steps of lr 0.05): the two runs
    sum the same per-sample gradients in a different order (per rank, then across ranks), which float32
    rounds differently. BatchNorm is replaced by identity in both runs (see ``ddp_helpers.NoBN``).
    """
    from ddp_helpers import NoBN

    from tasks.classification.models import zoo

    teacher = tmp_path / "teacher.pt"
    # The teacher file must match the workers' patched architecture; only BatchNorm matters here, and only for
    # this test (the workers also fix DiffKD's draws, which must not leak into later tests of this process).
    with monkeypatch.context() as m:
        m.setattr(torch.nn, "BatchNorm2d", NoBN)
        torch.manual_seed(1)
        torch.save({"model": zoo.build("resnet8", 10).state_dict()}, teacher)
    assert torch.nn.BatchNorm2d is not NoBN
    spec = resolve_job(
        task="classification", dataset="digits", student="resnet8", teacher="resnet8", method=method,
        teacher_ref=f"file:{teacher}", recipe_overrides={"epochs": 1, "batch_size": 16, "max_steps": 3,
                                                         "eval_batch_size": 360},
    )  # fmt: skip
    from ddp_helpers import train_rank

    _spawn(train_rank, 1, spec.to_dict(), str(tmp_path / "one"))
    _spawn(train_rank, 2, spec.to_dict(), str(tmp_path / "two"))
    one, two = _student(tmp_path / "one", spec), _student(tmp_path / "two", spec)
    assert one.keys() == two.keys()
    worst = max(float((one[k].float() - two[k].float()).abs().max()) for k in one)
    moved = max(float((one[k].float() - torch.load(teacher, weights_only=False)["model"][k].float()).abs().max())
                for k in one if k in torch.load(teacher, weights_only=False)["model"])  # fmt: skip
    assert worst <= 2e-5, worst
    assert moved > 1e-3  # the students did train (the comparison is not of untouched weights)


CASES = [("classification", "digits", "resnet8", 16), ("segmentation", "shapes", "deeplabv3_tiny_s", 4),
         ("detection", "shapes", "fasterrcnn_mbv3s", 4)]  # fmt: skip


def test_sharded_evaluation_equals_one_process(tmp_path):
    """Top-1/top-5 hits, confusion matrices (mIoU) and COCO AP of two ranks' shards equal one process's."""
    import json

    from ddp_helpers import evaluate_rank

    from tasks.base import get_task

    cases = []
    for task_name, dataset, arch, batch in CASES:
        task = get_task(task_name)
        torch.manual_seed(0)
        model = task.build_model(arch, task.default_num_classes(dataset), dataset)
        weights = tmp_path / f"{task_name}.pt"
        torch.save(model.state_dict(), weights)
        cases.append((task_name, dataset, arch, str(weights), batch))
    results = {}
    for world in (1, 2):
        out = tmp_path / f"m{world}.json"
        _spawn(evaluate_rank, world, cases, str(out))
        results[world] = json.loads(out.read_text())
    for (task_name, *_), one, two in zip(CASES, results[1], results[2], strict=True):
        # Exactly: summed hit counts, summed confusion matrices, COCOeval on the gathered detections. The mean
        # cross-entropy is a float sum over batches grouped differently per rank: equal to float32 rounding.
        assert {k: v for k, v in one.items() if k != "loss"} == {k: v for k, v in two.items() if k != "loss"}, task_name
        assert one.get("loss", 0.0) == pytest.approx(two.get("loss", 0.0), rel=1e-6)

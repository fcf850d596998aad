"""The many-jobs-per-GPU benchmark's machinery on a CPU (tiny sizes), and :func:`max_packing`'s arithmetic."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bench.perf.packing import CUDA_CONTEXT_MB, TINY, JobConfig, markdown, max_packing, run_packed


def test_two_packed_jobs_train_and_report():
    cfg = replace(JobConfig(device="cpu", threads=1), **TINY)
    res = run_packed(2, cfg, timeout_s=300)
    assert res["errors"] == []
    assert [j["rank"] for j in res["per_job"]] == [0, 1]
    for j in res["per_job"]:
        assert j["images"] == TINY["steps"] * TINY["batch_size"]
        assert j["end"] > j["start"]
    span = max(j["end"] for j in res["per_job"]) - min(j["start"] for j in res["per_job"])
    assert res["aggregate_images_per_s"] == pytest.approx(2 * TINY["steps"] * TINY["batch_size"] / span)
    assert "| 2 |" in markdown({"configs": [res]})


def test_a_failing_job_is_reported_not_hung():
    cfg = replace(JobConfig(device="cpu", threads=1), **{**TINY, "student": "resnet9"})
    res = run_packed(1, cfg, timeout_s=120)
    assert "aggregate_images_per_s" not in res  # no job finished: no throughput to report
    assert len(res["errors"]) == 1 and "resnet9" in res["errors"][0]


@pytest.mark.parametrize(
    ("peak", "device", "expected"),
    [
        (1000.0, 10_000.0, int(9000 // (1000 + CUDA_CONTEXT_MB))),
        (0.0, 100.0, 0),  # the context alone does not fit in 90 MiB
        (2000.0, 143_771.0, int(143_771 * 0.9 // (2000 + CUDA_CONTEXT_MB))),  # an H200
    ],
)
def test_max_packing(peak, device, expected):
    assert max_packing(peak, device) == expected


def test_max_packing_never_overcommits():
    for peak in (100.0, 1234.5, 5000.0):
        n = max_packing(peak, 80_000.0)
        assert n * (peak + CUDA_CONTEXT_MB) <= 80_000.0 * 0.9 < (n + 1) * (peak + CUDA_CONTEXT_MB)


def test_max_packing_rejects_nonsense():
    with pytest.raises(ValueError):
        max_packing(-1.0, 1000.0)

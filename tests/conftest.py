"""Test-wide settings: small thread pools so parallel helpers and CI's 2 cores are not oversubscribed."""

import os

import torch

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
# Grids in tests do not log each job's model to MLflow (seconds per job); the tests that check it ask for it.
os.environ["DIFFBENCH_LOG_MODEL"] = "0"
# Each test trains its own teachers: no teacher is reused from another test's output folder (the tests of the
# teacher cache turn it on with their own DIFFBENCH_CACHE).
os.environ["DIFFBENCH_TEACHER_CACHE"] = "0"
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


import pytest  # noqa: E402


@pytest.fixture
def cifar_dir(tmp_path):
    """A folder shaped like the CIFAR-100 python archive (contents irrelevant: jobs are only planned)."""
    root = tmp_path / "cifar" / "cifar-100-python"
    root.mkdir(parents=True)
    for name in ("train", "test", "meta"):
        (root / name).write_bytes(name.encode())
    return str(root.parent)


@pytest.fixture
def imagenet_dir(tmp_path):
    """A folder with ImageNet's train/ and val/ class folders (empty: jobs are only planned)."""
    for split in ("train", "val"):
        (tmp_path / "imagenet" / split / "n01440764").mkdir(parents=True)
    return str(tmp_path / "imagenet")

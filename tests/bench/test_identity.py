"""Portable job identity: data by content fingerprint, teacher weights by sha256, never by path."""

from __future__ import annotations

import shutil

import torch

from bench.jobs.spec import resolve_job
from tasks.classification.models import zoo


def _job(data_dir, teacher=None):
    kw = {"teacher": "resnet8", "method": "kd"} if teacher else {}
    if teacher:
        from bench.jobs.spec import file_identity

        kw["teacher_ref"], kw["teacher_path"] = file_identity(teacher)
    return resolve_job(task="classification", dataset="cifar100", student="resnet8", data_dir=data_dir, **kw)


def test_a_moved_data_folder_keeps_every_hash_and_changed_data_does_not(tmp_path, cifar_dir):
    moved = tmp_path / "elsewhere" / "cifar"
    shutil.copytree(cifar_dir, moved)
    a, b = _job(cifar_dir), _job(str(moved))
    assert a.data_dir != b.data_dir and a.job_hash == b.job_hash
    (moved / "cifar-100-python" / "train").write_bytes(b"other images")
    assert _job(str(moved)).job_hash != a.job_hash


def test_teacher_weights_are_identified_by_content(tmp_path, cifar_dir):
    torch.manual_seed(0)
    first = tmp_path / "t1.pth"
    torch.save({"model": zoo.build("resnet8", 100).state_dict()}, first)
    copy = tmp_path / "copies" / "t.pth"
    copy.parent.mkdir()
    shutil.copy(first, copy)
    assert _job(cifar_dir, first).job_hash == _job(cifar_dir, copy).job_hash
    torch.save({"model": zoo.build("resnet8", 100).state_dict()}, copy)  # other weights, same path
    assert _job(cifar_dir, first).job_hash != _job(cifar_dir, copy).job_hash
    assert _job(cifar_dir, copy).teacher_checkpoint(tmp_path) == copy.resolve()


def test_a_hyper_parameter_added_later_keeps_older_jobs_hashes_at_its_neutral_value():
    """feat_norm arrived after FitNet/DiffKD jobs had run: at "none" (the old behaviour) it is not in the hash."""
    from dataclasses import replace

    from bench.jobs.spec import resolve_job

    spec = resolve_job(task="classification", dataset="digits", student="resnet8", teacher="resnet8",
                       method="fitnet", teacher_ref="job:0")  # fmt: skip
    hp = dict(spec.hparams)
    assert hp["feat_norm"] == "none"
    older = replace(spec, hparams=tuple(sorted((k, v) for k, v in hp.items() if k != "feat_norm")))
    assert older.job_hash == spec.job_hash
    pkd = replace(spec, hparams=tuple(sorted({**hp, "feat_norm": "pkd"}.items())))
    assert pkd.job_hash != spec.job_hash

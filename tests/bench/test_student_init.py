"""--student-checkpoint: a job's starting weights are part of its identity (by content), the default is not, and the
weights reach the model the loop trains."""

from __future__ import annotations

import pytest
import torch

from bench.engine.build import build_job
from bench.jobs.grid import GridSpec, expand
from methods.errors import UserError
from tasks.classification.models import zoo

GRID = {"task": "classification", "dataset": "digits", "pairs": (("resnet20", "resnet8"),), "methods": ("kd",),
        "recipe": {"epochs": 1, "batch_size": 16, "max_steps": 1}}  # fmt: skip


def _weights(path, arch="resnet8", seed=1):
    torch.manual_seed(seed)
    model = zoo.build(arch, 10)
    torch.save({"model": model.state_dict()}, path)
    return model


def test_the_starting_weights_are_part_of_the_identity_and_the_default_is_not(tmp_path):
    _weights(tmp_path / "a.pth")
    plain = {j.label: j for j in expand(GridSpec(**GRID))}
    init = {j.label: j for j in expand(GridSpec(**GRID, student_checkpoints={"resnet8": str(tmp_path / "a.pth")}))}
    assert plain["teacher resnet20"].job_hash == init["teacher resnet20"].job_hash  # the teacher trains as before
    for label in ("vanilla resnet8 s0", "kd resnet20→resnet8 s0"):
        assert plain[label].student_init is None
        assert init[label].student_init.startswith("sha256:") and init[label].job_hash != plain[label].job_hash
        assert init[label].init_kind == "pretrained" and plain[label].init_kind == "random"
    # The same weights elsewhere: the same jobs (content, not location); other weights: other jobs.
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "b.pth").write_bytes((tmp_path / "a.pth").read_bytes())
    copy = str(tmp_path / "copy" / "b.pth")
    moved = {j.label: j for j in expand(GridSpec(**GRID, student_checkpoints={"resnet8": copy}))}
    assert moved["vanilla resnet8 s0"].job_hash == init["vanilla resnet8 s0"].job_hash
    _weights(tmp_path / "c.pth", seed=2)
    other = {j.label: j for j in expand(GridSpec(**GRID, student_checkpoints={"resnet8": str(tmp_path / "c.pth")}))}
    assert other["vanilla resnet8 s0"].job_hash != init["vanilla resnet8 s0"].job_hash
    random = {j.label: j for j in expand(GridSpec(**GRID, student_checkpoints={"resnet8": "random"}))}
    assert random["vanilla resnet8 s0"].student_init == "random"
    assert random["vanilla resnet8 s0"].job_hash not in (plain["vanilla resnet8 s0"].job_hash,
                                                        init["vanilla resnet8 s0"].job_hash)  # fmt: skip


def test_a_checkpoint_for_an_arch_the_grid_does_not_train_or_a_missing_file_is_refused(tmp_path):
    with pytest.raises(UserError, match="--student-checkpoint given for resnet32"):
        expand(GridSpec(**GRID, student_checkpoints={"resnet32": "random"}))
    with pytest.raises(UserError, match="does not exist"):
        expand(GridSpec(**GRID, student_checkpoints={"resnet8": str(tmp_path / "nope.pth")}))


def test_the_loop_trains_from_the_given_weights(tmp_path):
    given = _weights(tmp_path / "a.pth")
    spec = next(j for j in expand(GridSpec(**{**GRID, "methods": ()},
                                           student_checkpoints={"resnet8": str(tmp_path / "a.pth")}))
                if j.role == "student")  # fmt: skip
    lines: list[str] = []
    built = build_job(spec, tmp_path / "out", torch.device("cpu"), log=lines.append)
    for key, value in given.state_dict().items():
        assert torch.equal(built.student.state_dict()[key], value), key
    assert any("starts from" in line and "a.pth" in line for line in lines), lines


def test_a_file_of_another_architecture_is_refused_naming_the_keys(tmp_path):
    _weights(tmp_path / "r20.pth", arch="resnet20")
    spec = next(j for j in expand(GridSpec(**{**GRID, "methods": ()},
                                           student_checkpoints={"resnet8": str(tmp_path / "r20.pth")}))
                if j.role == "student")  # fmt: skip
    with pytest.raises(UserError, match="does not fit .*unexpected"):
        build_job(spec, tmp_path / "out", torch.device("cpu"), log=lambda _m: None)

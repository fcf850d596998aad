"""Grid expansion and experiment.yaml validation (no training)."""

from __future__ import annotations

import pytest

from bench.jobs.grid import GridSpec, expand, grid_from_preset
from methods.base import UserError


def test_default_grid_has_teacher_first_and_vanilla():
    jobs = expand(grid_from_preset("default"))
    assert jobs[0].role == "teacher" and jobs[0].method == "vanilla"
    methods = [j.method for j in jobs if j.role == "student"]
    assert sorted(set(methods)) == ["diffkd", "dkd", "fitnet", "kd", "vanilla"]
    assert all(methods.count(m) == 3 for m in set(methods))  # 3 seeds each
    teacher_ref = f"job:{jobs[0].job_hash}"
    assert all(j.teacher_ref == teacher_ref for j in jobs if j.method != "vanilla")


def test_seeds_pairs_and_sets():
    grid = GridSpec(
        task="classification",
        dataset="digits",
        pairs=(("resnet20", "resnet8"), ("resnet20", "resnet14")),
        methods=("kd", "dkd"),
        seeds=2,
        sets={"dkd": {"beta": 6}},
    )
    jobs = expand(grid)
    # 1 teacher (shared) + 2 students x 2 seeds vanilla + 2 pairs x 2 methods x 2 seeds
    assert len(jobs) == 1 + 4 + 8
    assert len({j.job_hash for j in jobs}) == len(jobs)
    for j in jobs:
        if j.method == "dkd":
            assert dict(j.hparams)["beta"] == 6


def test_expansion_is_deterministic():
    a = [j.job_hash for j in expand(grid_from_preset("default"))]
    b = [j.job_hash for j in expand(grid_from_preset("default"))]
    assert a == b


@pytest.mark.parametrize(
    ("grid", "needle"),
    [
        (GridSpec(methods=("kdd",)), "unknown method 'kdd'"),
        (GridSpec(pairs=(("resnet20", "resnet9"),)), "unknown architecture 'resnet9'"),
        (GridSpec(dataset="mnist"), "unknown dataset 'mnist'"),
        (GridSpec(methods=("dkd",), sets={"dkd": {"betta": 1}}), "'betta'; did you mean 'beta'?"),
        (GridSpec(methods=("kd",), sets={"dkd": {"beta": 1}}), "does not run"),
        (GridSpec(recipe={"epoch": 3}), "unknown recipe setting(s) 'epoch'; did you mean 'epochs'?"),
        (GridSpec(teacher_checkpoints={"resnet20": "/nonexistent.pth"}), "not found"),
        (GridSpec(seeds=0), "at least 1"),
        (
            GridSpec(task="detection", pairs=(("fasterrcnn_r101", "retinanet_r50"),), methods=("fitnet",)),
            "mixes detector families",
        ),
        (GridSpec(task="detection", pairs=(("retinanet_r101", "retinanet_r50"),), methods=("kd",)), "sigmoid-based"),
    ],
)
def test_bad_grids_name_the_problem(grid, needle):
    with pytest.raises(UserError, match=None) as err:
        expand(grid)
    assert needle in str(err.value)


def test_teacher_jobs_take_the_tasks_teacher_recipe_and_grid_overrides_win():
    jobs = expand(GridSpec(task="detection", methods=("kd",)))
    teacher = next(j for j in jobs if j.role == "teacher")
    student = next(j for j in jobs if j.role == "student" and j.method == "kd")
    assert (teacher.recipe["epochs"], student.recipe["epochs"]) == (12, 4)  # detection cpu: teachers 3x longer
    again = expand(GridSpec(task="detection", methods=("kd",), teacher_recipe={"epochs": 2}))
    assert next(j for j in again if j.role == "teacher").recipe["epochs"] == 2

"""What `diffbench tune` plans, without torch or Ray: searches, trial jobs, the final grid, refusals."""

from __future__ import annotations

import pytest

from bench.jobs.grid import GridSpec, expand
from bench.jobs.tuning import (
    Budget,
    LogUniform,
    TuneSettings,
    parse_duration,
    parse_space,
    plan_tune,
    shortened,
    trial_job,
    tuned_jobs,
)
from methods.errors import UserError
from tasks.recipe import HOLDOUT

GRID = GridSpec(task="classification", dataset="digits", pairs=(("resnet20", "resnet8"),), methods=("kd", "dkd"),
                seeds=2, recipe={"epochs": 6, "batch_size": 16})  # fmt: skip


def _winners(plan, pick=0):
    return {s.name: {k: sp.values_at_bounds()[pick] for k, sp in s.space.items()} for s in plan.searches}


def test_one_search_per_method_with_the_same_budget_on_a_holdout_and_the_trial_recipe():
    plan = plan_tune(GRID, TuneSettings(budget=Budget(trials=4, trial_epochs=2), holdout=0.2, seed=3))
    assert [s.name for s in plan.searches] == ["kd resnet20→resnet8", "dkd resnet20→resnet8"]  # vanilla: not tuned
    for s in plan.searches:
        assert s.base.seed == 3 and s.base.recipe["epochs"] == 2
        assert s.base.recipe["extra"][HOLDOUT] == {"fraction": 0.2, "seed": 3}
    assert set(plan.searches[1].space) == {"hp.alpha", "hp.beta", "hp.temperature"}
    # The teachers are run's own jobs.
    assert [t.job_hash for t in plan.teachers] == [j.job_hash for j in expand(GRID) if j.role == "teacher"]


def test_each_trial_is_its_own_job_and_is_checked_like_any_job():
    plan = plan_tune(GRID, TuneSettings(budget=Budget(trials=2)))
    base = plan.searches[1].base
    a, b = trial_job(base, {"beta": 3.0}, {}, "t_00000"), trial_job(base, {"beta": 3.0}, {}, "t_00001")
    assert a.job_hash != b.job_hash and dict(a.hparams)["beta"] == 3.0
    with pytest.raises(UserError, match="beta must be >= 0"):
        trial_job(base, {"beta": -1.0}, {}, "t_00002")


def test_the_final_grid_is_run_s_grid_with_the_winners_and_ordinary_hashes():
    plan = plan_tune(GRID, TuneSettings(budget=Budget(trials=2)))
    winners = _winners(plan)
    final = plan.final_grid(winners)
    ordinary = {j.job_hash for j in expand(GRID)}
    vanilla_and_teachers = {j.job_hash for j in expand(GRID) if j.method == "vanilla"}
    assert vanilla_and_teachers <= {j.job_hash for j in final}  # shared with `run`: not tuned, not retrained
    tuned = {j for j in final if j.method != "vanilla"}
    assert len(tuned) == 4 and all(j.seed in (0, 1) and HOLDOUT not in j.recipe["extra"] for j in tuned)
    for j in tuned:
        search = f"{j.method} resnet20→resnet8"
        assert {f"hp.{k}": v for k, v in j.hparams if f"hp.{k}" in winners[search]} == winners[search]
    # Same jobs as `run --set <winner>` would plan (ordinary identity).
    sets = {m: {k.partition(".")[2]: v for k, v in winners[f"{m} resnet20→resnet8"].items()} for m in ("kd", "dkd")}
    assert {j.job_hash for j in final} == {j.job_hash for j in expand(GridSpec(**{**GRID.__dict__, "sets": sets}))}
    assert not ({j.job_hash for j in tuned} & ordinary)
    chosen = tuned_jobs(plan, final, winners)
    assert set(chosen) == {j.job_hash for j in tuned}


def test_with_the_recipe_tuned_vanilla_is_searched_too_and_the_teachers_stay_run_s():
    plan = plan_tune(GRID, TuneSettings(budget=Budget(trials=2), tune_recipe=True))
    assert [s.method for s in plan.searches] == ["vanilla", "kd", "dkd"]
    assert all({"recipe.lr", "recipe.weight_decay"} <= set(s.space) for s in plan.searches)
    final = plan.final_grid(_winners(plan, pick=1))
    teachers = [j for j in final if j.role == "teacher"]
    assert [t.job_hash for t in teachers] == [t.job_hash for t in plan.teachers]
    students = [j for j in final if j.role != "teacher"]
    assert len(students) == 6 and all(j.recipe["lr"] == pytest.approx(4 * 0.05) for j in students)
    assert all(j.teacher_ref == f"job:{teachers[0].job_hash}" for j in students if j.method != "vanilla")


@pytest.mark.parametrize(
    ("settings", "grid", "needle"),
    [
        (dict(spaces={"fitnet": {"feat_weight": LogUniform(1, 2)}}), GRID, "does not tune"),
        (dict(spaces={"dkd": {"beta": LogUniform(1, 2)}}), GRID.merged(sets={"dkd": {"beta": 2}}), "contradict"),
        (dict(spaces={"recipe": {"lr": LogUniform(0.01, 0.1)}}), GRID, "--tune-recipe"),
        (dict(holdout=0.7), GRID, "--holdout"),
        (dict(scheduler="pbt"), GRID, "--scheduler"),
        (dict(), GridSpec(dataset="digits", methods=()), "nothing to tune"),
    ],
)
def test_bad_plans_are_refused_in_one_line(settings, grid, needle):
    with pytest.raises(UserError, match=needle):
        plan_tune(grid, TuneSettings(**settings))


def test_budgets_spaces_and_schedules_parse():
    assert parse_duration("90") == 90 and parse_duration("30m") == 1800 and parse_duration("2h") == 7200
    assert Budget(trials=None, time_s=60).describe() == "trials until the time budget ends and at most 1 min of wall " \
                                                        "time per method"  # fmt: skip
    with pytest.raises(UserError, match="needs a budget"):
        Budget(trials=None, time_s=None)
    assert parse_space("loguniform(1e-4, 1e-1)") == LogUniform(1e-4, 0.1)
    with pytest.raises(UserError, match="search space"):
        parse_space("normal(0, 1)")
    recipe = {"epochs": 240, "milestones": [150, 180, 210], "warmup_epochs": 0.0}
    assert shortened(recipe, 24)["milestones"] == [15, 18, 21]
    assert shortened({"epochs": 6, "milestones": [4, 5]}, 2)["milestones"] == [1]

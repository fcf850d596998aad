"""``diffbench tune``: the grid flags of ``run``, each method searched with the same budget, the winners as a grid.

Every name, space, budget and value is checked before torch is imported (:func:`bench.jobs.tuning.plan_tune`); the
searches, teachers and final grid run in :func:`bench.execute.tune.run_tune`.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from bench.cli.config import command_line, effective
from bench.cli.options import (
    EXECUTION,
    GRID_FLAGS,
    console,
    load_plugins,
    option,
    run_options,
    user_errors,
    with_options,
)
from bench.cli.run import grid_exit, grid_of

TUNE = "Tuning"

TUNE_ONLY = [
    option("trials", int | None, None, "--trials", panel=TUNE,
           help="Trials per search (one search per method and pair), the same for every method. Default 8, or as many "
           "as --time-budget allows when only that is given."),
    option("time_budget", str | None, None, "--time-budget", panel=TUNE,
           help="Wall time per search (seconds, or 30m, 2h): the search stops starting trials and stops running ones "
           "when it is spent. With --trials, whichever ends first."),
    option("trial_epochs", int | None, None, "--trial-epochs", panel=TUNE,
           help="Epochs of each trial (default: the recipe's), the lr milestones scaled alike; the final grid trains "
           "the full recipe."),
    option("scheduler", str, "asha", "--scheduler", panel=TUNE,
           help="asha (stop weak trials early on their hold-out score) | median (median stopping) | fifo (none)."),
    option("search", str, "random", "--search", panel=TUNE,
           help="random (Ray Tune's random search) | tpe (Optuna's TPE through Ray Tune; pip install optuna)."),
    option("spaces", list[str] | None, None, "--space", panel=TUNE,
           help="METHOD.NAME=SPACE overrides or adds one search space: loguniform(a,b), uniform(a,b), "
           "intuniform(a,b), choice(x,y,...); refused outside the declared range (repeatable). recipe.lr=... with "
           "--tune-recipe."),
    option("holdout", float, 0.1, "--holdout", panel=TUNE,
           help="Fraction of the training split held out (seeded, class-balanced where the task has classes) to score "
           "trials; the validation split the report scores is never seen."),
    option("tune_seed", int, 0, "--tune-seed", panel=TUNE,
           help="Seed of the searches, the hold-out and the trials' training."),
    option("tune_recipe", bool, False, "--tune-recipe", panel=TUNE,
           help="Also search the recipe's lr and weight decay, in every column: vanilla is then tuned too (without it, "
           "vanilla keeps the recipe's defaults like the methods' recipe)."),
    option("dry_run", bool, False, "--dry-run", help="Print the searches and the budget and exit.", panel=TUNE),
]  # fmt: skip


def settings_of(p: dict[str, Any]) -> Any:
    """The :class:`~bench.jobs.tuning.TuneSettings` of ``tune``'s parameters."""
    from bench.jobs.tuning import DEFAULT_TRIALS, Budget, TuneSettings, parse_duration, parse_space_overrides

    time_s = parse_duration(p.get("time_budget"))
    trials = p.get("trials")
    if trials is None and time_s is None:
        trials = DEFAULT_TRIALS
    budget = Budget(trials=trials, time_s=time_s, trial_epochs=p.get("trial_epochs"))
    return TuneSettings(budget=budget, search=p.get("search") or "random", scheduler=p.get("scheduler") or "asha",
                        holdout=float(p.get("holdout", 0.1)), seed=int(p.get("tune_seed") or 0),
                        tune_recipe=bool(p.get("tune_recipe")),
                        spaces=parse_space_overrides(p.get("spaces")))  # fmt: skip


def plan_table(plan: Any) -> Table:
    s = plan.settings
    table = Table(title=f"{len(plan.searches)} searches: {s.budget.describe()}, {s.describe_search()}, "
                  f"hold-out {s.holdout:.0%} of the training split (seed {s.seed})")  # fmt: skip
    for col in ("search", "trial job (base)", "trial epochs", "space"):
        table.add_column(col)
    for x in plan.searches:
        table.add_row(x.name, x.base.job_hash, str(x.base.recipe["epochs"]), x.describe_space())
    return table


@user_errors
@with_options(GRID_FLAGS, EXECUTION, TUNE_ONLY)
def tune(ctx: typer.Context, params: dict[str, Any]) -> None:
    """Tune every method with the same budget on Ray Tune, then re-train each winner with --seeds as a grid.

    Searches each method's hyper-parameters (the spaces its declaration gives; --space overrides one) with --trials
    and/or --time-budget per method, on a hold-out carved from the training split (never the validation split the
    report scores), random search or TPE, ASHA stopping weak trials early. Teachers are shared with `diffbench run`;
    the winners' final grid is ordinary jobs, which `diffbench report` shows as tuned columns (`report --tuning` shows
    each search). Re-running the same command resumes a killed search where it stopped. Exit codes as `run`.
    """
    p = effective(ctx, params.get("config"))
    load_plugins(p.get("imports"))
    options = run_options(p)
    from bench.jobs.tuning import plan_tune

    grid = grid_of(p)
    settings = settings_of(p)
    plan = plan_tune(grid, settings, device="cpu")  # every name, space and budget checked before torch is imported
    if p.get("dry_run"):
        console.print(plan_table(plan))
        return
    if options.device != "cpu":
        from bench.execute.preflight import check_device

        device = check_device(options).split(":")[0]
        if device != "cpu":
            plan = plan_tune(grid, settings, device=device)
    from bench.execute.tune import run_tune

    raise typer.Exit(grid_exit(lambda: run_tune(plan, options, console, command=command_line(ctx, p))))

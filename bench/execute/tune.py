"""``diffbench tune``: every method searched with the same budget on Ray Tune, then its winner re-trained as a grid.

Three phases under one output lock (:mod:`.lock`):

1. **Teachers** — the plan's teacher jobs, run like ``diffbench run`` runs them (:func:`.driver.run_grid`): the same
   jobs, the same hashes, so a teacher trained by ``run`` is reused and the other way round.
2. **Searches** — one Ray Tune experiment per method and pair (:func:`run_search`), one after the other, each with the
   same budget (``--trials``, ``--time-budget``): a search space from the method's declaration
   (:func:`bench.jobs.tuning.plan_tune`), random search (Ray Tune's ``BasicVariantGenerator``) or Optuna's TPE
   (``OptunaSearch``, an optional extra), ASHA (or the median stopping rule) stopping weak trials early on the
   hold-out score each trial reports per epoch. Each trial is a job (:func:`bench.jobs.tuning.trial_job`) that trains
   on the training split minus a seeded hold-out and evaluates on that hold-out: the validation split the report
   scores is never seen. Every trial is an MLflow child run of the tune run (:mod:`.tune_callback`); a failed trial
   is recorded and the search goes on. A killed driver resumes each search where it stopped, through Ray Tune's
   experiment restore (``Tuner.restore``: finished trials are not repeated, unfinished ones resume from their job
   checkpoints); a finished search leaves ``OUTPUT/tune/<key>/<search>.json`` and is not run again.
3. **Final grid** — the winners with ``--seeds`` on the full training split (:meth:`~bench.jobs.tuning.TunePlan.
   final_grid`), an ordinary grid of ordinary jobs; the runs a search chose are tagged with the tune run and a line
   of provenance (:data:`bench.tracking.schema.TUNED`, :data:`~bench.tracking.schema.TUNING`), so the report shows
   them as their own columns (``dkd (tuned)``), never averaged with untuned runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.execute.lock import OutputLock, prepare_output
from bench.execute.options import RunOptions
from bench.execute.signals import SIGNALLED, Terminated
from bench.jobs.grid import seeds_of
from bench.jobs.spec import JobSpec
from bench.jobs.tuning import Search, TunePlan, describe_values, trial_job, tuned_jobs
from bench.tracking import schema as S
from methods.errors import UserError
from methods.hparams import Choice, IntUniform, LogUniform, Space, Uniform


def to_tune(space: Space) -> Any:
    """A diffbench search space as Ray Tune's sampling object."""
    from ray import tune

    if isinstance(space, LogUniform):
        return tune.loguniform(float(space.low), float(space.high))
    if isinstance(space, Uniform):
        return tune.uniform(float(space.low), float(space.high))
    if isinstance(space, IntUniform):
        return tune.randint(space.low, space.high + 1)  # Ray's upper bound is exclusive
    if isinstance(space, Choice):
        return tune.choice(list(space.values))
    raise TypeError(f"unknown search space {space!r}")


# ------------------------------------------------------------------------------------------------
# the trial (in a Ray worker)
# ------------------------------------------------------------------------------------------------
def _trial_trainable(config: dict[str, Any]) -> None:
    """One trial: its job trains on the training split minus the hold-out; each epoch reports the hold-out score.

    The score Tune sees (``score``) is the best hold-out value of the primary metric so far, the objective of the
    search (what the report's ``best`` epoch shows for a finished job). The last epoch travels with the job's
    summary in one report, so a scheduler's stop at the last epoch never cuts a finished trial short.
    """
    import torch
    from ray import tune

    from bench.execute.events import Epoch, Failed, Finished, run_reporting, to_report
    from bench.jobs.plugins import load_plugins

    load_plugins(config.get("imports"))
    torch.set_num_threads(max(1, int(config["cpus"])))
    trial_id = tune.get_context().get_trial_id()
    base = JobSpec.from_dict(json.loads(config["base"]))
    spec = trial_job(base, dict(config.get("hp") or {}), dict(config.get("recipe") or {}), trial_id)
    key, epochs = f"val/{config['primary']}", int(spec.recipe["epochs"])
    state: dict[str, Any] = {"best": None, "last": None}

    def emit(event: Any) -> None:
        if isinstance(event, Epoch):
            value = event.metrics.get(key)
            if isinstance(value, int | float) and math.isfinite(value):
                state["best"] = value if state["best"] is None else max(state["best"], float(value))
            report = {**to_report(event), "job_hash": spec.job_hash}
            if state["best"] is not None:
                report[S.SCORE] = state["best"]
            if event.epoch >= epochs:
                state["last"] = report  # sent with the summary
            elif S.SCORE in report:
                tune.report(report)
        elif isinstance(event, Finished):
            report = {**(state["last"] or {}), **to_report(event), "epoch": epochs, "job_hash": spec.job_hash}
            best = event.summary.get(f"best_{config['primary']}")
            if isinstance(best, int | float) and math.isfinite(best):
                report[S.SCORE] = float(best)
            tune.report(report)
        elif isinstance(event, Failed):
            tune.report({**to_report(event), "job_hash": spec.job_hash})

    run_reporting(spec, config["output"], emit, claim_token=config.get("claim_token"), device=config["device"],
                  log=print)  # fmt: skip


# ------------------------------------------------------------------------------------------------
# one search (in the driver)
# ------------------------------------------------------------------------------------------------
@dataclass
class SearchResult:
    """What a finished search found: its trials (from MLflow, every session's), the winner, the cost."""

    search: str
    slug: str
    trials: list[dict[str, Any]] = field(default_factory=list)
    winner: dict[str, Any] | None = None
    winner_score: float | None = None
    winner_index: int | None = None
    device_hours: float = 0.0
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return self.__dict__.copy()

    @property
    def counts(self) -> dict[str, int]:
        out = {"completed": 0, "stopped": 0, "failed": 0}
        for t in self.trials:
            reason = t["stop_reason"]
            kind = "completed" if reason == "completed" else "failed" if reason.startswith("failed") else "stopped"
            out[kind] += 1
        return out


def _collect(tracker: Any, tune_run: str, search: Search) -> SearchResult:
    """The search's trials as its MLflow runs hold them, and the winner: the best hold-out score of the trials that
    ran all their epochs (of any trial with a score when none did)."""
    runs = [r for r in tracker.trial_runs(tune_run).values()
            if r.data.tags.get(S.SEARCH) == search.name and r.data.tags.get(S.SUPERSEDED) != "true"]  # fmt: skip
    trials = []
    for r in runs:
        tags, metrics = r.data.tags, r.data.metrics
        trials.append({
            "index": int(tags.get(S.TRIAL_INDEX, -1)),
            "trial_id": tags.get(S.TRIAL_ID),
            "values": json.loads(r.data.params.get(S.TRIAL_VALUES, "{}")),
            "best_score": metrics.get(S.BEST_SCORE),
            "epochs_run": int(metrics.get("epochs_run", 0)),
            "wall_s": float(metrics.get("wall_s", 0.0)),
            "device_hours": float(metrics.get("device_hours", 0.0)),
            "stop_reason": tags.get(S.STOP_REASON, "interrupted" if r.info.status != "FINISHED" else "?"),
            "run_id": r.info.run_id,
        })  # fmt: skip
    trials.sort(key=lambda t: t["index"])
    out = SearchResult(search.name, search.slug, trials, device_hours=sum(t["device_hours"] for t in trials))
    scored = [t for t in trials if isinstance(t["best_score"], int | float)]
    pool = [t for t in scored if t["stop_reason"] == "completed"]
    if not pool and scored:
        pool, out.note = scored, "no trial ran all its epochs: the winner is the best trial stopped early"
    if pool:
        best = max(pool, key=lambda t: (t["best_score"], -t["index"]))
        out.winner, out.winner_score, out.winner_index = best["values"], float(best["best_score"]), best["index"]
    return out


def _scheduler(name: str, epochs: int) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    if name == "asha":
        # Rungs at epochs 1, 2, 4, ... below the trial's last epoch; a trial's last epoch comes with its summary.
        return ASHAScheduler(time_attr="epoch", max_t=max(epochs, 1), grace_period=1, reduction_factor=2)
    if name == "median":
        return MedianStoppingRule(time_attr="epoch", grace_period=1, min_samples_required=2)
    return FIFOScheduler()


def _searcher(name: str, seed: int, concurrent: int) -> Any:
    """Ray Tune's random search (seeded) or Optuna's TPE (a ``Searcher``, capped by ``max_concurrent_trials``)."""
    if name == "tpe":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed))
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=seed, max_concurrent=concurrent)


def run_search(plan: TunePlan, search: Search, ctx: dict[str, Any]) -> SearchResult:
    """Run (or resume) one search on Ray Tune and return what it found (see the module docstring)."""
    import logging

    from ray import tune

    from bench.execute.tune_callback import SearchState, TrialCallback, register
    from bench.jobs.plugins import imported_modules
    from tasks.spec import task_spec

    output: Path = ctx["output"]
    tracker, tune_run, options = ctx["tracker"], ctx["tune_run"], ctx["options"]
    settings = plan.settings
    name = f"tune-{plan.key}-{search.slug}"
    primary = task_spec(search.base.task).primary_metric
    state = SearchState(search, tracker, tune_run, output, ctx["console"], primary, settings.scheduler,
                        settings.budget.time_s, ctx["device_share"])  # fmt: skip
    state.existing = {
        k: r
        for k, r in tracker.trial_runs(tune_run).items()
        if r.data.tags.get(S.SEARCH) == search.name and r.data.tags.get(S.SUPERSEDED) != "true"
    }
    register(name, state)
    # Trial errors are recorded in MLflow with their reason; Tune's own logging would repeat them (and warn that its
    # result files are off: the driver is the one writer of results).
    for logger in ("ray.tune", "ray.train"):
        logging.getLogger(logger).setLevel(logging.CRITICAL)
    space = search.tune_space()
    param_space = {
        "base": json.dumps(search.base.to_dict(), default=str),
        "hp": {k: to_tune(s) for k, s in space["hp"].items()},
        "recipe": {k: to_tune(s) for k, s in space["recipe"].items()},
        "output": str(output),
        "device": ctx["device"],
        "cpus": ctx["cpus"],
        "primary": primary,
        "claim_token": None,  # trial folders are a search's own (one per trial id), under the output lock
        "imports": imported_modules(),
    }
    trainable = tune.with_resources(_trial_trainable, {"cpu": ctx["cpus"], "gpu": ctx["gpus"]})
    path = output / "ray_results" / name
    if tune.Tuner.can_restore(str(path)):
        state.say("resuming the search where it stopped (Ray Tune experiment restore)")
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=False,
                                   param_space=param_space)  # fmt: skip
    else:
        epochs = int(search.base.recipe["epochs"])
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                metric=S.SCORE,
                mode="max",
                search_alg=_searcher(settings.search, settings.seed, ctx["concurrent"]),
                scheduler=_scheduler(settings.scheduler, epochs),
                num_samples=settings.budget.trials if settings.budget.trials is not None else -1,
                max_concurrent_trials=ctx["concurrent"] if settings.search == "tpe" else None,
                time_budget_s=settings.budget.time_s,
                reuse_actors=True,  # a worker keeps torch imported from one trial to the next
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(output / "ray_results"),
                failure_config=tune.FailureConfig(max_failures=options.max_failures),
                callbacks=[TrialCallback(name)],
                verbose=0,
            ),
        )
    try:
        results = tuner.fit()
        with contextlib.suppress(Exception):  # every trial of the experiment, restored finished ones included
            state.known.update(t.trial_id for t in results._experiment_analysis.trials)
    except Exception:
        if state.fatal is not None:
            raise state.fatal from None
        raise
    if state.fatal is not None:
        raise state.fatal
    lost = [r for k, r in state.existing.items() if k not in state.known] if state.known else []
    if lost:
        state.say(f"{len(lost)} trial(s) of an earlier session were lost with its unsaved Tune state; superseded")
        for r in lost:
            tracker.tag_runs(
                [r.info.run_id],
                {S.SUPERSEDED: "true", S.STOP_REASON: "lost: the driver died before Ray Tune saved the search's state"},
            )
            if r.info.status == "RUNNING":
                tracker.kill(r.info.run_id)
    return _collect(tracker, tune_run, search)


# ------------------------------------------------------------------------------------------------
# the command
# ------------------------------------------------------------------------------------------------
def _summary_file(output: Path, plan: TunePlan, search: Search) -> Path:
    return output / "tune" / plan.key / f"{search.slug}.json"


def _tuning_line(plan: TunePlan, result: SearchResult, primary: str, unit: str, tune_run: str,
                 class_balanced: bool) -> str:  # fmt: skip
    """The provenance line of a tuned column (tag :data:`~bench.tracking.schema.TUNING` of its runs)."""
    s = plan.settings
    epochs = plan.searches[0].base.recipe["epochs"]
    counts = result.counts
    return (f"{s.describe_search()}, {s.budget.describe()} ({len(result.trials)} ran: {counts['completed']} "
            f"completed, {counts['stopped']} stopped early, {counts['failed']} failed; {epochs} epoch(s) per trial) on "
            f"{s.describe_holdout(class_balanced)}; won {describe_values(result.winner or {})} (hold-out {primary} "
            f"{result.winner_score:.2f}, trial {result.winner_index}); search cost {result.device_hours:.3g} "
            f"{unit} (tune run {tune_run})")  # fmt: skip


def run_tune(plan: TunePlan, options: RunOptions, console: Console | None = None, command: str | None = None) -> int:
    """Teachers, searches, final grid (see the module docstring); how many final-grid jobs failed.

    Raises:
        UserError: bad input, found before anything is written or started.
        KeyboardInterrupt / Terminated: after marking the tune run and running trials KILLED (a re-run resumes).
        StorageFull: the disk or store stopped taking writes.
    """
    from bench.execute.driver import run_grid
    from bench.execute.preflight import check_device, preflight
    from tasks.spec import task_spec

    console = console or Console()
    command = command or shlex.join(["diffbench", *sys.argv[1:]])
    device_tag = check_device(options)
    gpus = options.gpus_per_job if options.gpus_per_job > 0 else (1.0 if device_tag == "cuda" else 0.0)
    console.print(f"[dim]checking the data and teacher checkpoints of {len(plan.searches)} searches…[/]")
    preflight([*plan.teachers, *(s.base for s in plan.searches)], options.output, console)
    output = prepare_output(options.output)
    with OutputLock(output) as lock:  # signals: bench.cli.run.grid_exit handles them from the first second
        if plan.teachers:
            console.print(f"[bold]teachers[/] ({len(plan.teachers)} job(s), shared with `diffbench run`)")
            failed = run_grid(plan.teachers, options, console, command=f"{command} [teachers]", lock=lock)
            if failed:
                raise UserError(f"{failed} teacher job(s) failed; the searches need them (see the lines above)")
        from bench.execute.ray_tune import init_ray
        from bench.tracking.tracker import Tracker

        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"  # a failed trial reports no score
        # Ray Tune saves a search's state at most this often: a killed driver loses at most this much of it.
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
        tracker = Tracker(output, options.tracking_uri, options.experiment)
        tracker.close_stale([])
        primary = task_spec(plan.searches[0].base.task).primary_metric
        unit = "GPU-hours" if gpus > 0 else "CPU-hours"
        s = plan.settings
        seeds = ",".join(map(str, seeds_of(plan.grid.seeds)))
        params = {"budget": s.budget.describe(), "search": s.describe_search(), "scheduler": s.scheduler,
                  "holdout": json.dumps(s.holdout_spec()), "trial_recipe": f"{plan.searches[0].base.recipe['epochs']}"
                  " epochs", "seeds": seeds, "cost_unit": unit, "command": command[:5000],
                  "searches": "; ".join(f"{x.name}: {x.describe_space()}" for x in plan.searches)[:6000]}  # fmt: skip
        tune_run = tracker.start_tune(f"tune {plan.key} ({len(plan.searches)} searches)", plan.key, params,
                                      f"diffbench tune: {params['searches']}")  # fmt: skip
        console.print(f"[bold]searches[/] ({len(plan.searches)}: {s.budget.describe()}, {s.describe_search()}); "
                      f"MLflow tune run {tune_run}", highlight=False)  # fmt: skip
        results: dict[str, SearchResult] = {}
        try:
            ray_ready = False
            for search in plan.searches:
                done = _summary_file(output, plan, search)
                if done.is_file():
                    data = json.loads(done.read_text())
                    results[search.name] = SearchResult(**data)
                    console.print(f"[dim]{search.name}[/]: finished earlier ({len(data['trials'])} trials)",
                                  highlight=False)  # fmt: skip
                    continue
                if not ray_ready:
                    import ray

                    started = ray.is_initialized()
                    line = init_ray(options.address)
                    if not started:
                        console.print(line, highlight=False)
                    ray_ready = True
                ctx = _context(options, output, tracker, tune_run, lock, console, gpus, device_tag, s.budget.trials)
                result = run_search(plan, search, ctx)  # init_ray put our signal handlers back
                results[search.name] = result
                if result.winner is not None:
                    done.parent.mkdir(parents=True, exist_ok=True)
                    done.write_text(json.dumps(result.to_json(), indent=1, default=str))
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                for r in tracker.trial_runs(tune_run).values():
                    if r.info.status == "RUNNING":
                        tracker.kill(r.info.run_id)
                tracker.kill(tune_run)
            console.print("[yellow]interrupted[/]: finished trials are kept; run the same command again to resume "
                          "the search where it stopped")  # fmt: skip
            if SIGNALLED.is_set():
                raise Terminated() from None
            raise
        winners = {n: r.winner for n, r in results.items() if r.winner is not None}
        won_tags = {
            f"{S.WON_PREFIX}{r.slug}": f"{describe_values(r.winner)} (hold-out {primary} {r.winner_score:.2f}, "
            f"trial {r.winner_index} of {len(r.trials)})"
            for r in results.values()
            if r.winner is not None
        }
        cost = {f"device_hours.{r.slug}": r.device_hours for r in results.values()}
        cost.update({f"trials.{r.slug}": len(r.trials) for r in results.values()})
        tracker.end_tune(tune_run, cost, won_tags, status="FINISHED" if len(winners) == len(results) else "FAILED")
        _print_searches(console, plan, results, primary, unit)
        final = plan.final_grid(winners)  # refuses a search without a winner, naming it
        chosen = tuned_jobs(plan, final, winners)
        console.print(f"[bold]final grid[/] ({len(final)} job(s): the winners with seeds {seeds}, on the full "
                      "training split)", highlight=False)  # fmt: skip
        failed = run_grid(final, options, console, command=f"{command} [final grid]", lock=lock,
                          grid_tags={S.TUNED: tune_run})  # fmt: skip
        balanced = _class_balanced(plan)
        lines = {name: _tuning_line(plan, results[name], primary, unit, tune_run, balanced) for name in winners}
        runs = tracker.job_runs(list(chosen))
        for job_hash, search_name in chosen.items():
            run = runs.get(job_hash)
            if run is not None:
                tracker.tag_runs([run.info.run_id], {S.TUNED: tune_run, S.TUNING: lines[search_name]})
        grids = tracker.search_runs(f"{S.grid_filter()} AND tags.`{S.TUNED}` = '{tune_run}'")
        if grids:
            tracker.tag_runs([tune_run], {S.FINAL_GRID: grids[0].info.run_id})
        console.print("next: [bold]diffbench report[/] (tuned columns are marked) and [bold]diffbench report "
                      "--tuning[/] (each search)" + (f" --output {output}" if output != Path("results").resolve()
                                                     else ""), highlight=False)  # fmt: skip
        return failed


def _class_balanced(plan: TunePlan) -> bool:
    from tasks.spec import task_spec

    return task_spec(plan.searches[0].base.task).name == "classification"


def _context(options: RunOptions, output: Path, tracker: Any, tune_run: str, lock: OutputLock, console: Console,
             gpus: float, device_tag: str, trials: int | None) -> dict[str, Any]:  # fmt: skip
    import ray

    from bench.execute.ray_tune import _node_cpus, check_resources

    node_cpus = _node_cpus()
    # Trials at once: --max-concurrent, else as many as the GPUs hold (fractions pack several on one GPU), else one per
    # CPU (never more than the trials); each gets the CPUs of its share, as `run` gives its jobs.
    if options.max_concurrent:
        at_once = options.max_concurrent
    elif gpus > 0:
        at_once = max(1, int(ray.cluster_resources().get("GPU", 0) / gpus + 1e-9))
    else:
        at_once = max(1, min(trials or node_cpus, node_cpus))
    concurrent = at_once if (options.max_concurrent or gpus == 0) else None
    cpus = options.cpus_per_job or max(1, node_cpus // at_once)
    check_resources(cpus, gpus)
    return {"options": options, "output": output, "tracker": tracker, "tune_run": tune_run, "lock": lock,
            "console": console, "gpus": gpus, "cpus": cpus, "concurrent": concurrent or 0,
            "device": "cuda" if gpus > 0 else "cpu", "device_share": gpus if gpus > 0 else float(cpus)}  # fmt: skip


def _print_searches(console: Console, plan: TunePlan, results: dict[str, SearchResult], primary: str,
                    unit: str) -> None:  # fmt: skip
    table = Table(title=f"searches ({plan.settings.budget.describe()}, {plan.settings.describe_search()})")
    for col in (
        "search",
        "trials",
        "completed",
        "stopped",
        "failed",
        f"best hold-out {primary}",
        "winning values",
        unit,
    ):
        table.add_column(col)
    for r in results.values():
        c = r.counts
        table.add_row(r.search, str(len(r.trials)), str(c["completed"]), str(c["stopped"]), str(c["failed"]),
                      f"{r.winner_score:.2f}" if r.winner_score is not None else "-",
                      describe_values(r.winner) if r.winner else "-", f"{r.device_hours:.3g}")  # fmt: skip
    console.print(table)
    for r in results.values():
        if r.note:
            console.print(f"[yellow]note[/] {r.search}: {r.note}", highlight=False)


__all__ = ["SearchResult", "run_search", "run_tune", "to_tune"]

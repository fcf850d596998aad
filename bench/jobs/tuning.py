"""What ``diffbench tune`` searches, planned without torch or Ray: one search per method and pair, the same budget for
each, trials as jobs on a hold-out of the training split, and the final grid of the winners.

* **Spaces** live with the methods (:func:`methods.catalog.method_space`: ``beta: Annotated[float, Range(ge=0),
  LogUniform(1, 16)]``); ``--space dkd.beta=loguniform(2,12)`` overrides one (refused when it leaves the declared
  range, :func:`methods.catalog.check_space`), ``--set dkd.beta=6`` fixes one (it is then not searched). With
  ``--tune-recipe`` every column, vanilla included, also searches the recipe's lr and weight decay
  (:data:`RECIPE_SPACE`): the budget rule is the same for every column, so vanilla is tuned exactly when the recipe is.
* **Trials** are ordinary jobs of a special shape (:func:`trial_job`): the search's base job (its method, pair and the
  search seed) with the sampled values, the trial recipe (``--trial-epochs``, milestones scaled) and a hold-out
  (``recipe.extra.holdout``) that the task carves from the *training* split and evaluates on: the validation split
  ``diffbench report`` scores is never seen by a search. The trial's id is part of its recipe, so two trials never
  share a job folder.
* **The final grid** (:func:`final_grid`) is the grid of ``run`` with each method's winning values as ``--set``
  (and, with ``--tune-recipe``, the winning recipe per column): ordinary jobs with ordinary hashes, teachers shared
  with ``run``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from bench.jobs.grid import GridSpec, expand
from bench.jobs.spec import VANILLA, JobSpec
from methods import catalog
from methods.errors import UserError
from methods.hparams import SPACE_KINDS, Choice, IntUniform, LogUniform, Space, Uniform
from tasks.recipe import HOLDOUT, MAX_HOLDOUT, Recipe

#: ``--search`` values: Ray Tune's random search, or Optuna's TPE through Ray Tune (needs the optional ``optuna``).
SEARCHES = ("random", "tpe")
#: ``--scheduler`` values: Ray Tune's ASHA, its median stopping rule, or none (every trial runs all its epochs).
SCHEDULERS = ("asha", "median", "fifo")
#: The ``recipe`` scope of ``--space``.
RECIPE_SCOPE = "recipe"
#: The recipe fields ``--tune-recipe`` searches by default: log-uniform from a quarter to four times the recipe's value.
RECIPE_SPACE: dict[str, tuple[float, float]] = {"lr": (0.25, 4.0), "weight_decay": (0.25, 4.0)}
#: Recipe fields ``--space recipe.<field>=...`` may search.
RECIPE_TUNABLE = ("lr", "weight_decay", "momentum")
#: The ``Recipe.extra`` key naming a trial (its Tune trial id): a trial's job is its own.
TRIAL_KEY = "trial"
#: The default budget: trials per search.
DEFAULT_TRIALS = 8

_SPACE = re.compile(r"^\s*([a-z]+)\s*\((.*)\)\s*$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_space(text: str) -> Space:
    """``loguniform(1, 16)``, ``uniform(0,1)``, ``intuniform(1, 10)``, ``choice(1, 3, 5)`` → a :class:`Space`."""
    import yaml

    m = _SPACE.match(text)
    if not m or m.group(1) not in SPACE_KINDS:
        raise UserError(f"search space {text!r}: expected one of {', '.join(f'{k}(...)' for k in SPACE_KINDS)}, "
                        "e.g. loguniform(1, 16), uniform(0, 1), intuniform(1, 10), choice(1, 3, 5)")  # fmt: skip
    kind, inner = SPACE_KINDS[m.group(1)], m.group(2)

    def scalar(raw: str) -> Any:
        for number in (int, float):  # 1e-7 is a number (YAML 1.1 would read a string)
            try:
                return number(raw)
            except ValueError:
                pass
        return yaml.safe_load(raw)

    try:
        args = [scalar(a.strip()) for a in inner.split(",")] if inner.strip() else []
    except yaml.YAMLError:
        raise UserError(f"search space {text!r}: its arguments are not values") from None
    if kind is Choice:
        return Choice(*args)
    if len(args) != 2:
        raise UserError(f"search space {text!r}: {m.group(1)} takes two bounds, got {len(args)}")
    return kind(*args)


def parse_space_overrides(items: list[str] | None) -> dict[str, dict[str, Space]]:
    """``--space dkd.beta=loguniform(1,16) --space recipe.lr=loguniform(0.01,0.2)`` → ``{scope: {name: space}}``."""
    out: dict[str, dict[str, Space]] = {}
    for item in items or []:
        key, sep, raw = str(item).partition("=")
        scope, dot, name = key.strip().partition(".")
        if not sep or not dot or not scope or not name:
            raise UserError(f"--space {item!r}: expected METHOD.NAME=SPACE (or recipe.NAME=SPACE), "
                            "e.g. --space dkd.beta=loguniform(1,16)")  # fmt: skip
        out.setdefault(scope, {})[name.strip()] = parse_space(raw)
    return out


def parse_duration(text: str | float | int | None) -> float | None:
    """``--time-budget``: seconds, or ``90s``, ``30m``, ``2h``, ``1d``; ``None`` stays ``None``."""
    if text is None:
        return None
    m = _DURATION.match(str(text))
    if not m:
        raise UserError(f"--time-budget {text!r}: expected seconds or a duration like 30m, 2h")
    seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if seconds <= 0:
        raise UserError(f"--time-budget {text!r}: must be more than 0")
    return seconds


def _check_recipe_space(name: str, space: Space, recipe: Recipe) -> None:
    if name not in RECIPE_TUNABLE:
        raise UserError(f"--space recipe.{name}: the recipe fields a search can tune are {', '.join(RECIPE_TUNABLE)}")
    if not space.is_numeric() or isinstance(space, IntUniform):
        raise UserError(f"--space recipe.{name}={space.describe()}: give a uniform, loguniform or numeric choice space")
    for value in space.values_at_bounds():
        try:
            recipe.updated(**{name: value})
        except UserError as err:
            raise UserError(f"--space recipe.{name}={space.describe()} lies outside what the recipe accepts: {err}") \
                from None  # fmt: skip
    if name == "momentum" and max(space.values_at_bounds()) >= 1:
        raise UserError(f"--space recipe.momentum={space.describe()}: momentum must stay below 1")


@dataclass(frozen=True)
class Budget:
    """The same for every search: ``trials`` (``None``: as many as ``time_s`` allows), ``time_s`` (wall seconds per
    search, ``None``: no limit) and ``trial_epochs`` (``None``: the recipe's epochs)."""

    trials: int | None = DEFAULT_TRIALS
    time_s: float | None = None
    trial_epochs: int | None = None

    def __post_init__(self) -> None:
        if self.trials is None and self.time_s is None:
            raise UserError("a search needs a budget: --trials N, --time-budget DURATION, or both")
        if self.trials is not None and (isinstance(self.trials, bool) or self.trials < 1):
            raise UserError(f"--trials must be at least 1, got {self.trials}")
        if self.trial_epochs is not None and self.trial_epochs < 1:
            raise UserError(f"--trial-epochs must be at least 1, got {self.trial_epochs}")

    def describe(self) -> str:
        parts = [f"{self.trials} trials" if self.trials is not None else "trials until the time budget ends"]
        if self.time_s is not None:
            parts.append(f"at most {_duration_text(self.time_s)} of wall time")
        return " and ".join(parts) + " per method"


def _duration_text(seconds: float) -> str:
    if seconds >= 3600 and seconds % 360 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 6 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


@dataclass(frozen=True)
class TuneSettings:
    """How every search runs (the same for each): budget, search algorithm, scheduler, hold-out and seed."""

    budget: Budget = field(default_factory=Budget)
    search: str = "random"
    scheduler: str = "asha"
    holdout: float = 0.1
    seed: int = 0
    tune_recipe: bool = False
    spaces: dict[str, dict[str, Space]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            raise UserError(f"--search {self.search!r}: valid are {', '.join(SEARCHES)}")
        if self.scheduler not in SCHEDULERS:
            raise UserError(f"--scheduler {self.scheduler!r}: valid are {', '.join(SCHEDULERS)}")
        if isinstance(self.holdout, bool) or not 0 < self.holdout <= MAX_HOLDOUT:
            raise UserError(f"--holdout must be a fraction in (0, {MAX_HOLDOUT}] of the training split, "
                            f"got {self.holdout!r}")  # fmt: skip
        if self.seed < 0:
            raise UserError(f"--tune-seed must be >= 0, got {self.seed}")
        if self.search == "tpe":
            import importlib.util

            if importlib.util.find_spec("optuna") is None:
                raise UserError("--search tpe runs Optuna's TPE through Ray Tune: install the optional extra "
                                "(pip install 'diffbench[tune]', or optuna), or use --search random")  # fmt: skip
        if RECIPE_SCOPE in self.spaces and not self.tune_recipe:
            raise UserError("--space recipe.* searches the recipe: add --tune-recipe (then every column, vanilla "
                            "included, searches it with the same budget)")  # fmt: skip

    def holdout_spec(self) -> dict[str, Any]:
        return {"fraction": float(self.holdout), "seed": int(self.seed)}

    def describe_search(self) -> str:
        search = {"random": "random search", "tpe": "Optuna TPE"}[self.search]
        scheduler = {"asha": "ASHA early stopping", "median": "median stopping", "fifo": "no early stopping"}
        return f"{search} with {scheduler[self.scheduler]} (Ray Tune)"

    def describe_holdout(self, class_balanced: bool) -> str:
        how = "class-balanced " if class_balanced else ""
        return (f"a {how}{self.holdout:.0%} hold-out of the training split (seed {self.seed}); the validation split "
                "the report scores is never seen")  # fmt: skip


@dataclass(frozen=True)
class Search:
    """One search: a method on a pair (vanilla: a student alone), its space and the job each trial varies."""

    method: str
    teacher: str | None
    student: str
    base: JobSpec
    space: dict[str, Space]

    @property
    def name(self) -> str:
        """``dkd resnet20→resnet8``."""
        return f"{self.method} {self.teacher}→{self.student}" if self.teacher else f"{self.method} {self.student}"

    @property
    def slug(self) -> str:
        """``dkd-resnet20-resnet8``: the search's name in files and MLflow keys."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(x for x in (self.method, self.teacher, self.student) if x))

    def tune_space(self) -> dict[str, dict[str, Space]]:
        """The space split by scope: ``{"hp": {...}, "recipe": {...}}`` (a trial's config has the same shape)."""
        out: dict[str, dict[str, Space]] = {"hp": {}, "recipe": {}}
        for key, space in self.space.items():
            scope, _, name = key.partition(".")
            out[scope][name] = space
        return out

    def describe_space(self) -> str:
        return ", ".join(f"{k.partition('.')[2]} ~ {s.describe()}" for k, s in self.space.items())


def shortened(recipe: dict[str, Any], epochs: int | None) -> dict[str, Any]:
    """``recipe`` cut to ``epochs`` (a trial's), its step milestones (and iteration schedule) scaled alike."""
    old = int(recipe["epochs"])
    if epochs is None or epochs == old:
        return dict(recipe)
    out = dict(recipe, epochs=int(epochs))
    scale = epochs / old
    out["milestones"] = sorted({max(1, round(m * scale)) for m in recipe.get("milestones") or [] if round(m * scale)
                                < epochs})  # fmt: skip
    if recipe.get("max_iters"):
        out["max_iters"] = max(1, round(recipe["max_iters"] * scale))
        out["iter_milestones"] = [max(1, round(m * scale)) for m in recipe.get("iter_milestones") or []]
    out["warmup_epochs"] = min(float(recipe.get("warmup_epochs") or 0.0) * scale, float(epochs))
    return out


def trial_job(base: JobSpec, hp: dict[str, Any], recipe: dict[str, Any], trial_id: str) -> JobSpec:
    """The job of one trial: ``base`` (already the trial recipe, with its hold-out) with the sampled values.

    Checked like any job (the method's declared types and ranges, the recipe's rules); the trial id goes into the
    recipe's ``extra``, so each trial trains in a folder of its own.
    """
    hparams = dict(base.hparams)
    if hp:
        if base.method == VANILLA:
            raise UserError("vanilla trials take no method hyper-parameters")
        defaults = catalog.default_hparams(base.method)
        for k, v in hp.items():
            hparams[k] = float(v) if isinstance(defaults.get(k), float) and isinstance(v, int) else v
        catalog.check_hparams(base.method, hparams)
    fields = dict(base.recipe)
    fields.update({k: float(v) for k, v in recipe.items()})
    fields["extra"] = {**dict(base.recipe.get("extra") or {}), TRIAL_KEY: str(trial_id)}
    Recipe(**{**fields, "milestones": tuple(fields.get("milestones") or ()),
              "iter_milestones": tuple(fields.get("iter_milestones") or ())})  # fmt: skip
    return replace(base, hparams=tuple(sorted(hparams.items())), recipe=fields)


@dataclass(frozen=True)
class TunePlan:
    """What ``diffbench tune`` does: the teachers (shared with ``run``), the searches, how the final grid is made."""

    grid: GridSpec
    settings: TuneSettings
    teachers: list[JobSpec]
    searches: list[Search]
    device: str = "cpu"

    @property
    def key(self) -> str:
        """12 hex digits over everything that decides the searches: a re-run with the same key resumes them."""
        doc = {
            "searches": [[s.name, s.base.job_hash, {k: v.describe() for k, v in s.space.items()}]
                         for s in self.searches],
            "budget": [self.settings.budget.trials, self.settings.budget.time_s, self.settings.budget.trial_epochs],
            "search": self.settings.search,
            "scheduler": self.settings.scheduler,
        }  # the hold-out, seed and trial recipe are in the base jobs' hashes
        return hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]

    def final_grid(self, winners: dict[str, dict[str, Any]]) -> list[JobSpec]:
        """The final grid: ``run``'s grid with each search's winning values (``winners``: search name → ``{"hp.x":
        v, "recipe.lr": v}``). Ordinary jobs (no hold-out, the grid's own seeds and recipe), teachers first."""
        return final_grid(self, winners)


def plan_tune(grid: GridSpec, settings: TuneSettings, device: str = "cpu") -> TunePlan:
    """Every search of ``grid`` under ``settings``, checked before anything trains (names, spaces, budgets)."""
    base_grid = replace(grid, seeds=(settings.seed,))
    jobs = expand(base_grid, device=device)  # every name and value checked, the teachers shared with `run`
    teachers = [j for j in jobs if j.role == "teacher"]
    methods = [m for m in dict.fromkeys(j.method for j in jobs if j.role != "teacher") if m != VANILLA]
    unknown_scopes = sorted(set(settings.spaces) - {*methods, RECIPE_SCOPE})
    if unknown_scopes:
        raise UserError(f"--space names {', '.join(unknown_scopes)}, which this grid does not tune "
                        f"(methods: {', '.join(methods) or 'vanilla only'}; or recipe.<field>)")  # fmt: skip
    sample = jobs[-1].recipe_obj()
    recipe_space: dict[str, Space] = {}
    if settings.tune_recipe:
        for name, (lo, hi) in RECIPE_SPACE.items():
            value = float(getattr(sample, name))
            if value > 0:
                recipe_space[name] = LogUniform(value * lo, value * hi)
        for name, space in settings.spaces.get(RECIPE_SCOPE, {}).items():
            _check_recipe_space(name, space, sample)
            recipe_space[name] = space
    searches: list[Search] = []
    for job in jobs:
        if job.role == "teacher" or (job.method == VANILLA and not settings.tune_recipe):
            continue
        space: dict[str, Space] = {}
        if job.method != VANILLA:
            fixed = set(grid.sets.get(job.method, {}))
            declared = {k: s for k, s in catalog.method_space(job.method).items() if k not in fixed}
            for name, s in settings.spaces.get(job.method, {}).items():
                catalog.check_space(job.method, name, s)
                if name in fixed:
                    raise UserError(f"--space {job.method}.{name} and --set {job.method}.{name} contradict: "
                                    "a hyper-parameter is either searched or fixed")  # fmt: skip
                declared[name] = s
            space = {f"hp.{k}": s for k, s in declared.items()}
        space.update({f"recipe.{k}": s for k, s in recipe_space.items()})
        if not space:
            raise UserError(f"method {job.method!r} has nothing to search: it declares no search space and --space "
                            f"gives none (e.g. --space {job.method}.<name>=loguniform(a,b))")  # fmt: skip
        recipe = shortened(job.recipe, settings.budget.trial_epochs)
        recipe["extra"] = {**dict(recipe.get("extra") or {}), HOLDOUT: settings.holdout_spec()}
        base = replace(job, recipe=recipe)
        base.recipe_obj()  # the trial recipe is valid
        searches.append(Search(job.method, job.teacher, job.student, base, space))
    if not searches:
        raise UserError("nothing to tune: give --methods (vanilla alone is tuned only with --tune-recipe)")
    return TunePlan(grid, settings, teachers, searches, device)


def final_grid(plan: TunePlan, winners: dict[str, dict[str, Any]]) -> list[JobSpec]:
    """See :meth:`TunePlan.final_grid`: per search, ``run``'s grid of its pair and method with the winning values as
    ``--set`` (and, with ``--tune-recipe``, the winning recipe: then vanilla too). The teachers are the plan's own
    (those of ``run``), whatever recipe a column's students won."""
    by_name = {s.name: s for s in plan.searches}
    missing = sorted(set(by_name) - set(winners))
    if missing:
        raise UserError(f"no winning configuration for {', '.join(missing)}: every trial of its search failed")
    grid = plan.grid
    teacher_refs = {t.student: f"job:{t.job_hash}" for t in plan.teachers}
    jobs: list[JobSpec] = list(plan.teachers)
    columns = list(plan.searches)
    if not plan.settings.tune_recipe:  # vanilla is not searched: the grid's own vanilla students, untuned
        jobs += [j for j in expand(grid, device=plan.device) if j.role != "teacher" and j.method == VANILLA]
    for s in columns:
        won = winners[s.name]
        sets = {m: dict(v) for m, v in grid.sets.items() if m == s.method}
        if s.method != VANILLA:
            sets.setdefault(s.method, {}).update(_scope(won, "hp"))
        one = replace(grid, pairs=((s.teacher, s.student),) if s.teacher else grid.pairs,
                      methods=(s.method,) if s.method != VANILLA else (), sets=sets,
                      recipe={**grid.recipe, **_scope(won, "recipe")})  # fmt: skip
        for j in expand(one, device=plan.device):
            if j.role == "teacher" or j.method != s.method or j.student != s.student:
                continue
            jobs.append(replace(j, teacher_ref=teacher_refs[j.teacher]) if j.teacher in teacher_refs else j)
    unique: dict[str, JobSpec] = {}
    for j in jobs:
        unique.setdefault(j.job_hash, j)
    return list(unique.values())


def _scope(values: dict[str, Any], scope: str) -> dict[str, Any]:
    return {k.partition(".")[2]: v for k, v in values.items() if k.partition(".")[0] == scope}


def tuned_jobs(plan: TunePlan, final: list[JobSpec], winners: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The final grid's jobs a search chose (job hash → search name): what the report marks as tuned. Vanilla is
    among them only when the recipe was tuned; teachers never are."""
    out: dict[str, str] = {}
    for s in plan.searches:
        for j in final:
            if j.role == "teacher" or j.method != s.method or j.student != s.student:
                continue
            if s.teacher and j.teacher != s.teacher:
                continue
            out[j.job_hash] = s.name
    return out


def describe_values(values: dict[str, Any]) -> str:
    """``alpha=1.23, beta=6.5, lr=0.041``: a search's winning values, short."""

    def short(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k.partition('.')[2]}={short(v)}" for k, v in sorted(values.items()))


__all__ = [
    "DEFAULT_TRIALS",
    "RECIPE_SPACE",
    "SCHEDULERS",
    "SEARCHES",
    "TRIAL_KEY",
    "Budget",
    "Choice",
    "IntUniform",
    "LogUniform",
    "Search",
    "TunePlan",
    "TuneSettings",
    "Uniform",
    "describe_values",
    "final_grid",
    "parse_duration",
    "parse_space",
    "parse_space_overrides",
    "plan_tune",
    "shortened",
    "trial_job",
    "tuned_jobs",
]

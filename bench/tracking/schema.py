"""The MLflow run schema: every tag, param, metric and artifact name diffbench writes and reads, defined once.

The tracker (:mod:`bench.tracking.tracker`) writes runs with these names; reports (:mod:`bench.report`), the UI
view (:mod:`bench.tracking.ui_view`) and the driver's resume logic read them. Changing a value here changes what
older stores mean to newer code: add names, never rename them.

* **Grid runs** (one per ``diffbench run``): tags :data:`KIND` = :data:`KIND_GRID`, :data:`GRID_HASH`
  (the grid's identity: its sorted job hashes), :data:`OUTPUT`, :data:`GIT_COMMIT`, :data:`VERSION`, ``command``,
  ``jobs``, ``executor``; artifacts :data:`GRID_JOBS_ARTIFACT` (the job hashes) and :data:`GRID_CONFIG_ARTIFACT`
  (the resolved configuration); metrics ``jobs_failed``, ``jobs_finished``.
* **Job runs** (one live run per job hash, a child of the grid run that started it): the axis tags
  :data:`JOB_TAGS`, :data:`OUTPUT`, environment tags, :data:`FAILURE_REASON` on failed jobs, :data:`SUPERSEDED`
  and :data:`SUPERSEDED_BY` on runs a later run of the same job replaced; params ``hp.<name>``
  (:data:`HP_PREFIX`), ``recipe.<field>`` (:data:`RECIPE_PREFIX`), :data:`TEACHER_REF`; per-epoch metrics
  (step = epoch) ``train/<term>``, ``val/<metric>``, ``lr``, ``epoch_time_s``; summary metrics
  ``best_<metric>``, ``last_<metric>``, ``best_epoch``, ``train_time_s``, ``images_per_s``, ``peak_mem_mb``,
  ``teacher_<metric>``; artifacts :data:`JOB_ARTIFACTS` and the logged model (``runs:/<run id>/student``).
  Job runs of a ``diffbench tune`` final grid that a search chose also carry :data:`TUNED` and :data:`TUNING`.
* **Tune runs** (one per ``diffbench tune``): tags :data:`KIND` = :data:`KIND_TUNE`, :data:`TUNE_KEY` (its
  identity: a re-run resumes it), :data:`OUTPUT`, the budget, search, scheduler and hold-out as params
  (:data:`TUNE_PARAMS`), per search :data:`WON_PREFIX` ``<search>`` (the winning values and their score) and
  :data:`FINAL_GRID` (the final grid's run); metrics per search ``trials.<search>``, ``device_hours.<search>``.
* **Trial runs** (one per trial, children of the tune run): tags :data:`KIND` = :data:`KIND_TRIAL`, the axes of
  :data:`JOB_TAGS` with ``role`` = ``trial`` (so the UI groups trials by method), :data:`SEARCH`, :data:`TRIAL_ID`,
  :data:`TRIAL_INDEX`, :data:`STOP_REASON`, :data:`JOB_HASH`; params ``hp.<name>``, ``recipe.<field>`` and
  :data:`TRIAL_VALUES`; per-epoch metrics ``holdout/<metric>`` and :data:`SCORE`, ``train/<term>``; summary
  metrics :data:`BEST_SCORE`, ``epochs_run``, ``wall_s``, ``device_hours``. Reports never read them as jobs.

Nothing here imports MLflow.
"""

from __future__ import annotations

#: The experiment runs go to unless ``--experiment`` says otherwise.
EXPERIMENT = "diffbench"

#: Tag telling grid runs from job runs.
KIND = "diffbench.kind"
KIND_GRID = "grid"
KIND_JOB = "job"
KIND_TUNE = "tune"
KIND_TRIAL = "trial"
#: Tag: the output folder whose driver wrote the run (on a shared server, a driver touches only its own).
OUTPUT = "diffbench.output"
#: Tag of a run its driver died in, closed by a later driver.
CLOSED = "diffbench.closed"
#: Tags of a job run that a later run of the same job replaced (kept for the record, ignored by reports).
SUPERSEDED = "diffbench.superseded"
SUPERSEDED_BY = "diffbench.superseded_by"
#: Tag of a teacher run logged from files another output folder trained (the teacher cache folder they came from).
TEACHER_CACHE = "diffbench.teacher_cache"
#: Tag of a grid run: 12 hex digits over its sorted job hashes.
GRID_HASH = "grid_hash"
#: Tag of a job run: its identity.
JOB_HASH = "job_hash"
#: Tag of a failed job run: why.
FAILURE_REASON = "failure_reason"
#: Tag: the task's recipe preset the job's recipe equals, else ``custom`` (reports match published numbers on it).
RECIPE_PRESET = "recipe_preset"
GIT_COMMIT = "git_commit"
VERSION = "diffbench_version"
#: MLflow's own tag naming a run's parent.
PARENT = "mlflow.parentRunId"

#: The grid axes of a job run, as tags (the report's row and column keys).
JOB_TAGS: tuple[str, ...] = ("task", "dataset", "teacher", "student", "method", "seed", "role")
#: Tag of a job run: its setting without the seed, short enough for the MLflow UI's group label
#: (``kd resnet20→resnet8 · colorshapes``); the UI's runs view groups by it (:mod:`bench.tracking.ui_view`).
SETTING = "setting"
#: Every tag a report reads; its frame has a column for each, empty where a run lacks it.
REPORT_TAGS: tuple[str, ...] = (*JOB_TAGS, JOB_HASH, FAILURE_REASON, GIT_COMMIT, VERSION, RECIPE_PRESET, PARENT)

#: Param prefixes: a method's hyper-parameters and the training recipe's fields.
HP_PREFIX = "hp."
RECIPE_PREFIX = "recipe."
#: Param: ``job:<hash>`` of the teacher job or ``sha256:<hex>`` of the teacher file.
TEACHER_REF = "teacher_ref"
#: Params: the trained model's starting weights (``random``, or ``sha256:<hex>`` of a file, absent for the task's
#: default) and that file's name.
STUDENT_INIT = "student_init"
STUDENT_INIT_FILE = "student_init_file"
#: Tag: how many data-parallel workers the job trained with (not part of its identity; a resume may change it).
WORKERS = "workers"

#: Artifact of a grid run: the JSON list of its job hashes (so ``report --grid`` finds jobs an earlier run of the
#: same grid finished).
GRID_JOBS_ARTIFACT = "grid_jobs.json"
#: Artifact of a grid run: the resolved configuration, as ``diffbench run --config`` reads it back.
GRID_CONFIG_ARTIFACT = "config.yaml"
#: Files of a job folder logged as artifacts of its run when it finishes.
JOB_ARTIFACTS: tuple[str, ...] = ("config.json", "student.pt", "train.log")
#: The artifact path of a job's logged MLflow model.
MODEL_ARTIFACT = "student"

#: Tag of a tune run: 12 hex digits over its searches, budget, search and scheduler (a re-run of it resumes).
TUNE_KEY = "diffbench.tune_key"
#: Params of a tune run: what every search was given.
TUNE_PARAMS: tuple[str, ...] = ("budget", "search", "scheduler", "holdout", "trial_recipe", "seeds")
#: Tag prefix of a tune run: ``diffbench.won.<search slug>`` = the winning values, their score and trial.
WON_PREFIX = "diffbench.won."
#: Tag of a tune run: the run id of its final grid.
FINAL_GRID = "diffbench.final_grid"
#: Tags of a trial run: its search (``dkd resnet20→resnet8``), Tune trial id, index in its search (0, 1, ...) and
#: why it ended (``completed``, ``stopped early by asha after epoch 1``, ``failed: ...``, ``stopped: time budget``).
SEARCH = "diffbench.search"
TRIAL_ID = "diffbench.trial_id"
TRIAL_INDEX = "diffbench.trial_index"
STOP_REASON = "diffbench.stop_reason"
#: Param of a trial run: its sampled values as JSON (``{"hp.beta": 6.1}``), typed.
TRIAL_VALUES = "trial.values"
#: Trial metrics: per epoch the hold-out's metrics (``holdout/top1``) and the search's objective; at the end the best.
HOLDOUT_PREFIX = "holdout/"
SCORE = "score"
BEST_SCORE = "best_score"
#: Tags of a final-grid job run a search chose: the tune run's id, and one line saying how it was tuned (budget,
#: search, hold-out, winning values), which the report's provenance prints. Reports keep these runs apart
#: (method ``dkd (tuned)``), never averaged with untuned runs.
TUNED = "diffbench.tuned"
TUNING = "diffbench.tuning"
#: The suffix of a tuned run's method label in reports.
TUNED_LABEL = " (tuned)"

#: Per-epoch metric prefixes and the other per-epoch keys.
EPOCH_PREFIXES: tuple[str, ...] = ("train/", "val/")
EPOCH_KEYS: frozenset[str] = frozenset({"lr", "epoch_time_s"})


def job_filter() -> str:
    """The MLflow search filter of job runs."""
    return f"tags.`{KIND}` = '{KIND_JOB}'"


def grid_filter() -> str:
    """The MLflow search filter of grid runs."""
    return f"tags.`{KIND}` = '{KIND_GRID}'"


def tune_filter() -> str:
    """The MLflow search filter of tune runs."""
    return f"tags.`{KIND}` = '{KIND_TUNE}'"


def trial_filter(tune_run: str | None = None) -> str:
    """The MLflow search filter of trial runs (of one tune run)."""
    out = f"tags.`{KIND}` = '{KIND_TRIAL}'"
    return out + (f" AND tags.`{PARENT}` = '{tune_run}'" if tune_run else "")


def setting(role: str, method: str, teacher: str | None, student: str, dataset: str) -> str:
    """A job's :data:`SETTING` tag: ``kd resnet20→resnet8 · colorshapes``, ``teacher resnet20 · colorshapes``."""
    if role == "teacher":
        return f"teacher {student} · {dataset}"
    pair = f"{teacher}→{student}" if teacher else student
    return f"{method} {pair} · {dataset}"

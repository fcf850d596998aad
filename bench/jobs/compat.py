"""Every rule that keeps results of older diffbench versions valid, in one place (torch-free).

Users have finished runs: an upgrade must neither retrain them (their job hashes stay), nor misread them (a
report fills in what an older run did not record), nor refuse their configuration files without saying what
replaced an old key. Each rule below names what it keeps working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Method hyper-parameters added after jobs were run, per method, with the value that reproduces the behaviour from
#: before they existed. At that value they stay out of the job hash (and a report treats an older run's missing
#: ``hp.<name>`` as that value), so jobs finished before the parameter existed are still found, not retrained.
#: Per method: ``kd_weight`` is new (and neutral at 0) for FitNet only; KD and DiffKD had theirs from the start.
NEUTRAL_HPARAMS: dict[str, dict[str, Any]] = {
    "fitnet": {"feat_norm": "none", "adapter": "conv_bn_relu", "taps": None, "kd_weight": 0.0, "kd_temperature": 1.0},
    "diffkd": {"feat_norm": "none", "taps": None},
}

#: Recipe fields a report states, with the value assumed for a run that predates the field (``None``: none
#: assumed). Precision was always fp32 before it became a recipe field.
RECIPE_FIELD_DEFAULTS: dict[str, str | None] = {"epochs": None, "batch_size": None, "lr": None, "precision": "fp32"}

#: ``experiment.yaml`` keys of earlier versions and what took their place (named in the refusal of an old key).
RENAMED_CONFIG_KEYS: dict[str, str] = {
    "sets": "set",
    "teacher_checkpoints": "teacher_checkpoint",
    "teacher_recipe": "set: {teacher: {...}}",
}


#: Job fields added after jobs were run, with the value every older job had; at that value they stay out of the
#: hash. ``student_init``: older jobs started from the task's default (random weights).
NEUTRAL_JOB_FIELDS: dict[str, Any] = {"student_init": None}


#: Recipe fields added after jobs were run, with the value every older recipe had (out of the hash at that value):
#: iteration-based schedules (``max_iters``, ``iter_milestones``) came with the papers' detectron2/CIRKD recipes.
NEUTRAL_RECIPE_FIELDS: dict[str, Any] = {"max_iters": None, "iter_milestones": []}


def identity_fields(job: dict[str, Any]) -> dict[str, Any]:
    """A job's fields without those at their neutral value (:data:`NEUTRAL_JOB_FIELDS`,
    :data:`NEUTRAL_RECIPE_FIELDS` inside the recipe)."""
    out = {k: v for k, v in job.items() if k not in NEUTRAL_JOB_FIELDS or v != NEUTRAL_JOB_FIELDS[k]}
    if isinstance(out.get("recipe"), dict):
        out["recipe"] = {k: v for k, v in out["recipe"].items()
                         if k not in NEUTRAL_RECIPE_FIELDS or v != NEUTRAL_RECIPE_FIELDS[k]}  # fmt: skip
    return out


def identity_hparams(method: str, hparams: dict[str, Any]) -> dict[str, Any]:
    """The hyper-parameters that enter a job's hash: :data:`NEUTRAL_HPARAMS` at their neutral value are left out."""
    neutral = NEUTRAL_HPARAMS.get(method, {})
    return {k: v for k, v in hparams.items() if k not in neutral or v != neutral[k]}


def planned_teacher_path(teacher_ref: str) -> Path | None:
    """The teacher file of a job planned before teacher files were identified by content (``file:<path>``)."""
    kind, _, ref = teacher_ref.partition(":")
    return Path(ref) if kind == "file" else None


def needs_device_resolution(recipe: dict[str, Any]) -> bool:
    """Whether a job's recipe was written before recipes were resolved for a device at planning time (its speed
    settings still say ``auto``); the training loop resolves it for the device it runs on."""
    return recipe.get("precision") == "auto"

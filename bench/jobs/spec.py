"""Jobs: frozen, hashable records of one training run.

A job's hash is its identity. Checkpoints, result files and MLflow runs are keyed by it, so running
the same grid again (or resuming a crashed one) finds what is finished and continues what is not,
never training anything twice.

A teacher job is an ordinary job too: ``role="teacher"``, method ``vanilla``, the teacher
architecture as its model. A student job that needs it refers to it by hash (``teacher_ref =
"job:<hash>"``) rather than by a path, so the student's identity does not depend on where the
output folder lives.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.jobs.compat import identity_fields, identity_hparams, planned_teacher_path
from bench.jobs.files import STUDENT, job_dir
from methods.catalog import VANILLA
from methods.errors import UserError
from tasks.recipe import Recipe
from tasks.spec import task_spec

#: Recipe fields that do not change a job's result, so are not part of its identity.
_NOT_IDENTITY = {"num_workers", "eval_batch_size"}
#: Job fields that say *where* things are, not what they are: identity uses ``data_id`` / ``teacher_ref`` /
#: ``student_init``.
_LOCATIONS = {"data_dir", "teacher_path", "student_init_path"}
#: ``JobSpec.student_init`` values besides ``sha256:<hex>`` of a weights file: ``random`` says so explicitly.
RANDOM_INIT = "random"



@dataclass(frozen=True)
class JobSpec:
    """One training run, fully resolved: everything that changes its result is in here.

    Attributes:
        task / dataset: what to train on.
        data_dir: where the data set is (absolute, ``None`` for embedded data). Not part of the identity:
            moving the files or mounting them elsewhere on another node keeps every job's hash.
        data_id: what the data is — the data set's content fingerprint (``Task.data_fingerprint``).
        student: the architecture being trained (for a teacher job, the teacher architecture).
        teacher: the teacher architecture (``None`` for vanilla and teacher jobs).
        teacher_ref: ``"job:<hash>"`` of the teacher job, or ``"sha256:<hex>"`` of a given checkpoint file.
        teacher_path: where that file is (not part of the identity).
        method: ``vanilla`` or a registered method name.
        hparams: the method's resolved hyper-parameters, sorted ``(name, value)`` pairs.
        recipe: the training recipe as a plain dict (JSON-able).
        seed: the random seed.
        role: ``"student"`` or ``"teacher"``.
        student_init: how the trained model starts: ``None`` (the task's default for the data set, random weights
            everywhere the task allows it), ``"random"`` (asked for explicitly) or ``"sha256:<hex>"`` of a weights
            file (``--student-checkpoint``). Out of the hash at ``None``, so jobs planned before it existed keep
            their identity.
        student_init_path: where that file is (not part of the identity).
    """

    task: str
    dataset: str
    student: str
    method: str = VANILLA
    teacher: str | None = None
    teacher_ref: str | None = None
    hparams: tuple[tuple[str, Any], ...] = ()
    recipe: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    seed: int = 0
    data_dir: str | None = None
    role: str = "student"
    data_id: str | None = None
    teacher_path: str | None = None
    student_init: str | None = None
    student_init_path: str | None = None

    # -- identity ----------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hparams"] = dict(self.hparams)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        d = dict(d)
        d["hparams"] = tuple(sorted(dict(d.get("hparams") or {}).items()))
        return cls(**d)

    @property
    def job_hash(self) -> str:
        """12 hex digits of SHA-1 over the canonical JSON of every field that can change the result.

        ``recipe.num_workers`` and ``recipe.eval_batch_size`` are left out: they change speed, not the
        numbers, so resuming a grid with another worker count must find its finished jobs; so are
        :data:`~bench.jobs.compat.NEUTRAL_HPARAMS` at their neutral value. So are the
        locations ``data_dir``, ``teacher_path`` and ``student_init_path``: the data and weights are identified by
        content. Fields added after jobs were run are left out at their neutral value
        (:data:`~bench.jobs.compat.NEUTRAL_JOB_FIELDS`).
        """
        d = identity_fields(self.to_dict())
        for key in _LOCATIONS:
            d.pop(key, None)
        d["recipe"] = {k: v for k, v in d["recipe"].items() if k not in _NOT_IDENTITY}
        d["hparams"] = identity_hparams(self.method, d["hparams"])
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """A short human name: ``kd resnet32x4→resnet8x4 s0``."""
        if self.role == "teacher":
            return f"teacher {self.student}"
        pair = f"{self.teacher}→{self.student}" if self.teacher else self.student
        return f"{self.method} {pair} s{self.seed}"

    @property
    def init_kind(self) -> str:
        """``pretrained`` (from a weights file) or ``random``: what a published number's setting is matched on."""
        return "pretrained" if self.student_init not in (None, RANDOM_INIT) else "random"

    def recipe_obj(self) -> Recipe:
        d = dict(self.recipe)
        d["milestones"] = tuple(d.get("milestones", ()))
        return Recipe(**d)

    def teacher_checkpoint(self, output: Path) -> Path | None:
        """Where this job's teacher weights are, given the grid's output folder."""
        if self.teacher_ref is None:
            return None
        if self.teacher_path is not None:
            return Path(self.teacher_path)
        planned = planned_teacher_path(self.teacher_ref)
        if planned is not None:
            return planned
        ref = self.teacher_ref.partition(":")[2]
        return job_dir(output, ref) / STUDENT


_FILE_IDS: dict[tuple[str, int, int], str] = {}


def file_identity(path: str | Path) -> tuple[str, str]:
    """``("sha256:<hex>", absolute path)`` of a weights file: the job is tied to the weights, not the path.

    Hashed once per file version per process (keyed by size and modification time).
    """
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        raise UserError(f"checkpoint {str(p)!r} does not exist")
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _FILE_IDS:
        digest = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _FILE_IDS[key] = f"sha256:{digest.hexdigest()}"
    return _FILE_IDS[key], str(p)


def resolve_job(
    *,
    task: str,
    dataset: str | None,
    student: str,
    method: str = VANILLA,
    teacher: str | None = None,
    teacher_ref: str | None = None,
    seed: int = 0,
    data_dir: str | Path | None = None,
    preset: str | None = None,
    recipe_overrides: dict[str, Any] | None = None,
    hparam_overrides: dict[str, Any] | None = None,
    role: str = "student",
    device: str = "cpu",
    scale_lr: str | None = None,
    teacher_path: str | None = None,
    student_init: str | None = None,
    student_init_path: str | None = None,
) -> JobSpec:
    """Resolve defaults (dataset, recipe, method hyper-parameters) into a frozen :class:`JobSpec`.

    Validates every name: task, dataset, architectures, method and hyper-parameter names, so a bad
    grid fails before anything trains. ``device`` (``cpu`` or ``cuda``) decides the recipe's ``auto``
    speed settings (see :meth:`tasks.recipe.Recipe.resolved`), which are part of the job's identity.
    ``scale_lr="linear"`` scales the preset's learning rate by ``batch / preset batch`` (Goyal et al.'s rule)
    when the batch is overridden; by default the lr is the recipe's, whatever the batch or worker count.
    ``student_init`` (``None``, ``"random"`` or ``"sha256:<hex>"`` of ``student_init_path``): the trained model's
    starting weights, checked against what the task's model setup needs (:meth:`tasks.spec.TaskSpec.check_init`).
    """
    from methods.catalog import check_hparams, default_hparams

    t = task_spec(task)
    dataset = dataset or t.default_dataset
    t.check_names(dataset, student, teacher)
    hparams: dict[str, Any] = {}
    if method != VANILLA:
        if teacher is None:
            raise UserError(f"method {method!r} needs a teacher (give a teacher:student pair)")
        t.check_arch_pair(teacher, student)
        check_hparams(method, hparam_overrides or {})
        # Fully resolved (constructor defaults included): logged as MLflow params and part of the identity.
        defaults = default_hparams(method)
        hparams = {**defaults, **t.method_defaults(method, dataset, teacher, student), **(hparam_overrides or {})}
        # 4 and 4.0 are one setting: follow the default's type so the job hash does not split them.
        hparams = {
            k: float(v) if isinstance(defaults.get(k), float) and type(v) is int else v for k, v in hparams.items()
        }
        check_hparams(method, hparams)
    else:
        teacher, teacher_ref, teacher_path = None, None, None
        if hparam_overrides:
            raise UserError(f"vanilla runs take no method hyper-parameters (got {', '.join(hparam_overrides)})")
    base = t.teacher_recipe(dataset, student, preset) if role == "teacher" else t.recipe(dataset, student, preset)
    recipe = base.updated(**(recipe_overrides or {}))
    if scale_lr not in (None, "none", "linear"):
        raise UserError(f"--scale-lr {scale_lr!r}: expected linear or none")
    if scale_lr == "linear" and recipe.batch_size != base.batch_size:
        recipe = recipe.updated(lr=recipe.lr * recipe.batch_size / base.batch_size)
    if recipe.data_pipeline == "device" and dataset not in t.resident_datasets:
        raise UserError(
            f"--data-pipeline device: {dataset!r} is read from files; only in-memory data sets can live on the "
            f"device ({', '.join(t.resident_datasets) or 'none for this task'})"
        )
    init = None if student_init is None else "random" if student_init == RANDOM_INIT else "file"
    t.check_init(dataset, student, init)
    recipe = recipe.resolved(device.split(":")[0], dataset in t.resident_datasets)
    if recipe.sync_bn is None:
        recipe = recipe.updated(sync_bn=t.sync_bn_default)
    return JobSpec(
        task=task,
        dataset=dataset,
        student=student,
        method=method,
        teacher=teacher,
        teacher_ref=teacher_ref,
        hparams=tuple(sorted(hparams.items())),
        recipe=recipe.to_dict(),
        seed=seed,
        data_dir=str(Path(data_dir).expanduser().resolve()) if data_dir else None,
        role=role,
        data_id=t.data_fingerprint(dataset, Path(data_dir).expanduser() if data_dir else None, recipe),
        teacher_path=teacher_path,
        student_init=student_init,
        student_init_path=student_init_path if student_init not in (None, RANDOM_INIT) else None,
    )

"""What a task declares, free of torch: its names, data sets, recipes, pairs, method defaults and taps; the registry.

A task is two classes. Its :class:`TaskSpec` (``tasks/<task>/spec.py``) is everything known from names alone:
the data sets and metrics, the recipe presets, the default teacher/student pairs, each method's defaults, the
architectures and their tap specs (computed from tables, never by a forward pass), and what identifies a data
set. Its :class:`~tasks.base.Task` (``tasks/<task>/task.py``) subclasses the spec and adds what needs torch:
building models and data, the paired forward and the evaluation.

The split exists for speed: planning a grid, hashing its jobs, ``diffbench --help``, ``list``, ``report`` and
every usage error (a misspelt architecture, data set, preset or pair) need only the spec, and importing torch
costs seconds. :func:`task_spec` hands out the registered specs; :func:`get_task` imports a task's
implementation (its spec's :attr:`TaskSpec.implementation`) on first use and keeps one instance.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from methods.errors import UserError, unknown
from methods.taps import TapSpec
from tasks.recipe import Recipe

if TYPE_CHECKING:  # pragma: no cover - the implementation side imports torch
    from tasks.base import Task


#: Decimals a report prints for a metric its task does not say otherwise of (percentages: ``72.47``).
DEFAULT_DECIMALS = 2


def unknown_for_task(what: str, name: object, task: str, valid: list[str] | tuple[str, ...]) -> UserError:
    """``unknown dataset 'x' for task 'y'; did you mean 'z'? valid: ...``: :func:`~methods.errors.unknown` with
    the task named right after the name, the wording these errors have always had."""
    head = f"unknown {what} {name!r}"
    return UserError(f"{head} for task {task!r}{str(unknown(what, name, valid))[len(head) :]}")


class TaskSpec(ABC):
    """One vision task as far as it is known without torch. Subclasses register an instance with
    :func:`register_spec`; the task's torch implementation subclasses them (``class ClassificationTask(
    ClassificationSpec, Task)``).

    Class attributes:
        name: CLI name (``classification``).
        implementation: ``"module:Class"`` of the :class:`~tasks.base.Task` that implements this spec, imported
            by :func:`get_task` on first use.
        datasets: dataset names this task loads (``cifar100``, ``imagenet``, ``digits``, ...).
        default_dataset: the embedded default that runs offline.
        metrics: metric names the task's ``evaluate`` may return (a report can rank on any of them);
            ``primary_metric`` is the leaderboard's by default.
        lower_is_better: the metrics of ``metrics`` for which lower is better (a loss); the others are higher-is-better.
        metric_decimals: decimals a report prints for a metric; any other gets :data:`DEFAULT_DECIMALS`.
    """

    name: ClassVar[str]
    implementation: ClassVar[str]
    datasets: ClassVar[tuple[str, ...]]
    default_dataset: ClassVar[str]
    primary_metric: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    lower_is_better: ClassVar[tuple[str, ...]] = ()
    metric_decimals: ClassVar[dict[str, int]] = {}
    #: recipe preset names :meth:`recipe` accepts (``diffbench list presets``).
    presets: ClassVar[tuple[str, ...]] = ()
    #: where each recipe preset's values come from: ``repository@commit: path`` of the configuration it mirrors, or
    #: what it is when no paper ran it (``diffbench list presets --json`` shows it; tests state the values).
    preset_sources: ClassVar[dict[str, str]] = {}
    #: the data sets each recipe preset is meant for (empty: every data set :meth:`recipe` accepts it for).
    preset_datasets: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: data sets held in memory that can live on the training device (``Recipe.data_pipeline="device"``).
    resident_datasets: ClassVar[tuple[str, ...]] = ()
    #: whether evaluation may run under the training autocast (detection keeps fp32: box decoding in bf16
    #: moves boxes by pixels at COCO sizes).
    eval_autocast: ClassVar[bool] = True
    #: whether training batches have one fixed shape (then ``cudnn.benchmark`` picks kernels once).
    fixed_input_size: ClassVar[bool] = True
    #: whether some student parameters get no gradient in a step (DDP must then look for them, at a cost).
    ddp_find_unused: ClassVar[bool] = False
    #: whether data-parallel training converts BatchNorm to SyncBatchNorm by default (recipe ``sync_bn``).
    sync_bn_default: ClassVar[bool] = False

    def check_metric(self, metric: str) -> None:
        """``UserError`` naming the valid metrics (and the likely one) for a metric this task does not report."""
        if metric not in self.metrics:
            raise unknown_for_task("metric", metric, self.name, self.metrics)

    def decimals(self, metric: str) -> int:
        """Decimals a report prints for ``metric`` (:attr:`metric_decimals`, else :data:`DEFAULT_DECIMALS`)."""
        return self.metric_decimals.get(metric, DEFAULT_DECIMALS)

    def check_names(self, dataset: str, *archs: str | None) -> None:
        """``UserError`` naming the valid choices (and the likely one) for an unknown dataset or architecture
        (``None`` is skipped)."""
        if dataset not in self.datasets:
            raise unknown_for_task("dataset", dataset, self.name, self.datasets)
        for arch in archs:
            if arch is not None and arch not in self.archs():
                raise unknown_for_task("architecture", arch, self.name, self.archs())

    # -- models ------------------------------------------------------------------------------
    @abstractmethod
    def archs(self) -> list[str]:
        """Architecture names the task's ``build_model`` accepts."""

    @abstractmethod
    def tap_specs(self, arch: str, num_classes: int, dataset: str) -> dict[str, TapSpec]:
        """Tap specs of ``arch``, computed without a forward pass."""

    def check_arch_pair(self, teacher: str, student: str) -> None:
        """Refuse, from the names alone, a pair that can never align (``UserError``); default: nothing.

        Called when a grid is expanded, so an impossible pair fails before anything trains; the task's
        ``check_pair`` then checks the built models.
        """
        return None

    def check_init(self, dataset: str, arch: str, init: str | None) -> None:
        """Refuse a starting point the model setup of ``arch`` on ``dataset`` cannot train from (``UserError``).

        ``init``: ``None`` (the task's default), ``"random"`` (asked for) or ``"file"`` (a weights file). Default:
        anything goes (models train from random weights with trainable normalisation). Tasks whose models are set up
        for pretrained weights on a data set (frozen BatchNorm, frozen stages) refuse ``None`` there, naming the
        choice the user has.
        """
        return None

    def init_note(self, dataset: str, arch: str, init: str | None) -> str | None:
        """A line for the job's log when the starting point changes how ``arch`` is built (e.g. a fine-tuning setup
        built for random weights instead), or ``None``; default: ``None`` (the model is the same either way)."""
        return None

    # -- recipes and method defaults ---------------------------------------------------------
    @abstractmethod
    def recipe(self, dataset: str, student: str, preset: str | None = None) -> Recipe:
        """The training recipe for ``dataset`` (and the student, for per-student lrs)."""

    def teacher_recipe(self, dataset: str, arch: str, preset: str | None = None) -> Recipe:
        """The recipe of a teacher job (a grid trains a teacher once and caches it): :meth:`recipe` unless a task
        trains its teachers longer, so that on a CPU preset the teacher is clearly ahead of its students."""
        return self.recipe(dataset, arch, preset)

    def default_pairs(self, dataset: str) -> list[tuple[str, str]]:
        """``(teacher, student)`` pairs a grid on ``dataset`` runs when the user names none."""
        return []

    def smallest_pair(self, dataset: str) -> tuple[str, str] | None:
        """The default pair with the fewest parameters (teacher and student together): the one pair a smoke grid
        runs. The first default pair unless a task says otherwise; ``None`` when there is no default pair."""
        pairs = self.default_pairs(dataset)
        return pairs[0] if pairs else None

    def method_defaults(self, method: str, dataset: str, teacher: str, student: str) -> dict[str, Any]:
        """Hyper-parameters a method gets on this task/dataset/pair unless the user overrides them."""
        return {}

    # -- data identity -----------------------------------------------------------------------
    def data_fingerprint(self, dataset: str, data_dir: Path | None, recipe: Recipe) -> str:
        """What the data is, for a job's identity: ``<dataset>:<digest>`` (never where it is).

        Embedded and generated data sets (``data_dir`` ``None``) are their name and generator version; a
        folder is fingerprinted by :func:`fingerprint_files` over the files the task reads (tasks narrow
        the set: the CIFAR-100 pickles, the ImageNet class folders...), so a copy of the same files in
        another folder, or on another node's mount point, gives the same jobs.
        """
        if data_dir is None:
            return f"{dataset}:embedded"
        root = Path(data_dir).expanduser()
        if not root.is_dir():
            raise UserError(f"{dataset}: data directory {root} does not exist or is not a folder")
        return f"{dataset}:{fingerprint_files(root)}"

    def default_num_classes(self, dataset: str) -> int:
        """Classes of ``dataset`` without loading it (for ``diffbench speed`` on synthetic data)."""
        raise UserError(f"task {self.name!r} does not know the class count of {dataset!r}; pass --num-classes")


# -- data identity -------------------------------------------------------------------------------
#: Files at most this large are hashed whole; larger ones by size and their first and last MiB.
_SMALL_FILE = 1 << 20
_FINGERPRINTS: dict[tuple[str, ...], str] = {}


def fingerprint_files(*roots: Path, max_listed: int = 5_000_000) -> str:
    """16 hex digits identifying the contents of ``roots`` (files or folders), cheaply, independent of location.

    Every file contributes its path *relative to its root* and its size; small files their whole bytes,
    large ones their first and last MiB (a pickle's header and tail, a COCO json's start and end). A folder
    of a million JPEGs costs a directory walk, not a read. Cached per process.
    """
    import hashlib

    # Cached per process on the roots and their own stat (a rewritten pickle is seen; a folder is walked once).
    key = tuple(f"{Path(r).resolve()}:{Path(r).stat().st_size}:{Path(r).stat().st_mtime_ns}" for r in roots)
    if key in _FINGERPRINTS:
        return _FINGERPRINTS[key]
    digest = hashlib.sha256()
    listed = 0
    for root in map(Path, roots):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            listed += 1
            if listed > max_listed:
                raise UserError(f"{root}: more than {max_listed} files; point --data-dir at the data set's own folder")
            size = f.stat().st_size
            rel = f.name if f == root else f.relative_to(root).as_posix()
            digest.update(f"{rel}\0{size}\0".encode())
            if len(files) <= 10_000:  # contents of the files of a small folder (pickles, json, lists)
                with f.open("rb") as fh:
                    if size <= _SMALL_FILE:
                        digest.update(fh.read())
                    else:
                        digest.update(fh.read(_SMALL_FILE))
                        fh.seek(size - _SMALL_FILE)
                        digest.update(fh.read(_SMALL_FILE))
    _FINGERPRINTS[key] = digest.hexdigest()[:16]
    return _FINGERPRINTS[key]


# -- the registry --------------------------------------------------------------------------------
_SPECS: dict[str, TaskSpec] = {}
_TASKS: dict[str, Task] = {}


def register_spec(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to the registry under ``spec.name`` (a name registered twice is a programming error)."""
    if spec.name in _SPECS:
        raise ValueError(f"task {spec.name!r} registered twice")
    _SPECS[spec.name] = spec
    return spec


def _registered() -> dict[str, TaskSpec]:
    """The registry, filled: importing the ``tasks`` package registers every built-in spec. Imported here, at
    first use, rather than at module level, because that package imports this module to register them."""
    import tasks  # noqa: F401  (registration side effects)

    return _SPECS


def task_spec(name: str) -> TaskSpec:
    """The registered spec ``name``; an unknown name is a :class:`UserError` with a "did you mean"."""
    specs = _registered()
    if name not in specs:
        raise unknown("task", name, sorted(specs))
    return specs[name]


def task_names() -> list[str]:
    """Registered task names, sorted."""
    return sorted(_registered())


def get_task(name: str) -> Task:
    """The torch implementation of task ``name``: its spec's :attr:`~TaskSpec.implementation`, imported and
    instantiated on first use, then kept (one instance per task, as every caller expects)."""
    spec = task_spec(name)
    task = _TASKS.get(spec.name)
    if task is None:
        module, _, attr = spec.implementation.partition(":")
        task = getattr(importlib.import_module(module), attr)()
        if not isinstance(task, type(spec)):
            raise TypeError(f"{spec.implementation} does not implement {type(spec).__name__}")
        _TASKS[spec.name] = task
    return task

"""The task contract: data, models, taps, the paired forward and evaluation of one vision task.

A task knows nothing of Ray or MLflow; the training loop in ``bench`` drives it. Each task is a
sub-package (``classification``, ``detection``, ``segmentation``) that registers one :class:`Task`.

The paired forward is the heart of it: the student and teacher see the *same* batch, the task
returns the student's task losses and both models' captured taps, already aligned (for a two-stage
detector the teacher's box head scores the student's sampled proposals; for segmentation the valid
pixels are flattened into logits rows). Methods then never need to know which task they serve.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from methods.base import TapSpec, UserError

#: ``Recipe.precision`` values: autocast dtypes (``fp16`` adds a gradient scaler).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: ``Recipe.compile`` values: ``off`` or a ``torch.compile`` mode.
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
PIPELINES = ("auto", "device", "pil")


@dataclass(frozen=True)
class Recipe:
    """A training recipe: optimiser, schedule and batch. Presets live with each task.

    ``schedule`` is ``"step"`` (``milestones`` in epochs, × ``gamma``), ``"poly"`` (power
    ``poly_power`` over all iterations) or ``"cosine"``. ``warmup_epochs`` ramps the lr linearly from
    ``warmup_factor × lr`` (may be fractional: detection warms up over a few hundred iterations).

    Speed fields change how a job computes, so they are part of its identity like the rest:
    ``precision`` (``fp32`` | ``bf16`` | ``fp16`` autocast; ``auto``: bf16 on CUDA, fp32 elsewhere),
    ``channels_last`` (``None``: on for CUDA), ``compile`` (``off`` or a ``torch.compile`` mode) and
    ``data_pipeline`` (``device``: in-memory data sets live on the training device and are augmented there
    in batches; ``pil``: a per-sample DataLoader; ``auto``: ``device`` where the data set supports it).
    :meth:`resolved` turns the ``auto`` values into what a device will run; jobs only hold resolved recipes.
    ``eval_batch_size`` (default: the training batch) and ``num_workers`` change speed only.
    """

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    #: weight decay on 1-D parameters (biases, normalisation weights) too; mdistiller: yes, DiffKD's ImageNet: no.
    weight_decay_1d: bool = True
    schedule: str = "step"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    poly_power: float = 0.9
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.001
    eval_every: int = 1
    num_workers: int = 2
    #: cap on training steps per epoch (smoke runs); part of a job's identity like every other field.
    max_steps: int | None = None
    precision: str = "auto"
    channels_last: bool | None = None
    compile: str = "off"
    data_pipeline: str = "auto"
    #: BatchNorm statistics over the global batch when a job runs on several workers (``None``: the task's
    #: default, on for segmentation as published); no effect on one worker.
    sync_bn: bool | None = None
    eval_batch_size: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse values no run can use, with one line naming the field (they would crash much later)."""
        ints = {"epochs": 1, "batch_size": 1, "eval_every": 1, "num_workers": 0}
        for name, low in ints.items():
            value = getattr(self, name)
            if isinstance(value, float) and value.is_integer():
                object.__setattr__(self, name, int(value))
            elif not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise UserError(f"recipe {name} must be an integer >= {low}, got {value!r}")
        if self.max_steps is not None and (not isinstance(self.max_steps, int) or self.max_steps < 1):
            raise UserError(f"recipe max_steps must be an integer >= 1, got {self.max_steps!r}")
        for name in ("lr", "momentum", "weight_decay", "gamma", "poly_power", "warmup_epochs", "warmup_factor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UserError(f"recipe {name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise UserError(f"recipe {name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))  # 1 and 1.0 are the same recipe (and job hash)
        if self.lr <= 0 or self.momentum < 0 or self.weight_decay < 0 or self.warmup_epochs < 0:
            raise UserError(
                f"recipe needs lr > 0 and momentum, weight_decay, warmup_epochs >= 0 (got lr={self.lr}, "
                f"momentum={self.momentum}, weight_decay={self.weight_decay}, "
                f"warmup_epochs={self.warmup_epochs})"
            )
        if self.schedule not in ("step", "poly", "cosine"):
            raise UserError(f"unknown lr schedule {self.schedule!r}; valid: step, poly, cosine")
        for name, valid in (("precision", PRECISIONS), ("compile", COMPILE_MODES), ("data_pipeline", PIPELINES)):
            if getattr(self, name) not in valid:
                raise UserError(f"recipe {name} {getattr(self, name)!r} is not valid; valid: {', '.join(valid)}")
        for name in ("channels_last", "sync_bn"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                raise UserError(f"recipe {name} must be true, false or null (auto), got {getattr(self, name)!r}")
        ebs = self.eval_batch_size
        if ebs is not None and (not isinstance(ebs, int) or isinstance(ebs, bool) or ebs < 1):
            raise UserError(f"recipe eval_batch_size must be an integer >= 1, got {self.eval_batch_size!r}")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        d["extra"] = dict(self.extra)
        return d

    def updated(self, **changes: Any) -> Recipe:
        """A copy with ``changes`` applied (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def resolved(self, device_type: str, resident: bool) -> Recipe:
        """The ``auto`` speed settings decided for a device (``cpu`` / ``cuda``) and data set.

        ``resident``: whether the data set can live on the device (in-memory sets). CPU keeps fp32 and
        contiguous tensors (what the official code ran, and the fastest there); CUDA gets bf16 autocast
        and channels_last. A job on a GPU without bf16 (before Ampere) should ask for ``fp16``.
        """
        cuda = device_type == "cuda"
        return replace(
            self,
            precision=("bf16" if cuda else "fp32") if self.precision == "auto" else self.precision,
            channels_last=cuda if self.channels_last is None else self.channels_last,
            data_pipeline=("device" if resident else "pil") if self.data_pipeline == "auto" else self.data_pipeline,
        )


@dataclass
class DataBundle:
    """What :meth:`Task.build_data` returns."""

    train: Dataset
    val: Dataset
    num_classes: int
    collate_fn: Callable | None = None
    #: free-form facts for logging: image size, class names, number of images.
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class PairedOutput:
    """What :meth:`Task.paired_forward` returns.

    Attributes:
        losses: the student's own task losses by name (``{"ce": ...}``, detector losses), unweighted.
        student_taps / teacher_taps: captured tensors by tap name (teacher's without grad).
        target: labels for the rows of the ``logits`` taps (``[N]``), or ``None``.
        batch_size: images in the batch, for throughput figures.
    """

    losses: dict[str, torch.Tensor]
    student_taps: dict[str, torch.Tensor]
    teacher_taps: dict[str, torch.Tensor]
    target: torch.Tensor | None
    batch_size: int


class TapRecorder:
    """Forward hooks that capture module outputs by tap name; nothing rewrites the model.

    Module paths are validated against ``named_modules()`` when the recorder is built, with an error
    that lists close valid paths. A module that returns a tuple has element ``0`` captured.
    """

    def __init__(self, model: nn.Module, taps: Mapping[str, str]) -> None:
        modules = dict(model.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        for name, path in taps.items():
            if path not in modules:
                import difflib

                close = difflib.get_close_matches(path, list(modules), n=5, cutoff=0.4)
                raise UserError(
                    f"tap {name!r}: module {path!r} not found in {type(model).__name__}; "
                    f"close valid paths: {', '.join(close) or '(none)'}"
                )
            self._handles.append(modules[path].register_forward_hook(self._hook(name)))

    def _hook(self, name: str) -> Callable:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self.outputs[name] = output[0] if isinstance(output, tuple | list) else output

        return hook

    def pop(self) -> dict[str, torch.Tensor]:
        """Return and clear what the last forward captured."""
        out, self.outputs = self.outputs, {}
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


class Task(ABC):
    """One vision task. Subclasses register an instance with :func:`register_task`.

    Class attributes:
        name: CLI name (``classification``).
        datasets: dataset names this task loads (``cifar100``, ``imagenet``, ``digits``, ...).
        default_dataset: the embedded default that runs offline.
        metrics: metric names :meth:`evaluate` returns; ``primary_metric`` is the leaderboard's.
    """

    name: ClassVar[str]
    datasets: ClassVar[tuple[str, ...]]
    default_dataset: ClassVar[str]
    primary_metric: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    #: recipe preset names :meth:`recipe` accepts (``diffbench list presets``).
    presets: ClassVar[tuple[str, ...]] = ()
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

    def check_names(self, dataset: str, *archs: str | None) -> None:
        """``UserError`` naming the valid choices for an unknown dataset or architecture (``None`` is skipped)."""
        if dataset not in self.datasets:
            raise UserError(f"unknown dataset {dataset!r} for task {self.name!r}; valid: {', '.join(self.datasets)}")
        for arch in archs:
            if arch is not None and arch not in self.archs():
                raise UserError(
                    f"unknown architecture {arch!r} for task {self.name!r}; valid: {', '.join(self.archs())}"
                )

    # -- models ------------------------------------------------------------------------------
    @abstractmethod
    def archs(self) -> list[str]:
        """Architecture names :meth:`build_model` accepts."""

    @abstractmethod
    def build_model(self, arch: str, num_classes: int, dataset: str) -> nn.Module:
        """A freshly initialised model (``UserError`` for an unknown arch, listing valid ones)."""

    @abstractmethod
    def tap_specs(self, arch: str, num_classes: int, dataset: str) -> dict[str, TapSpec]:
        """Tap specs of ``arch``, computed without a forward pass."""

    def load_weights(self, model: nn.Module, path: Path) -> None:
        """Load a checkpoint into ``model`` with ``strict=True``.

        Accepts a plain state dict, mdistiller's ``{"model": state_dict}``, torchvision's reference
        ``{"model": ...}`` and diffbench's own ``{"student": ...}``; a ``module.`` prefix (DataParallel)
        is stripped. Mismatched keys are a :class:`UserError` naming a few of them.
        """
        load_state_dict_file(model, path)

    def attach_taps(self, model: nn.Module, arch: str, num_classes: int, dataset: str) -> TapRecorder:
        """Hook the taps of ``arch`` onto ``model`` and keep the recorder as ``model.tap_recorder``.

        Taps whose spec has no ``module`` (logits taken from the output, detector box-head logits)
        are filled in by :meth:`paired_forward` itself. The training loop calls this once per model;
        ``paired_forward`` reads ``model.tap_recorder.pop()``.
        """
        specs = self.tap_specs(arch, num_classes, dataset)
        rec = TapRecorder(model, {n: s.module for n, s in specs.items() if s.module})
        model.tap_recorder = rec
        return rec

    def check_arch_pair(self, teacher: str, student: str) -> None:
        """Refuse, from the names alone, a pair that can never align (``UserError``); default: nothing.

        Called when a grid is expanded, so an impossible pair fails before anything trains;
        :meth:`check_pair` then checks the built models.
        """
        return None

    def check_pair(self, student: nn.Module, teacher: nn.Module) -> None:
        """Refuse a teacher/student pair whose taps cannot align (``UserError``); default: nothing.

        Detection uses it to check that both detectors share one input transform, so their FPN maps
        refer to the same pixels.
        """
        return None

    # -- data --------------------------------------------------------------------------------
    @abstractmethod
    def build_data(self, dataset: str, data_dir: Path | None, recipe: Recipe) -> DataBundle:
        """Train and validation sets; ``UserError`` for a missing or malformed folder."""

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

    def method_defaults(self, method: str, dataset: str, teacher: str, student: str) -> dict[str, Any]:
        """Hyper-parameters a method gets on this task/dataset/pair unless the user overrides them."""
        return {}

    # -- training and evaluation -------------------------------------------------------------
    @abstractmethod
    def paired_forward(
        self,
        student: nn.Module,
        teacher: nn.Module | None,
        batch: Any,
        device: torch.device,
    ) -> PairedOutput:
        """Run the student (train mode) and the teacher (eval, no grad) on the same batch."""

    @abstractmethod
    def evaluate(self, model: nn.Module, loader: Iterable, device: torch.device) -> dict[str, float]:
        """Metrics of ``model`` on ``loader``: at least every name in :attr:`metrics`."""

    def resident_loader(
        self, data: Dataset, batch_size: int, *, device: torch.device, train: bool,
        generator: torch.Generator | None, channels_last: bool = False, rank: int = 0, world_size: int = 1,
    ) -> Any:  # fmt: skip
        """Batches of an in-memory data set that lives on ``device`` (``Recipe.data_pipeline="device"``).

        Iterating gives ``(images, labels)`` already on the device, augmented there in batches (train) or
        only normalised (validation); ``batch_size`` is per rank, ``rank``/``world_size`` shard each epoch.
        Only tasks that list data sets in :attr:`resident_datasets` implement it.
        """
        raise UserError(f"task {self.name!r} has no device-resident data pipeline; use --data-pipeline pil")

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

    def synthetic_batch(
        self,
        batch_size: int,
        num_classes: int,
        device: torch.device,
        dataset: str | None = None,
        arch: str | None = None,
    ) -> Any:
        """A random batch shaped like ``dataset``'s (for ``arch``'s input size), for ``diffbench speed``."""
        raise UserError(f"task {self.name!r} has no synthetic batches")


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


# -- data-parallel evaluation --------------------------------------------------------------------
def world_size() -> int:
    """Ranks of the current ``torch.distributed`` group (1 when there is none)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over every rank (in place; unchanged without a process group).

    A task's :meth:`Task.evaluate` sums its counts with it, so a data-parallel evaluation over disjoint
    shards gives exactly the single-process numbers (top-1 hits, confusion matrices).
    """
    if world_size() > 1:
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def gather_lists(items: list[Any]) -> list[Any]:
    """Every rank's ``items`` concatenated in rank order (unchanged without a process group): detections
    are gathered like this before COCOeval, which needs all of them at once."""
    if world_size() == 1:
        return items
    import torch.distributed as dist

    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


_TASKS: dict[str, Task] = {}


def register_task(task: Task) -> Task:
    if task.name in _TASKS:
        raise ValueError(f"task {task.name!r} registered twice")
    _TASKS[task.name] = task
    return task


def get_task(name: str) -> Task:
    """The registered task ``name`` (importing ``tasks`` registers all of them)."""
    import tasks  # noqa: F401  (registration side effects)

    try:
        return _TASKS[name]
    except KeyError:
        raise UserError(f"unknown task {name!r}; valid: {', '.join(sorted(_TASKS))}") from None


def task_names() -> list[str]:
    import tasks  # noqa: F401

    return sorted(_TASKS)


def load_state_dict_file(model: nn.Module, path: Path | str) -> None:
    """Load ``path`` into ``model`` strictly; see :meth:`Task.load_weights` for accepted layouts."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(f"checkpoint {str(path)!r} cannot be read: {err}") from None
    state = extract_state_dict(obj)
    if state is None:
        keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise UserError(f"checkpoint {str(path)!r} holds no state dict (keys: {keys})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    why = key_mismatch(model.state_dict(), state)
    if why:
        raise UserError(f"checkpoint {str(path)!r} does not fit {type(model).__name__}: {why}")
    model.load_state_dict(state, strict=True)


def key_mismatch(own: Mapping[str, Any], state: Mapping[str, Any], tolerated: Any = None) -> str | None:
    """How ``state`` fails to fit a model whose state dict is ``own`` (missing, unexpected and wrong-shape keys,
    three examples each), or ``None`` when it fits. ``tolerated(key)``: unexpected keys to ignore."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(k for k in set(state) - set(own) if not (tolerated and tolerated(k)))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        k = wrong[0]
        parts.append(f"shape mismatch {len(wrong)} (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
    return "; ".join(parts) or None


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    """Find the state dict inside a checkpoint object (plain, mdistiller, torchvision, diffbench)."""
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if not isinstance(obj, dict):
        return None
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    for key in ("student", "model", "state_dict", "net"):
        if key in obj:
            return extract_state_dict(obj[key])
    return None

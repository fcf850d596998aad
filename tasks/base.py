"""The task contract, torch side: models, data, taps, the paired forward and evaluation of one vision task.

A task knows nothing of Ray or MLflow; the training loop in ``bench`` drives it. Each task is a
sub-package (``classification``, ``detection``, ``segmentation``) with two classes: a torch-free
:class:`~tasks.spec.TaskSpec` (names, recipes, pairs, method defaults, tap specs) that is registered, and
the :class:`Task` here that subclasses it with everything that needs torch, imported by :func:`get_task`
on first use.

The paired forward is the heart of it: the student and teacher see the *same* batch, the task
returns the student's task losses and both models' captured taps, already aligned (for a two-stage
detector the teacher's box head scores the student's sampled proposals; for segmentation the valid
pixels are flattened into logits rows). Methods then never need to know which task they serve.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from methods.errors import UserError
from tasks.recipe import COMPILE_MODES, PIPELINES, PRECISIONS, Recipe, holdout_of
from tasks.spec import TaskSpec, fingerprint_files, get_task, task_names, task_spec

#: Names kept importable from here: the torch-free ones live in :mod:`tasks.recipe` and :mod:`tasks.spec`.
__all__ = [
    "COMPILE_MODES",
    "PIPELINES",
    "PRECISIONS",
    "DataBundle",
    "PairedOutput",
    "Recipe",
    "SplitPart",
    "TapRecorder",
    "Task",
    "TaskSpec",
    "all_reduce_sum",
    "extract_state_dict",
    "fingerprint_files",
    "frozen_bn_counters",
    "gather_lists",
    "get_task",
    "holdout_indices",
    "key_mismatch",
    "load_state_dict_file",
    "read_state_dict_file",
    "task_names",
    "task_spec",
    "world_size",
]


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


class Task(TaskSpec, ABC):
    """One vision task: its :class:`~tasks.spec.TaskSpec` (names, recipes, pairs, defaults, tap specs, class
    attributes) plus what needs torch. A task sub-package defines ``class XTask(XSpec, Task)``; the spec's
    ``implementation`` names it, and :func:`get_task` builds the one instance.
    """

    # -- models ------------------------------------------------------------------------------
    @abstractmethod
    def build_model(self, arch: str, num_classes: int, dataset: str, init: str | None = None) -> nn.Module:
        """A freshly initialised model (``UserError`` for an unknown arch, listing valid ones).

        ``init`` says how a model that will be trained starts (see :meth:`TaskSpec.check_init`): ``None`` (the
        task's default), ``"random"`` (asked for: no frozen normalisation or stages) or ``"file"`` (weights are
        loaded next by :meth:`load_init`). Teachers are built with ``None`` and loaded by :meth:`load_weights`.
        """

    def load_init(self, model: nn.Module, arch: str, path: Path) -> str:
        """Load a model's starting weights (``--student-checkpoint``) strictly; return what was loaded, for the log.

        Default: the whole model, as :meth:`load_weights` reads it. Tasks whose published settings start from an
        ImageNet-pretrained *backbone* also accept backbone files in the layouts people have (torchvision,
        detectron2, the papers' releases): every backbone key must be there, and nothing but a classifier may be
        left over; a :class:`UserError` names missing and unexpected keys otherwise.
        """
        self.load_weights(model, path)
        return "the whole model"

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

    def build_split(self, dataset: str, data_dir: Path | None, recipe: Recipe) -> DataBundle:
        """What a job trains and evaluates on: :meth:`build_data`, with the recipe's hold-out carved out of it.

        A tuning trial's recipe names a hold-out (``extra.holdout``, :func:`tasks.recipe.holdout_of`): that part of
        the *training* split is kept out of training and becomes the split the job evaluates on, so a search never
        sees the validation split that reports score. Ordinary jobs get :meth:`build_data` unchanged.
        """
        bundle = self.build_data(dataset, data_dir, recipe)
        holdout = holdout_of(recipe.extra)
        return bundle if holdout is None else self.carve_holdout(bundle, *holdout)

    def carve_holdout(self, bundle: DataBundle, fraction: float, seed: int) -> DataBundle:
        """``bundle`` with ``fraction`` of its training images held out (seeded) as the split evaluated on.

        Class-balanced where the task gives labels (:meth:`split_labels`), by image otherwise; the held-out
        images are read as the validation split reads its own (:meth:`eval_view`: no augmentation).
        """
        labels = self.split_labels(bundle.train)
        kept, held = holdout_indices(len(bundle.train), fraction, seed, labels)
        if len(kept) == 0 or len(held) == 0:
            raise UserError(f"a hold-out of {fraction:g} leaves no image on one side of {len(bundle.train)} "
                            "training images; change the fraction")  # fmt: skip
        info = {**bundle.info, "holdout": {"fraction": fraction, "seed": seed, "train": len(kept),
                                           "held_out": len(held), "class_balanced": labels is not None}}  # fmt: skip
        return DataBundle(SplitPart(bundle.train, kept), SplitPart(self.eval_view(bundle.train, bundle.val), held),
                          bundle.num_classes, bundle.collate_fn, info)  # fmt: skip

    def split_labels(self, train: Dataset) -> Sequence[int] | None:
        """One class label per training image, for a class-balanced hold-out; ``None``: split by image."""
        return None

    def eval_view(self, train: Dataset, val: Dataset) -> Dataset:
        """The training images read the way ``val`` reads its own (no augmentation); default: ``train`` itself."""
        return train

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


# -- hold-out splits -------------------------------------------------------------------------------
def holdout_indices(
    n: int, fraction: float, seed: int, labels: Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held)``: sorted positions of ``n`` images, ``fraction`` of them held out, drawn from ``seed``.

    With ``labels``, each class gives ``round(fraction x its size)`` images (at least one, never all of them),
    so the held-out part has the training split's class balance; without, ``round(fraction x n)`` images.
    The draw depends only on ``(n, fraction, seed, labels)``: every trial of a search holds out the same images.
    """
    rng = np.random.default_rng([int(seed), 0x686F6C64])  # "hold": a stream of its own
    if labels is None:
        k = min(n - 1, max(1, round(n * fraction))) if n > 1 else 0
        held = rng.permutation(n)[:k]
    else:
        y = np.asarray(labels)
        if len(y) != n:
            raise ValueError(f"{len(y)} labels for {n} images")
        parts = []
        for c in np.unique(y):
            idx = np.flatnonzero(y == c)
            k = min(len(idx) - 1, max(1, round(len(idx) * fraction)))
            parts.append(idx[rng.permutation(len(idx))[:k]])
        held = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return np.flatnonzero(~mask), np.flatnonzero(mask)


class SplitPart(Subset):
    """Part of a data set (a hold-out and what is left of the training split), keeping what tasks read from it.

    The attributes a task's loaders and evaluation read from a whole split (class names, a detection set's COCO
    index and label map, a segmentation set's evaluation mode) are the parent's; per-image ones are indexed;
    the device-resident protocol (:mod:`tasks.classification.resident`) serves the part's images only.
    """

    #: Attributes shared with the parent split.
    SHARED = ("classes", "class_names", "num_classes", "transform", "resident_transform", "eval_cfg", "coco",
              "cat_ids", "cat_to_label", "label_to_cat", "image_root", "train", "crop")  # fmt: skip

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        super().__init__(dataset, [int(i) for i in indices])

    def __getattr__(self, name: str) -> Any:
        if name in SplitPart.SHARED and "dataset" in self.__dict__:
            return getattr(self.dataset, name)
        raise AttributeError(name)

    @property
    def targets(self) -> list[int]:
        return [int(self.dataset.targets[i]) for i in self.indices]

    def resident_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.dataset.resident_data()
        idx = torch.as_tensor(self.indices, dtype=torch.long)
        return images[idx], labels[idx]


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


def read_state_dict_file(path: Path | str) -> dict[str, torch.Tensor]:
    """The state dict inside the checkpoint file ``path`` (layouts of :func:`extract_state_dict`), ``module.``
    prefixes stripped; a :class:`UserError` when the file is missing, unreadable or holds none."""
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
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_state_dict_file(model: nn.Module, path: Path | str) -> None:
    """Load ``path`` into ``model`` strictly; see :meth:`Task.load_weights` for accepted layouts."""
    state = read_state_dict_file(path)
    why = key_mismatch(model.state_dict(), state)
    if why:
        raise UserError(f"checkpoint {str(path)!r} does not fit {type(model).__name__}: {why}")
    model.load_state_dict(state, strict=True)


def frozen_bn_counters(model: nn.Module) -> set[str]:
    """``<module>.num_batches_tracked`` of every frozen BatchNorm of ``model`` (torchvision's and detectron2's
    ``FrozenBatchNorm2d``, which have no such buffer).

    A checkpoint of the same network trained with plain BatchNorm has these keys and nothing else extra: loading it
    into the frozen layers is exact (a BatchNorm in eval mode computes what the frozen one does with the same four
    tensors), and torchvision's ``FrozenBatchNorm2d._load_from_state_dict`` drops the counter itself.
    """
    return {f"{name}.num_batches_tracked" if name else "num_batches_tracked"
            for name, module in model.named_modules() if type(module).__name__ == "FrozenBatchNorm2d"}  # fmt: skip


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

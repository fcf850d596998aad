"""Image classification with torch: models from the zoo, the data sets, the paired forward and top-1/top-5.

What the task declares (data sets, recipes, pairs, method defaults, tap specs) is in :mod:`.spec`, free of torch;
this module adds what builds or runs models.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from methods.errors import UserError
from tasks.base import DataBundle, PairedOutput, Recipe, Task, all_reduce_sum
from tasks.classification import data as cdata
from tasks.classification import resident
from tasks.classification.models import zoo
from tasks.classification.resident import ResidentLoader
from tasks.classification.spec import ClassificationSpec


class ClassificationTask(ClassificationSpec, Task):
    """Top-1/top-5 classification: the models, data, paired forward and evaluation of :class:`ClassificationSpec`."""

    # -- models ------------------------------------------------------------------------------
    def build_model(self, arch: str, num_classes: int, dataset: str, init: str | None = None) -> nn.Module:
        return zoo.build(arch, num_classes)

    # -- data --------------------------------------------------------------------------------
    def build_data(self, dataset: str, data_dir: Path | None, recipe: Recipe) -> DataBundle:
        extra = dict(recipe.extra)
        bundle = cdata.build_datasets(
            dataset, data_dir, image_size=extra.get("image_size"), num_classes=extra.get("num_classes"),
            num_train=extra.get("num_train"), num_val=extra.get("num_val"),
            labelled_per_class=extra.get("labelled_per_class"), repeat=extra.get("repeat"),
        )
        return DataBundle(bundle.train, bundle.val, bundle.num_classes, None, dict(bundle.info))

    def split_labels(self, train: Dataset) -> list[int] | None:
        """Every in-memory and folder set keeps its labels (``targets``): hold-outs are class-balanced."""
        targets = getattr(train, "targets", None)
        return list(targets) if targets is not None else None

    def eval_view(self, train: Dataset, val: Dataset) -> Dataset:
        """The training images under the validation split's transform (no crop, no flip)."""
        if not hasattr(train, "transform") or not hasattr(val, "transform"):
            return train  # e.g. synthetic tensors: no augmentation to take off
        view = copy.copy(train)
        view.transform = val.transform
        return view

    def resident_loader(
        self, data: Dataset, batch_size: int, *, device: torch.device, train: bool,
        generator: torch.Generator | None, channels_last: bool = False, rank: int = 0, world_size: int = 1,
    ) -> ResidentLoader:  # fmt: skip
        """A :class:`~tasks.classification.resident.ResidentLoader`: training drops the remainder so every
        rank has the same full batches; validation keeps every image exactly once."""
        if not resident.supports(data):
            raise UserError(f"{type(data).__name__} with this transform cannot live on the device; "
                            "use --data-pipeline pil")
        return ResidentLoader(data, batch_size, device, train, generator, drop_last=train, rank=rank,
                              world_size=world_size, channels_last=channels_last)

    # -- training and evaluation -------------------------------------------------------------
    def paired_forward(self, student: nn.Module, teacher: nn.Module | None, batch: Any,
                       device: torch.device) -> PairedOutput:
        images, labels = batch
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        logits = student(images)
        s_taps = student.tap_recorder.pop()
        t_taps: dict[str, torch.Tensor] = {}
        if teacher is not None:
            with torch.no_grad():
                teacher(images)
            t_taps = teacher.tap_recorder.pop()
        return PairedOutput({"ce": F.cross_entropy(logits, labels)}, s_taps, t_taps, labels, images.shape[0])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Iterable, device: torch.device) -> dict[str, float]:
        """Top-1 and top-5 accuracy (percent) and mean cross-entropy (``loss``, the NLL) over the whole loader.

        A split that knows its labels' NLL under the Bayes posterior (``bayes_nll``: ``colorshapes-few``'s validation
        split) adds ``excess_nll``, the model's NLL minus it: an estimate of the model's mean KL divergence from the
        Bayes posterior (no extra pass; only when the loader covered every image of the split once)."""
        was_training = model.training
        model.eval()
        # Counts stay on the device (float64: exact for any data set size) and are read once at the end.
        sums = torch.zeros(4, dtype=torch.float64, device=device)  # top-1 hits, top-5 hits, CE sum, rows
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            logits = model(images)
            rec = getattr(model, "tap_recorder", None)
            if rec is not None:
                rec.pop()
            k = min(5, logits.shape[1])
            hit = logits.topk(k, dim=1).indices.eq(labels.unsqueeze(1))
            ce = F.cross_entropy(logits.float(), labels, reduction="sum")
            rows = torch.full((), labels.numel(), device=device)  # a kernel argument, not a host->device copy
            sums += torch.stack([hit[:, 0].sum(), hit.any(dim=1).sum(), ce, rows]).double()
        model.train(was_training)
        correct1, correct5, loss_sum, total = all_reduce_sum(sums).tolist()  # over every rank's shard
        if total == 0:
            raise UserError("the validation split is empty")
        out = {"top1": 100.0 * correct1 / total, "top5": 100.0 * correct5 / total, "loss": loss_sum / total}
        data = getattr(loader, "dataset", None)
        bayes_nll = getattr(data, "bayes_nll", None)
        if bayes_nll is not None and int(total) == len(data):
            out["excess_nll"] = out["loss"] - bayes_nll
        return out

    def synthetic_batch(self, batch_size: int, num_classes: int, device: torch.device,
                        dataset: str | None = None, arch: str | None = None) -> Any:
        size = zoo.get_arch(arch).input_size if arch else cdata.DATASETS.get(dataset or "cifar100",
                                                                             cdata.DATASETS["cifar100"]).image_size
        g = torch.Generator().manual_seed(0)
        images = torch.randn(batch_size, 3, size, size, generator=g)
        labels = torch.randint(0, num_classes, (batch_size,), generator=g)
        return images.to(device), labels.to(device)


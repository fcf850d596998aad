"""Weights files for the detectron2 backend: teachers (:func:`load_weights`) and students' starting points
(:func:`load_init`), read through detectron2's own ``DetectionCheckpointer`` and made strict.

detectron2's checkpointer only logs what it skips; here every key must land, or the file is refused in one line
naming missing and unexpected keys, before anything is copied. What a starting point may be:

* a whole detector: model-zoo ``.pkl``, detectron2's ``.pth``, diffbench's own exports (strict, as teachers);
* an ImageNet backbone in detectron2's layouts, renamed by detectron2's own matching heuristics
  (``align_and_update_state_dicts``): MSRA's Caffe2-named ``R-50.pkl``/``R-101.pkl`` (``conv1_w``,
  ``res_conv1_bn_gamma``, ``res2_0_branch2a_w``, ...) and files written by detectron2's
  ``tools/convert-torchvision-to-d2.py`` (``stem.conv1.weight``, ``res2.0.conv1.norm.weight``, with
  ``matching_heuristics``). Every backbone tensor (``backbone.bottom_up.*``) must be covered; the FPN and heads keep
  their initialisation, as in detectron2's own ImageNet-initialised training;
* mdistiller's (ReviewKD's) combined files (``pretrained/r18-r101.pth`` and the like, mdistiller
  ``detection/README.md``: "The pretrained models we provided contains both teacher's and student's weights"):
  ``RCNNKD`` state dicts whose teacher keys carry the ``teacher.`` prefix. The student's keys are taken, the teacher's
  left out (and the log says so); whether those files hold the student's FPN and heads too is UNVERIFIED (the files
  were not reachable), so either is accepted as long as the backbone is complete.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from methods.base import UserError
from tasks.base import frozen_bn_counters, key_mismatch

with warnings.catch_warnings():
    # detectron2's layers script a few helpers when imported, which this torch reports as deprecated.
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts

#: The detector's backbone body (ResNet / MobileNetV2 under the FPN): what an ImageNet file must cover.
BACKBONE = "backbone.bottom_up."
#: Keys of an mdistiller/ReviewKD combined file that are not the student's: the frozen teacher (``teacher.*``, built
#: by ``detection/model/teacher/teacher.py``), its input buffers (``teacher_pixel_*``) and ReviewKD's fusion module
#: (``kd_trans.*``), all attributes of mdistiller's ``RCNNKD`` (``detection/model/rcnn.py`` L73-89 @a08d46f).
NOT_STUDENT = ("teacher.", "teacher_", "kd_trans.")
#: What an ImageNet file holds beyond a detectron2 backbone, under the names detectron2's heuristics give them:
#: Caffe2's classifier ``fc1000_{w,b}`` and stem conv bias ``conv1_b`` (detectron2's stem conv has none; detectron2
#: itself reports exactly "fc1000.{bias, weight}" and "stem.conv1.bias" as unused when loading MSRA's ImageNet
#: files, github.com/deeplearning-wisc/vos/issues/44), ``convert-torchvision-to-d2.py``'s ``stem.fc.*`` (its L37-51
#: prefix every non-``layer`` key with ``stem.``), and BatchNorm counters frozen BatchNorm has no buffer for.
LEFTOVERS = re.compile(r"^(fc1000\.|stem\.fc\.|fc\.)|^stem\.conv1\.bias$|num_batches_tracked$")


def _tolerated(counters: set[str]) -> Any:
    """Unexpected keys detectron2 itself ignores: ``pixel_mean``/``pixel_std`` (non-persistent buffers set from the
    config; old model-zoo files still carry them), ``anchor_generator.cell_anchors`` of old files, and the
    ``num_batches_tracked`` of plain-BatchNorm files in frozen BatchNorm (:func:`~tasks.base.frozen_bn_counters`)."""
    return lambda k: k in ("pixel_mean", "pixel_std") or "cell_anchors" in k or k in counters


class _Checkpointer(DetectionCheckpointer):
    """detectron2's checkpointer, refusing any key it would skip (fvcore only logs them).

    ``init=False`` (teachers): the file must be the whole detector. ``init=True`` (a student's starting point): a
    whole detector, an ImageNet backbone or an mdistiller combined file (see the module docstring);
    :attr:`loaded` then says which. Checked before anything is copied, so a refused file leaves the model untouched.
    """

    def __init__(self, model: nn.Module, source: str, init: bool = False) -> None:
        super().__init__(model, save_to_disk=False)
        self.source, self.init = source, init
        self.loaded = "the whole detector"

    def _torch_load(self, f: str) -> Any:
        # fvcore loads with torch's weights_only default; detectron2's own .pth files hold other objects too
        obj = torch.load(f, map_location="cpu", weights_only=False)
        if isinstance(obj, dict) and isinstance(obj.get("student"), Mapping):  # diffbench's export of a job
            return {"model": obj["student"]}
        return obj

    def _refuse(self, why: str) -> UserError:
        arch = getattr(self.model, "det_arch", type(self.model).__name__)
        return UserError(f"checkpoint {self.source!r} does not fit {arch}: {why}")

    def _load_model(self, checkpoint: Any) -> Any:
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), Mapping):
            raise UserError(f"checkpoint {self.source!r} holds no detectron2 'model' state dict")
        author = checkpoint.get("__author__")
        own = self.model.state_dict()
        if checkpoint.get("matching_heuristics", False):  # Caffe2/pycls/converted files: detectron2's name matching
            self._convert_ndarray_to_tensor(checkpoint["model"])
            c2 = author == "Caffe2"
            checkpoint["model"] = align_and_update_state_dicts(own, checkpoint["model"], c2_conversion=c2)
            checkpoint["matching_heuristics"] = False
        state = {k.removeprefix("module."): v for k, v in checkpoint["model"].items()}
        self._convert_ndarray_to_tensor(state)
        note = ""
        if self.init and any(k.startswith("teacher.") for k in state):
            dropped = [k for k in state if k.startswith(NOT_STUDENT)]
            state = {k: v for k, v in state.items() if not k.startswith(NOT_STUDENT)}
            note = (f" from a combined teacher+student file (mdistiller/ReviewKD; "
                    f"{len(dropped)} teacher tensors left out)")
        tolerated = _tolerated(frozen_bn_counters(self.model))
        # a plain BatchNorm's missing counter is filled in by torch (files without version metadata)
        needed = {k: v for k, v in own.items() if not k.endswith("num_batches_tracked") or k in state}
        whole = set(needed) <= set(state)
        if self.init and not whole:
            self._check_backbone(own, state, tolerated)
            kind = {"Caffe2": "Caffe2 names, e.g. MSRA R-50.pkl", "torchvision": "convert-torchvision-to-d2.py"}
            n = sum(k.startswith(BACKBONE) for k in needed)
            self.loaded = f"ImageNet backbone ({kind.get(author, 'detectron2 names')}), {n} tensors{note}"
        else:
            why = key_mismatch(needed, state, tolerated)
            if why:
                raise self._refuse(why)
            self.loaded = f"the whole detector{note}"
        checkpoint["model"] = {k: v for k, v in state.items() if k in own}
        incompatible = super()._load_model(checkpoint)
        missed = [k for k in incompatible.missing_keys
                  if (k.startswith(BACKBONE) or whole) and not k.endswith("num_batches_tracked")]  # fmt: skip
        if missed:  # cannot happen after the checks above; a guard against a detectron2 that renames differently
            raise self._refuse(f"{len(missed)} tensors were not loaded (e.g. {', '.join(missed[:3])})")
        return incompatible

    def _check_backbone(self, own: Mapping[str, torch.Tensor], state: Mapping[str, Any], tolerated: Any) -> None:
        """Every backbone tensor present with its shape; nothing else but what may be left over (:data:`LEFTOVERS`)
        or fits the model (a student's FPN and heads in a combined file)."""
        backbone = [k for k in own if k.startswith(BACKBONE) and not k.endswith("num_batches_tracked")]
        missing = sorted(set(backbone) - set(state))
        unexpected = sorted(k for k in state if k not in own and not tolerated(k) and not LEFTOVERS.search(k))
        wrong = sorted(k for k in state if k in own and tuple(own[k].shape) != tuple(state[k].shape))
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} backbone tensors (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            k = wrong[0]
            parts.append(f"shape mismatch {len(wrong)} (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        if parts:
            raise UserError(f"checkpoint {self.source!r} is neither a whole "
                            f"{getattr(self.model, 'det_arch', 'detector')} nor an ImageNet backbone detectron2 can "
                            f"match to it: {'; '.join(parts)}")  # fmt: skip


def _load(model: nn.Module, path: Path, init: bool) -> str:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    ckpt = _Checkpointer(model, str(path), init=init)
    try:
        ckpt.load(str(path), checkpointables=[])
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - a corrupt or foreign file: one line, not a traceback
        raise UserError(f"checkpoint {str(path)!r} cannot be loaded by detectron2's checkpointer: {err}") from None
    return ckpt.loaded


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a whole detectron2 detector strictly with detectron2's ``DetectionCheckpointer``.

    Accepts the model zoo's ``.pkl`` (``{"model": numpy arrays, "__author__": ...}``), detectron2's
    ``.pth`` (``{"model": state_dict, "iteration": ..., ...}``), Detectron1/Caffe2 ``.pkl`` files through
    detectron2's own name matching (still refused unless every key is then covered), and diffbench's own
    exports (``{"student": state_dict, ...}``, what a teacher job of a grid writes, also from plain BatchNorm into the
    frozen BatchNorm a teacher is built with).
    """
    _load(model, path, init=False)


def load_init(model: nn.Module, arch: str, path: Path) -> str:
    """A student's starting weights (whole detector, ImageNet backbone or mdistiller combined file; see the module
    docstring); returns what was loaded, for the job's log."""
    return _load(model, path, init=True)

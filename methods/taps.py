"""What a method is given, described without torch: tap specs, the training progress, and picking taps by role.

A task describes its taps with :class:`TapSpec` (computed from the architecture, never by a forward pass) and
hands a method tensors in two shapes only:

* ``feature`` / ``hint`` taps: ``[N, C, H, W]`` feature maps;
* ``logits`` taps: ``[N, K]`` class scores, one row per *sample* being classified (an image, a region
  proposal, a valid pixel), with the matching integer ``target`` of shape ``[N]``.

Kept free of torch so that planning a grid (which builds every method's adapters from these specs on paper
only) and every command that does not train answer without importing it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from methods.errors import UserError

#: Roles a tap can play. ``hint``: FitNet's hint layer; ``feature``: the feature map(s) DiffKD denoises;
#: ``logits``: class scores.
ROLES = ("hint", "feature", "logits")


@dataclass(frozen=True)
class TapSpec:
    """Where a tensor is captured and what it looks like, without running the model.

    Like detectron2's ``ShapeSpec``: methods build their adapters from it.

    Attributes:
        name: the tap's name within its model (``"hint"``, ``"feat"``, ``"logits"``, ``"fpn.p3"``).
        channels: channels of a feature map, or number of classes for logits.
        stride: spatial reduction relative to the input image (0 for logits).
        roles: which roles in :data:`ROLES` this tap can play.
        module: the dotted module path the forward hook sits on (informative for methods).
    """

    name: str
    channels: int
    stride: int
    roles: tuple[str, ...]
    module: str = ""

    def __post_init__(self) -> None:
        bad = [r for r in self.roles if r not in ROLES]
        if bad:
            raise ValueError(f"tap {self.name!r}: unknown role(s) {bad}; valid: {', '.join(ROLES)}")


@dataclass(frozen=True)
class Progress:
    """Where training is, for warm-ups and schedules.

    ``epoch`` is 1-based like mdistiller's (``min(epoch / warmup, 1)`` reaches 1 at ``epoch == warmup``).
    """

    epoch: int = 1
    epochs: int = 1
    step: int = 0
    steps_per_epoch: int = 1


def select_taps(specs: Mapping[str, TapSpec], role: str) -> dict[str, TapSpec]:
    """The taps of ``specs`` that can play ``role``, in declaration order."""
    return {name: spec for name, spec in specs.items() if role in spec.roles}


def paired_taps(
    method: str, student_taps: Mapping[str, TapSpec], teacher_taps: Mapping[str, TapSpec], role: str
) -> list[str]:
    """Names of the student's ``role`` taps, each of which the teacher must have too (declaration order).

    A method already refuses a pair with no tap of a consumed role at all; a student tap the teacher lacks
    would silently drop a loss term, so it is an error as well.
    """
    s_taps, t_taps = select_taps(student_taps, role), select_taps(teacher_taps, role)
    missing = [n for n in s_taps if n not in t_taps]
    if missing:
        raise UserError(
            f"method {method!r}: teacher has no {role} tap {missing[0]!r} "
            f"(teacher {role} taps: {', '.join(t_taps) or 'none'})"
        )
    return list(s_taps)


def chosen_taps(method: str, available: list[str], chosen: Sequence[str] | None) -> list[str]:
    """``available`` narrowed to ``chosen`` (a method's ``taps`` option; ``None``: all), in ``chosen``'s order."""
    if chosen is None:
        return available
    if isinstance(chosen, str) or not len(chosen):
        raise UserError(f"method {method!r}: taps must be a non-empty list of tap names, got {chosen!r}")
    unknown = [c for c in chosen if c not in available]
    if unknown:
        raise UserError(f"method {method!r}: taps {', '.join(map(repr, unknown))} are not taps of this pair; "
                        f"valid: {', '.join(available)}")  # fmt: skip
    return list(dict.fromkeys(chosen))

"""The values of the grid's flags, parsed once: comma lists, ``--set SCOPE.NAME=VALUE``, recipe overrides, the
speed flags as recipe fields, ``ARCH=PATH`` checkpoints.

Overrides have one syntax everywhere, ``--set SCOPE.NAME=VALUE`` (in YAML: ``set: {SCOPE: {NAME: VALUE}}``),
with the scope a method (``--set dkd.beta=6``), ``recipe`` (``--set recipe.weight_decay=1e-4``: every
job) or ``teacher`` (``--set teacher.epochs=40``: teacher jobs only, on top of ``recipe``), in the spirit
of MMEngine's ``--cfg-options``. Imports neither torch nor Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from methods.errors import UserError, unknown

#: ``--set`` scopes that are not method names.
RECIPE_SCOPES = ("recipe", "teacher")
#: The recipe fields of the plain recipe flags (``--epochs`` ...): a flag wins over ``--set recipe.<field>``.
RECIPE_FLAGS = ("epochs", "batch_size", "lr", "max_steps", "num_workers")


def split_list(values: list[str] | str | None) -> list[str]:
    """Comma lists and repeated flags both work: ``--methods kd,dkd --methods fitnet`` (duplicates dropped)."""
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values or []:
        out += [x.strip() for x in str(v).split(",") if x.strip()]
    return list(dict.fromkeys(out))


def parse_sets(values: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--set dkd.beta=6 --set recipe.lr=0.1`` → ``{"dkd": {"beta": 6}, "recipe": {"lr": 0.1}}``.

    Values are parsed as YAML scalars (numbers, booleans, null, lists), then text that Python's ``float()`` reads
    becomes that number (:func:`bench.jobs.values.scalar`): YAML 1.1 alone reads ``1e-4`` and ``1e30`` as text.
    """
    import yaml

    from bench.jobs.values import scalar

    out: dict[str, dict[str, Any]] = {}
    for item in values or []:
        key, sep, raw = str(item).partition("=")
        scope, dot, name = key.strip().partition(".")
        if not sep or not dot or not scope or not name:
            raise UserError(
                f"--set {item!r}: expected SCOPE.NAME=VALUE with SCOPE a method, recipe or teacher "
                "(e.g. --set dkd.beta=6, --set recipe.lr=0.1)"
            )
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        out.setdefault(scope, {})[name] = scalar(value)
    return out


def speed_settings(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe fields of the speed flags (absent where a flag was not given)."""
    out: dict[str, Any] = {}
    for flag, key in (("--channels-last", "channels_last"), ("--sync-bn", "sync_bn")):
        value = flags.get(key)
        if value not in (None, "auto", "on", "off"):
            raise unknown(f"{flag} value", value, ("auto", "on", "off"))
        if value is not None:
            out[key] = {"on": True, "off": False, "auto": None}[value]
    from tasks.recipe import COMPILE_MODES, PIPELINES, PRECISIONS

    compile_mode = flags.get("compile_mode")
    if compile_mode:
        if compile_mode not in ("on", *COMPILE_MODES):
            raise unknown("--compile mode", compile_mode, ("off", "on", *COMPILE_MODES[1:]))
        out["compile"] = {"on": "default"}.get(compile_mode, compile_mode)
    for flag, key, valid in (("--precision", "precision", PRECISIONS), ("--data-pipeline", "data_pipeline", PIPELINES)):
        if flags.get(key):
            if flags[key] not in valid:
                raise unknown(flag, flags[key], valid)
            out[key] = flags[key]
    return out


def recipe_overrides(flags: Mapping[str, Any], sets: Mapping[str, Mapping[str, Any]]) -> tuple[dict, dict]:
    """(every job's, teacher jobs') recipe overrides: ``--set recipe.*`` / ``--set teacher.*`` under the flags.

    A recipe flag (``--epochs``) wins over ``--set recipe.epochs``: flags are the explicit form.
    """
    given = {k: flags.get(k) for k in RECIPE_FLAGS}
    recipe = {**sets.get("recipe", {}), **{k: v for k, v in given.items() if v is not None}, **speed_settings(flags)}
    return recipe, dict(sets.get("teacher", {}))


def parse_checkpoints(items: list[str] | None, flag: str = "--teacher-checkpoint") -> dict[str, str]:
    """``ARCH=PATH`` items → ``{arch: path}``."""
    out = {}
    for item in items or []:
        arch, sep, path = item.partition("=")
        if not sep or not arch or not path:
            raise UserError(f"{flag} {item!r}: expected ARCH=PATH")
        out[arch.strip()] = path.strip()
    return out

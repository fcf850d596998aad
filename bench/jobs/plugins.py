"""Plugins: methods and architectures from outside diffbench, without a fork.

A plugin is a Python module whose import registers what it defines: a method class decorated with
:func:`methods.register`, a classification architecture decorated with
:func:`tasks.classification.models.zoo.register_arch`. diffbench imports plugin modules from two places:

* **entry points** of the installed distributions, groups ``diffbench.methods`` and ``diffbench.archs``
  (``[project.entry-points."diffbench.methods"] my_kd = "my_package.my_kd"`` in the plugin's
  ``pyproject.toml``): found by :mod:`importlib.metadata`, loaded by every command that needs the
  registries, in the driver and in every Ray worker;
* **``--import MODULE``** (repeatable; or ``imports: [...]`` in ``experiment.yaml``): a module name
  importable from the current folder or the environment, or a path to a ``.py`` file.

Loading is lazy: the CLI calls :func:`load_plugins` inside the commands that use methods or
architectures, never at ``--help`` time. Executors pass :func:`imported_modules` to their workers (which
call :func:`load_plugins` with it before building a job), so a module given with ``--import`` is there
in a Ray worker too, as long as its name or path resolves on that node. Any failure is one
:class:`~methods.base.UserError` line naming the module.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from methods.errors import UserError, first_line

#: Entry point groups diffbench loads: what each plugin module registers.
ENTRY_POINT_GROUPS = ("diffbench.methods", "diffbench.archs")

#: Entry points imported so far, ``(group, name, value)``: each once per process, whenever it was installed.
_loaded_entry_points: set[tuple[str, str, str]] = set()
#: The modules given with ``--import`` so far, in order, as workers must import them (module names, or
#: absolute ``.py`` paths).
_imported: list[str] = []


def load_plugins(modules: Iterable[str] | None = ()) -> list[str]:
    """Import every plugin: the installed entry points, then ``modules`` (each once per process).

    Args:
        modules: module names (``my_kd``, ``my_package.archs``) or ``.py`` file paths, as ``--import`` takes
            them; comma lists are split.

    Returns:
        Every module imported through ``--import`` in this process so far (for the workers' job config).

    Raises:
        UserError: a module that does not exist or whose import fails (one line naming it).
    """
    for group in ENTRY_POINT_GROUPS:
        for ep in _entry_points(group):
            if (group, ep.name, ep.value) not in _loaded_entry_points:
                _load_entry_point(ep, group)
                _loaded_entry_points.add((group, ep.name, ep.value))
    for spec in _split(modules):
        _import(spec)
    return list(_imported)


def imported_modules() -> list[str]:
    """The ``--import`` modules of this process, as a worker's :func:`load_plugins` takes them."""
    return list(_imported)


def plugin_entry_points() -> dict[str, list[str]]:
    """``{group: ["name = module", ...]}`` of the installed plugins (for ``diffbench list``)."""
    return {g: [f"{ep.name} = {ep.value}" for ep in _entry_points(g)] for g in ENTRY_POINT_GROUPS}


# ------------------------------------------------------------------------------------------------
def _split(modules: Iterable[str] | None) -> list[str]:
    out: list[str] = []
    for item in modules or ():
        out += [m.strip() for m in str(item).split(",") if m.strip()]
    return out


def _entry_points(group: str) -> list[Any]:
    from importlib.metadata import entry_points

    seen: dict[tuple[str, str], Any] = {}
    for ep in entry_points(group=group):  # a distribution on sys.path twice lists its entry points twice
        seen.setdefault((ep.name, ep.value), ep)
    return list(seen.values())


def _load_entry_point(ep: Any, group: str) -> None:
    dist = getattr(getattr(ep, "dist", None), "name", None)
    where = f"plugin {ep.name!r} ({ep.value}, entry point group {group}{f', from {dist}' if dist else ''})"
    try:
        ep.load()
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of foreign code is the user's to fix, in one line
        raise UserError(f"{where} failed to import: {type(err).__name__}: {first_line(err)}") from None


def _import(spec: str) -> None:
    is_file = spec.endswith(".py") or os.sep in spec or "/" in spec
    key = str(Path(spec).expanduser().resolve()) if is_file else spec
    if key in _imported:
        return
    try:
        _import_file(key) if is_file else _import_module(spec)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - see _load_entry_point
        raise UserError(f"--import {spec}: importing it failed: {type(err).__name__}: {first_line(err)}") from None
    _imported.append(key)


def _import_module(name: str) -> None:
    # Like `python -m`: a module in the current folder is importable (a console script's sys.path lacks it).
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name is not None and (name == err.name or name.startswith(err.name + ".")):
            raise UserError(
                f"--import {name}: no module named {err.name!r} (not installed, and not a .py file or package "
                "in the current folder)"
            ) from None
        raise


def _import_file(path: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--import {path}: no such file")
    name = file.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(file):
        return
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise UserError(f"--import {path}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # registered first, like an import: dataclasses and pickling look it up
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise

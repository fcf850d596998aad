"""Which methods exist and what each accepts, known without importing torch.

Every command that does not train (``--help``, ``list``, ``report``, a misspelt method or hyper-parameter)
must answer in a second, and importing torch alone takes seconds. So the built-in methods are described by
*reading* their source: each ``methods/<name>.py`` registers one class whose constructor signature is the
declaration of its hyper-parameters (name, type, default, :class:`~methods.hparams.Range`). The signature is
parsed with :mod:`ast`, and its annotations and defaults are evaluated in a namespace that holds only the
typing names, the declaration types of :mod:`methods.hparams` and the module's own literal constants. The
class itself is imported only when a job builds the method. ``tests/methods/test_catalog.py`` checks that
this reading equals what Python's ``inspect`` sees on the imported classes, for every built-in method.

Methods from outside diffbench (plugins) are added when their class registers (:func:`methods.base.register`);
their module has been imported by then, torch with it.
"""

from __future__ import annotations

import ast
import collections.abc
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from methods import hparams as hp
from methods.errors import UserError, unknown

#: The built-in methods, one module ``methods/<name>.py`` each, in the papers' order (tables, ``list``).
BUILTIN: tuple[str, ...] = ("kd", "dkd", "fitnet", "diffkd")
#: The method name of a run without distillation: the student (or a teacher) alone. Not a method.
VANILLA = "vanilla"


@dataclass(frozen=True)
class MethodInfo:
    """What a method is, without its code: its CLI name, first docstring line, consumed tap roles and
    hyper-parameters (signature order)."""

    name: str
    summary: str
    consumes: tuple[str, ...]
    hparams: dict[str, hp.HParam]
    module: str
    builtin: bool = True


_PLUGINS: dict[str, MethodInfo] = {}
_BUILTIN_INFO: dict[str, MethodInfo] = {}

#: Names an annotation or default of a built-in constructor may use (see the module docstring).
_NAMESPACE: dict[str, Any] = {
    "Annotated": typing.Annotated,
    "Literal": typing.Literal,
    "Any": typing.Any,
    "Sequence": collections.abc.Sequence,
    "Mapping": collections.abc.Mapping,
    "Range": hp.Range,
    **{cls.__name__: cls for cls in (hp.Uniform, hp.LogUniform, hp.IntUniform, hp.Choice)},
    **{t.__name__: t for t in (int, float, bool, str, tuple, list, dict)},
    "None": None,
    "True": True,
    "False": False,
}


def _literal_constants(tree: ast.Module) -> dict[str, Any]:
    """``NAME = <literal>`` assignments at the top of a module (constants an annotation may refer to)."""
    out: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                out[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError):
                continue
    return out


def _evaluate(node: ast.expr | None, namespace: dict[str, Any], where: str) -> Any:
    if node is None:
        return Any
    code = compile(ast.Expression(node), where, "eval")
    try:
        return eval(code, {"__builtins__": {}}, namespace)  # noqa: S307 - only declaration names are in scope
    except Exception as err:
        raise RuntimeError(f"{where}: cannot read {ast.unparse(node)!r} without importing the module ({err}); "
                           "use literals, typing names and methods.hparams types in method signatures") from err


def read_source(path: Path, module: str) -> MethodInfo:
    """The :class:`MethodInfo` of the one registered ``Method`` class in the file ``path`` (no import)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    namespace = {**_NAMESPACE, **_literal_constants(tree)}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef) or not any(
            isinstance(d, ast.Name) and d.id == "register" for d in node.decorator_list
        ):
            continue
        attrs = {
            t.id: stmt.value
            for stmt in node.body
            if isinstance(stmt, ast.Assign)
            for t in stmt.targets
            if isinstance(t, ast.Name)
        }
        name = ast.literal_eval(attrs["name"])
        consumes = tuple(ast.literal_eval(attrs["consumes"])) if "consumes" in attrs else ()
        summary = (ast.get_docstring(node) or "").strip().splitlines()
        init = next(s for s in node.body if isinstance(s, ast.FunctionDef) and s.name == "__init__")
        args = init.args.args
        defaults = [None] * (len(args) - len(init.args.defaults)) + list(init.args.defaults)
        params: dict[str, hp.HParam] = {}
        for arg, default in zip(args, defaults, strict=True):
            if arg.arg in hp.NOT_HPARAMS:
                continue
            where = f"{path.name}: {name}.{arg.arg}"
            hint = _evaluate(arg.annotation, namespace, where)
            value = _evaluate(default, namespace, where) if default is not None else None
            params[arg.arg] = hp.HParam.of(arg.arg, hint, value, default is not None)
        return MethodInfo(name, summary[0] if summary else "", consumes, params, module)
    raise RuntimeError(f"{path}: no class decorated with @register")


def _builtin(name: str) -> MethodInfo:
    if name not in _BUILTIN_INFO:
        _BUILTIN_INFO[name] = read_source(Path(__file__).with_name(f"{name}.py"), f"methods.{name}")
    return _BUILTIN_INFO[name]


def add_plugin(info: MethodInfo) -> None:
    """Register a plugin method's description (called by :func:`methods.base.register`)."""
    if info.name in BUILTIN or info.name in _PLUGINS or info.name == VANILLA:
        raise ValueError(f"method {info.name!r} registered twice")
    _PLUGINS[info.name] = info


def method_names() -> list[str]:
    """Every method name: the built-in ones in the papers' order, then plugins alphabetically (not ``vanilla``)."""
    return [*BUILTIN, *sorted(_PLUGINS)]


def method_info(name: str) -> MethodInfo:
    """The description of method ``name``; an unknown name is a :class:`UserError` with a "did you mean"."""
    if name in BUILTIN:
        return _builtin(name)
    if name in _PLUGINS:
        return _PLUGINS[name]
    raise unknown("method", name, method_names())


def accepted_hparams(name: str) -> set[str]:
    """The hyper-parameter names method ``name`` accepts (its constructor's keywords)."""
    return set(method_info(name).hparams)


def default_hparams(name: str) -> dict[str, Any]:
    """The constructor defaults of method ``name``: what a job uses for anything not set otherwise."""
    return {k: p.default for k, p in method_info(name).hparams.items() if p.has_default}


def check_hparams(name: str, values: Mapping[str, Any]) -> None:
    """Refuse unknown names, wrong types, non-finite numbers and out-of-range values, one line each.

    So ``--set kd.temperature=abc`` or ``--set dkd.beta=-1`` is refused when the grid is expanded, not as a
    crash inside a job that Ray would then retry.
    """
    hp.check(name, method_info(name).hparams, values)


def method_space(name: str) -> dict[str, hp.Space]:
    """The search space of every hyper-parameter method ``name`` declares one for (``diffbench tune``), in
    signature order; ``{}`` for a method that declares none (a plugin may)."""
    out = {}
    for key, param in method_info(name).hparams.items():
        space = hp.space_of(param)
        if space is not None:
            out[key] = space
    return out


def check_space(name: str, key: str, space: hp.Space) -> None:
    """Refuse, in one line, a space for ``name.key`` that names no hyper-parameter or could draw a value outside its
    declared type and range (``--space dkd.beta=loguniform(-1, 4)``)."""
    declared = method_info(name).hparams
    if key not in declared:
        hp.check(name, declared, {key: None})  # the "did you mean" of an unknown name
    hp.check_space(name, declared[key], space)


def is_method(name: str) -> bool:
    """Whether ``name`` is a registered method (``vanilla`` is not)."""
    return name in BUILTIN or name in _PLUGINS


__all__ = [
    "BUILTIN",
    "VANILLA",
    "MethodInfo",
    "UserError",
    "accepted_hparams",
    "add_plugin",
    "check_hparams",
    "check_space",
    "default_hparams",
    "is_method",
    "method_info",
    "method_names",
    "method_space",
    "read_source",
]

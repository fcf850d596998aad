"""One configuration schema: an ``experiment.yaml`` takes exactly the command's flags, under the same names.

The definition is the command itself: the keys a YAML file may hold are the long names of the command's
options (``--batch-size`` → ``batch_size``, ``--set`` → ``set``), and each value is converted by the
option's own type, so a key and its flag can never drift apart. Precedence: a flag given on the command
line wins over the file, the file over the option's default. What the values mean is parsed by
:mod:`bench.jobs.overrides`.

Imports neither torch nor Ray: ``--help`` and a bad YAML file answer at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.cli.options import NUMERIC
from bench.jobs.compat import RENAMED_CONFIG_KEYS
from methods.errors import UserError, unknown

#: Options that never come from a file.
_NOT_IN_FILES = {"config", "help"}


def _options(command: Any) -> dict[str, Any]:
    """YAML key → click option of ``command``: the option's longest flag, dashes as underscores."""
    out = {}
    for param in command.params:
        flags = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        if not flags or param.name in _NOT_IN_FILES:
            continue
        out[max(flags, key=len)[2:].replace("-", "_")] = param
    return out


def _as_strings(key: str, value: Any) -> list[str]:
    """A list-valued option from YAML: a list, a comma string, or a mapping (``set``, ``teacher_checkpoint``)."""
    if key == "set" and isinstance(value, dict):
        items = []
        for scope, kv in value.items():
            if not isinstance(kv, dict):
                raise UserError(f"config key set.{scope} must be a mapping NAME: VALUE")
            import yaml

            items += [f"{scope}.{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                      for k, v in kv.items()]  # fmt: skip
        return items
    if isinstance(value, dict):  # teacher_checkpoint: {arch: path}
        return [f"{k}={v}" for k, v in value.items()]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping in ``path``; one-line errors for a missing, binary or malformed file."""
    import yaml

    path = Path(path)
    if path.is_dir():
        raise UserError(f"config {str(path)!r} is a folder, not a YAML file")
    if path.exists() and not path.is_file():  # /dev/zero would be read forever
        raise UserError(f"config {str(path)!r} is not a regular file (a device, pipe or socket); expected a YAML file")
    if not path.is_file():
        raise UserError(f"config {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"config {str(path)!r} is not a text file (not UTF-8); expected YAML") from None
    except OSError as err:
        raise UserError(f"config {str(path)!r} cannot be read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"config {str(path)!r} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config {str(path)!r}: expected a mapping of keys, got {type(data).__name__}")
    return data


def effective(ctx: Any, config: Path | None) -> dict[str, Any]:
    """Every parameter of the running command: command line > ``config`` file > default.

    Args:
        ctx: the click/Typer context of the command (its params and where each value came from).
        config: an ``experiment.yaml`` whose keys are the command's long option names.
    """
    params = dict(ctx.params)
    if config is None:
        return params
    data = read_yaml(config)
    data.pop("resolved", None)  # what a written-out config records for the reader, not an option
    options = _options(ctx.command)
    unknown_keys = sorted(set(data) - set(options))
    if unknown_keys:
        hints = [f"{k} (now {RENAMED_CONFIG_KEYS[k]})" for k in unknown_keys if k in RENAMED_CONFIG_KEYS]
        names = unknown_keys if len(unknown_keys) > 1 else unknown_keys[0]
        renamed = f"; renamed: {', '.join(hints)}" if hints else ""
        err = unknown("key(s)", names, sorted(options), f"(the command's flags){renamed}")
        raise UserError(f"config {str(config)!r}: {err}")
    for key, value in data.items():
        param = options[key]
        if _given_on_command_line(ctx, param.name):
            continue
        raw = _as_strings(key, value) if getattr(param, "multiple", False) else value
        if param.name in NUMERIC and raw is not None:
            raw = _number(config, key, param.name, raw)  # epochs: [3] and epochs: true are refused, 1e30 read
        elif isinstance(raw, list | tuple) and not getattr(param, "multiple", False):
            raw = ",".join(str(v) for v in raw)  # a YAML list for a comma-list flag (seeds: [0, 1, 2])
            if key == "seeds" and "," not in raw:
                raw += ","  # seeds: [5] is seed 5, not a count of 5
        try:
            params[param.name] = None if raw is None else _convert(param, ctx, raw)
        except Exception as err:  # noqa: BLE001 - click's BadParameter and friends: one line
            message = err.format_message() if hasattr(err, "format_message") else str(err)
            raise UserError(f"config {str(config)!r}: {key}: {message}") from None
    return params


def _number(config: Path, key: str, name: str, value: Any) -> Any:
    """A YAML value of a numeric option through the option's own number parser (:data:`~.options.NUMERIC`).

    YAML 1.1 reads ``1e-4`` and ``1.0e30`` as text, and a list or a boolean would otherwise pass a flag's
    conversion (``[3]`` joined to ``"3"``, ``true`` read as 1): text ``float()`` reads is a number, the rest refused.
    """
    try:
        return NUMERIC[name](value)
    except UserError as err:
        raise UserError(f"config {str(config)!r}: {key}: {str(err).split(' ', 1)[1]}") from None


def _convert(param: Any, ctx: Any, value: Any) -> Any:
    """A file value through the option's own conversion (the same code that parses the flag)."""
    if hasattr(param, "type_cast_value"):  # click
        return param.type_cast_value(ctx, value)
    if not isinstance(value, list | tuple | bool) and value is not None:
        value = str(value) if not isinstance(value, int | float) else value
    return param.process_value(ctx, value)  # Typer >= 0.20 (its vendored click)


def _given_on_command_line(ctx: Any, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT", "PROMPT")


def command_line(ctx: Any, params: dict[str, Any]) -> str:
    """The command as the user gave it (the options given on the command line or in ``--config``).

    Rebuilt from the parsed options rather than ``sys.argv``, so it is the same however the command was
    invoked (console script, ``python -m``, a test runner).
    """
    import shlex

    words = [ctx.command_path.split()[-1] if ctx.command_path else ctx.command.name]
    for param in ctx.command.params:
        flags = [o for o in getattr(param, "opts", []) if o.startswith("--")]
        source = ctx.get_parameter_source(param.name)
        if not flags or source is None or source.name == "DEFAULT":
            continue
        value = params.get(param.name)
        flag = max(flags, key=len)
        if isinstance(value, bool):
            words += [flag] if value else []
        elif isinstance(value, list | tuple):
            words += [w for v in value for w in (flag, str(v))]
        elif value is not None:
            words += [flag, str(value)]
    return shlex.join(words)


def resolved_yaml(ctx: Any, params: dict[str, Any], extra: dict[str, Any] | None = None) -> str:
    """The fully resolved configuration as YAML: every option of the command, as ``--config`` reads it back.

    ``extra`` is appended under ``resolved`` (e.g. the expanded job list) for the record; it is not an option.
    """
    import yaml

    out: dict[str, Any] = {}
    for key, param in _options(ctx.command).items():
        if param.name == "dry_run":
            continue
        value = params.get(param.name)
        if isinstance(value, Path):
            value = str(value)
        elif isinstance(value, list | tuple):
            value = [str(v) if isinstance(v, Path) else v for v in value]
        out[key] = value
    if extra:
        out["resolved"] = extra
    return yaml.safe_dump(out, sort_keys=False, default_flow_style=None, width=120, allow_unicode=True)

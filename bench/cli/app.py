"""The ``diffbench`` command line (Typer + rich): the app and its commands, one module per command group.

| command | module |
|---|---|
| ``run``, ``train`` | :mod:`bench.cli.run` |
| ``tune`` | :mod:`bench.cli.tune` |
| ``report``, ``ui`` | :mod:`bench.cli.report` |
| ``eval``, ``export`` | :mod:`bench.cli.checkpoints` |
| ``list`` | :mod:`bench.cli.listing` |
| ``doctor`` | :mod:`bench.cli.doctor` |
| ``speed`` | :mod:`bench.cli.speed` |

Every command turns a :class:`~methods.errors.UserError` into one red line on stderr and exit code 2
(:mod:`bench.cli.options`); anything else is a bug and keeps its traceback. Importing this module imports
neither torch nor Ray nor MLflow: ``--help``, ``--version`` and usage errors answer at once.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from bench.cli import checkpoints, doctor, listing, report, run, speed, tune
from bench.cli.options import console, error_line
from methods.errors import did_you_mean, unknown


class _OneLineErrors(TyperGroup):
    """Typer's own usage errors (a bad option value, an unknown flag) as the one ``error:`` line every other
    input error gets, instead of a usage block and a boxed panel; exit code 2 as before."""

    def main(self, args: Any = None, prog_name: Any = None, complete_var: Any = None, standalone_mode: bool = True,
             **extra: Any) -> Any:  # fmt: skip
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.Abort as err:
            cause = err.__cause__ or err.__context__
            if isinstance(cause, KeyboardInterrupt):  # Ctrl-C or SIGTERM before a grid's own handling began
                from bench.execute.signals import exit_code

                console.print("[yellow]interrupted[/]", highlight=False)
                rv = exit_code(cause)
            else:
                error_line("aborted")
                rv = 1
        except Exception as err:
            # Click's exceptions (vendored by newer Typer as typer._click): a message and an exit code.
            if not (hasattr(err, "format_message") and hasattr(err, "exit_code")):
                raise
            if type(err).__name__ == "NoArgsIsHelpError":
                err.show()
                rv = 0
            else:
                ctx = getattr(err, "ctx", None)
                hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                try:
                    message = _our_voice(err, ctx)
                except Exception:  # another Click/Typer version's internals: its own message, as it is
                    message = err.format_message()
                error_line(message + hint)
                rv = err.exit_code
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


def _our_voice(err: Exception, ctx: Any) -> str:
    """A Click usage error in the voice of every other error line: lower case, no full stop, an unknown option or
    command with the one "did you mean" of :func:`methods.errors.unknown`, a missing option as ``CMD needs --X``."""
    kind = type(err).__name__
    param = getattr(err, "param", None)
    if kind == "NoSuchOption" and ctx is not None:
        options = [o for p in ctx.command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")]
        return f"unknown option {err.option_name!r}{did_you_mean(err.option_name, options)}"  # type: ignore[attr-defined]
    if kind == "NoSuchCommand" or (ctx is not None and str(err.format_message()).startswith("No such command")):
        name = getattr(err, "command_name", None) or str(err.format_message()).split("'")[1]
        commands = list(getattr(ctx.command, "commands", {})) if ctx is not None else []
        return str(unknown("command", name, commands))
    if kind == "MissingParameter" and param is not None and ctx is not None:
        needed = "/".join(param.opts) if param.param_type_name == "option" else str(param.name).upper()
        return f"{ctx.info_name} needs {needed}"
    message = str(err.format_message()).strip()
    if message[:1].isupper() and message[1:2].islower():
        message = message[0].lower() + message[1:]
    return message.removesuffix(".")


app = typer.Typer(
    name="diffbench",
    cls=_OneLineErrors,
    help="Knowledge-distillation benchmark: DiffKD, KD, DKD and FitNet on classification, detection and segmentation.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(value: bool) -> None:
    if value:
        from bench.tracking.version import diffbench_version, git_commit

        commit = git_commit()
        console.print(f"diffbench {diffbench_version()}" + (f" (commit {commit})" if commit != "unknown" else ""),
                      highlight=False)  # fmt: skip
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Knowledge-distillation benchmark: DiffKD, KD, DKD and FitNet on classification, detection and segmentation."""


app.command("run")(run.run)
app.command("train")(run.train)
app.command("tune")(tune.tune)
app.command("report")(report.report)
app.command("ui")(report.ui)
app.command("eval")(checkpoints.eval_cmd)
app.command("export")(checkpoints.export_cmd)
app.command("list")(listing.list_cmd)
app.command("doctor")(doctor.doctor)
app.command("speed")(speed.speed)


def main() -> None:  # pragma: no cover - console-script entry
    """The ``diffbench`` process: the command, then a quick end (:func:`_end`)."""
    try:
        app()
    except SystemExit as done:
        _end(done)
    _end(SystemExit(0))


def _end(done: SystemExit) -> None:  # pragma: no cover - console-script exit
    """End the process with ``done``'s code; quickly when a command loaded torch or handled an interrupt.

    Python's own shutdown after a command that loaded torch, MLflow and Ray takes seconds (4-7 s measured on 2 cores)
    with the signal handlers reset to the defaults: a grid's closing "in m:ss" was then seconds short of the process's
    wall time, a second Ctrl-C there killed the process by SIGINT instead of ending it in one line, and a SIGTERM
    during ``ray.init`` ended in an abort from Ray's exit hooks. Everything a command writes is written when it
    returns (runs marked, lock released, files closed), so the process stops Ray if it started one, flushes its
    streams and logs, and exits without that shutdown.
    """
    from bench.execute.signals import EXIT_INTERRUPTED, EXIT_TERMINATED

    code = 0 if done.code is None else done.code
    if isinstance(code, int) and (code in (EXIT_INTERRUPTED, EXIT_TERMINATED) or "torch" in sys.modules):
        import logging
        import os

        from bench.execute.signals import shutdown_ray

        try:
            shutdown_ray()
        finally:
            for stream in (sys.stdout, sys.stderr):
                stream.flush()
            logging.shutdown()
            os._exit(code)
    raise done


if __name__ == "__main__":  # pragma: no cover
    main()

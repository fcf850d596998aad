"""``diffbench report`` (MLflow runs → leaderboards) and ``diffbench ui`` (the MLflow UI on the same store).

Neither imports torch: a laptop can read a cluster's store.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.cli.options import console, err_console, refuse_file_as_output, user_errors
from bench.jobs.overrides import split_list
from methods.errors import UserError, unknown


def _report_filters(**given: Any) -> str:
    """The filters a user gave, for the "no runs" line (``--task detection --grid g1``)."""
    shown = [f"--{k.replace('_', '-')} {v}" for k, v in given.items() if v]
    return f" match {' '.join(shown)}" if shown else ""


@user_errors
def report(
    task: Annotated[str | None, typer.Option("--task", help="Only this task.")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", help="Only this data set.")] = None,
    pairs: Annotated[list[str] | None, typer.Option("--pairs", help="Only these teacher:student pairs.")] = None,
    methods: Annotated[
        list[str] | None, typer.Option("--methods", help="Only these method columns (a missing one shows as n=0).")
    ] = None,
    grid: Annotated[
        str | None, typer.Option("--grid", help="Only one grid: its parent run id, run name (latest) or grid hash.")
    ] = None,
    epoch: Annotated[str, typer.Option("--epoch", help="best | last")] = "best",
    metric: Annotated[
        str | None,
        typer.Option(
            "--metric",
            help="Rank on this metric instead of each task's primary one, e.g. --metric excess_nll (colorshapes-few's "
            "KL to the Bayes posterior; lower is better).",
        ),
    ] = None,
    vs: Annotated[
        str | None,
        typer.Option(
            "--vs",
            help="Also compare every method with this one (paired by seed where possible, else Welch), e.g. --vs dkd.",
        ),
    ] = None,
    published: Annotated[
        str,
        typer.Option(
            "--published", help="Published numbers: match (only beside runs of the paper's recipe) | always | never"
        ),
    ] = "match",
    reproduction: Annotated[
        bool,
        typer.Option(
            "--reproduction",
            help="Print the reproduction summary instead: k of N cells with a published number reproduced "
            "(the number inside the 95 % t-interval of our seeds' mean), then the worst misses.",
        ),
    ] = False,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="markdown | csv | html | latex | json (default: from --out's suffix, else a terminal table)",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write the report to this file (.md .csv .html .tex .json), not stdout."),
    ] = None,
    plot_path: Annotated[
        Path | None, typer.Option("--plot", help="Also write the figure (scores from zero, gains with 95 % CIs), PNG.")
    ] = None,
    ui_url: Annotated[
        str | None, typer.Option("--ui-url", help="MLflow UI address, e.g. http://127.0.0.1:5000: link runs.")
    ] = None,
    reference: Annotated[Path | None, typer.Option("--reference", help="Published numbers CSV.")] = None,
    output: Annotated[
        Path,
        typer.Option(
            "--output", "-o", help="Results folder of `diffbench run` (its MLflow store is read, never written)."
        ),
    ] = Path("results"),
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="MLflow server URI.")] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment name.")] = "diffbench",
    tuning: Annotated[
        bool,
        typer.Option(
            "--tuning",
            help="Show each `diffbench tune` search instead: trials, the best hold-out "
            "score after each trial, the winning values, the cost in device-hours.",
        ),
    ] = False,
    tune_run: Annotated[
        str | None, typer.Option("--tune", help="With --tuning: only this tune run (its run id or key).")
    ] = None,
) -> None:
    """Leaderboards from MLflow: mean ± std over seeds, gain over vanilla with 95 % CI and t-test, provenance.

    Reads the results folder -o/--output; prints a terminal table, or writes --out FILE (the format follows
    its suffix, or --format). HTML embeds its figure and goes to stdout without --out; nothing is written
    into the results folder.
    Exit code 2 with one error line when no run matches.
    """
    from bench import report as rep
    from bench.report.output import check_out_file, write_text
    from bench.tracking.store import check_server, default_tracking_uri, fail_fast_http

    page = "the page" if output.suffix.lower() in (".html", ".htm") else "the report"
    refuse_file_as_output("report", output, (*rep.SUFFIX_FORMATS, ".png"), page)
    fail_fast_http()
    for path in (out, plot_path):
        if path is not None:
            check_out_file(path)
    fmt = rep.format_for(out, fmt)
    if published not in rep.PUBLISHED_MODES:
        raise unknown("--published", published, rep.PUBLISHED_MODES)
    if epoch not in rep.EPOCHS:
        raise unknown("--epoch", epoch, rep.EPOCHS)
    if task is not None:
        from tasks.spec import task_spec

        task_spec(task)  # an unknown task: one line with a "did you mean"
    if metric is not None:  # before reading the store; the leaderboard checks it against the runs' tasks
        if task is not None:
            task_spec(task).check_metric(metric)
        elif metric not in (known := sorted({m for ms in rep.TASK_METRICS.values() for m in ms})):
            raise unknown("metric", metric, known)
    uri = tracking_uri or default_tracking_uri(output)
    check_server(uri)
    if tuning:
        _report_tuning(uri, experiment, tune_run, fmt, out)
        return
    ref = rep.load_reference(reference) if reference else rep.load_reference()
    runs = rep.load_runs(uri, experiment, task=task, dataset=dataset, grid=grid)
    if runs.empty:
        where = _report_filters(task=task, dataset=dataset, grid=grid)
        raise UserError(f"no diffbench job runs{where} in experiment {experiment!r} of {uri}")
    lb = rep.leaderboard(
        runs,
        epoch,
        task=task,
        dataset=dataset,
        pairs=split_list(pairs) or None,
        methods=split_list(methods) or None,
        reference=ref,
        vs=vs,
        published=published,
        metric=metric,
    )
    from bench.report.tuning import provenance_lines, shown_runs

    lb.notes.extend(provenance_lines(runs, shown_runs(lb.tidy)))
    if lb.empty:
        raise UserError(lb.empty_reason() + _report_filters(pairs=",".join(split_list(pairs)),
                                                            methods=",".join(split_list(methods))))  # fmt: skip
    if fmt is None:
        console.print(rep.to_rich(lb, ui_url=ui_url, reproduction=reproduction))
    else:
        text = rep.render(lb, fmt, ui_url=ui_url, reproduction=reproduction)
        if out is not None:
            write_text(out, text)
            err_console.print(f"wrote {out}")
        else:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
    if plot_path is not None:
        try:
            rep.plot(lb, plot_path)
        except OSError as err:
            raise UserError(f"cannot write --plot {str(plot_path)!r}: {err.strerror or err}") from None
        err_console.print(f"plot: {plot_path}")


def _report_tuning(uri: str, experiment: str, tune: str | None, fmt: str | None, out: Path | None) -> None:
    """``report --tuning``: every search of the store's tune runs (see :mod:`bench.report.tuning`)."""
    from bench.report import tuning
    from bench.report.load import load_kind
    from bench.report.output import write_text

    records = tuning.searches(load_kind(uri, experiment, "tune"), load_kind(uri, experiment, "trial"), tune)
    if not records:
        raise UserError(f"no `diffbench tune` search{' ' + tune if tune else ''} in experiment {experiment!r} of {uri}")
    if fmt is None:
        console.print(tuning.to_rich(records))
        return
    if fmt not in ("markdown", "json"):
        raise UserError(f"report --tuning writes markdown or json, not {fmt}")
    text = tuning.render_markdown(records) if fmt == "markdown" else tuning.render_json(records)
    if out is not None:
        write_text(out, text)
        err_console.print(f"wrote {out}")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


@user_errors
def ui(
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Results folder of `diffbench run` (its MLflow store).")
    ] = Path("results"),
    host: Annotated[str, typer.Option("--host", help="Interface to bind; 127.0.0.1 keeps it local.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to serve on.")] = 5000,
    tracking_uri: Annotated[str | None, typer.Option("--tracking-uri", help="Backend store URI.")] = None,
    experiment: Annotated[str, typer.Option("--experiment", help="MLflow experiment name.")] = "diffbench",
    open_browser: Annotated[bool, typer.Option("--open", help="Also open the runs page in a web browser.")] = False,
) -> None:
    """Serve the MLflow UI on the store `diffbench run` writes (bound to 127.0.0.1 by default).

    The server's own output goes to OUTPUT/logs/mlflow-ui.log. Once the server answers,
    prints the link to the runs table in diffbench's view: grid axes and scores as columns,
    newest first, runs grouped by setting (method, pair, data set) with seeds averaged.
    One error line (exit 2) if the server dies or does not answer within 5 minutes.
    Ctrl-C or SIGTERM stops the UI's whole process tree (exit 0 or 143).
    """
    from bench.tracking.store import default_tracking_uri
    from bench.tracking.ui_server import START_TIMEOUT_S, log_path, poll_url, runs_link, serve, ui_command

    uri = tracking_uri or default_tracking_uri(output)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise UserError(
            f"no MLflow store at {uri.removeprefix('sqlite:///')}; run `diffbench run` first or pass --output"
        )
    cmd = ui_command(uri, host, port, output)
    base = f"http://{host}:{port}"
    log = log_path(output)
    console.print(f"MLflow UI server log: {log}", highlight=False, soft_wrap=True)
    found: dict[str, str | None] = {}
    status = console.status(f"starting the MLflow UI on {base} …")

    def tick(waited: float) -> None:
        status.update(f"starting the MLflow UI on {base}: waiting for its first answer ({waited:.0f} s) …")

    def ready(waited: float) -> None:
        status.stop()
        console.print(f"MLflow UI on {base} (up after {waited:.0f} s; store {uri}); Ctrl-C stops it",
                      highlight=False, soft_wrap=True)  # fmt: skip
        link = found.get("link") or base
        console.print(f"runs: {link}", highlight=False, soft_wrap=True)
        if open_browser:
            import webbrowser

            webbrowser.open(link)

    status.start()
    try:
        code = serve(cmd, poll_url(host, port), log, ready, tick=tick, timeout_s=START_TIMEOUT_S,
                     prepare=lambda: found.update(link=runs_link(uri, experiment, base)))  # fmt: skip
    finally:
        status.stop()
    raise typer.Exit(code)

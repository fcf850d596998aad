"""``diffbench doctor``: every job folder of an output against its MLflow runs, without Ray, torch or training.

For each job (a folder under ``OUTPUT/jobs`` or a job run of the output's store) it says what is wrong and what
the next ``diffbench run`` of its grid would do about it, with the driver's own rules (:mod:`.integrity`):

* **whole** — the run finished and the folder's ``result.json`` and ``student.pt`` are whole;
* **damaged** / **missing** — the run finished but a file is damaged or gone: restored from the checkpoint or the
  run, or retrained into a superseding run when nothing holds the weights;
* **orphaned** — a folder without a run (finished on disk: logged without training; else resumed or trained);
* **duplicated** — several live runs of one job (the older are marked superseded);
* **stuck RUNNING** — a run whose driver died (closed as KILLED, the job resumed from its checkpoint);
* **failed** / **interrupted** — trained again, from the checkpoint where there is one.

It changes nothing: it only reads the folders and the store.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.execute.integrity import damage_of, last_checkpoint, plan_repair
from bench.execute.lock import live_holder
from bench.jobs.files import CONFIG, job_dir
from bench.tracking import schema as S
from bench.tracking.store import default_tracking_uri
from methods.errors import UserError, first_line

_HASH = re.compile(r"^[0-9a-f]{12}$")


@dataclass(frozen=True)
class Finding:
    """One job as the doctor sees it: its state, what is wrong, and what a re-run would do."""

    job_hash: str
    label: str
    state: str
    problem: str = ""
    action: str = ""

    @property
    def whole(self) -> bool:
        return self.state in ("whole", "running")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "whole": self.whole}


def _label(run: Any | None, workdir: Path) -> str:
    if run is not None and run.info.run_name:
        return run.info.run_name
    import json

    try:
        from bench.jobs.spec import JobSpec

        return JobSpec.from_dict(json.loads((workdir / CONFIG).read_text())).label
    except Exception:  # noqa: BLE001 - no readable record: the hash says which job
        return "?"


class _Store:
    """The output's job runs, read-only."""

    def __init__(self, output: Path, tracking_uri: str | None, experiment: str) -> None:
        from bench.tracking.store import check_tracking_uri, fail_fast_http

        if tracking_uri is None and not (output / "mlflow.db").is_file():
            raise UserError(f"no MLflow store in {output} (no mlflow.db; give --tracking-uri if it is elsewhere)")
        check_tracking_uri(tracking_uri)
        fail_fast_http()
        import logging

        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        self.uri = tracking_uri or default_tracking_uri(output)
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(experiment)
        except Exception as err:  # noqa: BLE001 - a store MLflow cannot read: one line
            raise UserError(f"MLflow tracking store {self.uri!r} is not usable: {first_line(err, 300)}") from None
        if exp is None:
            raise UserError(f"the MLflow store {self.uri!r} has no experiment {experiment!r}")
        self.experiment_id = exp.experiment_id
        owned = tracking_uri is None or tracking_uri == default_tracking_uri(output)
        self.runs: dict[str, list[Any]] = {}
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], S.job_filter(), max_results=1000, page_token=token,
                                           order_by=["attributes.start_time ASC"])  # fmt: skip
            for run in page:
                tags = run.data.tags
                mine = (owned and S.OUTPUT not in tags) or tags.get(S.OUTPUT) == str(output)
                if mine and tags.get(S.JOB_HASH) and tags.get(S.SUPERSEDED) != "true":
                    self.runs.setdefault(tags[S.JOB_HASH], []).append(run)
            token = page.token
            if not token:
                break

    def final_epoch(self, run_id: str) -> int | None:
        steps = [m.step for m in self.client.get_metric_history(run_id, "train/loss")]
        return max(steps) if steps else None

    def artifact_names(self, run_id: str) -> set[str]:
        try:
            return {Path(a.path).name for a in self.client.list_artifacts(run_id) if not a.is_dir}
        except Exception:  # noqa: BLE001 - an artifact store that is gone holds nothing
            return set()


def examine(output: Path, tracking_uri: str | None = None, experiment: str = S.EXPERIMENT) -> list[Finding]:
    """What is wrong with every job of ``output`` and what a re-run would do (see the module docstring)."""
    output = Path(output).expanduser().resolve()
    if not output.is_dir():
        raise UserError(f"--output {output} does not exist")
    store = _Store(output, tracking_uri, experiment)
    holder = live_holder(output)
    driver = holder.describe() if holder is not None else None
    folders = {p.name for p in (output / "jobs").glob("*") if p.is_dir() and _HASH.match(p.name)}
    findings = []
    for h in sorted(folders | set(store.runs)):
        runs = store.runs.get(h, [])
        findings.append(_examine_job(output, h, runs[-1] if runs else None, store, driver))
        if len(runs) > 1:
            findings.append(Finding(h, findings[-1].label, "duplicated", f"{len(runs)} live runs of this job",
                                    f"a re-run keeps the newest ({runs[-1].info.run_id}) and marks the "
                                    f"{len(runs) - 1} older superseded"))  # fmt: skip
    return findings


def _resume_action(wd: Path, h: str) -> str:
    ckpt = last_checkpoint(wd, h) if wd.is_dir() else None
    return f"resumes it from its checkpoint (epoch {ckpt.epoch})" if ckpt else "trains it from scratch"


def _examine_job(output: Path, h: str, run: Any | None, store: _Store, driver: str | None) -> Finding:
    wd = job_dir(output, h)
    label = _label(run, wd)
    damage = damage_of(wd, h)
    if run is None:
        if not damage:
            return Finding(h, label, "orphaned", "finished on disk, no MLflow run",
                           "a re-run of its grid logs it without training")  # fmt: skip
        return Finding(h, label, "orphaned", "an unfinished folder without an MLflow run",
                       f"a re-run of its grid {_resume_action(wd, h)}")  # fmt: skip
    status = run.info.status
    if status == "RUNNING":
        if driver:
            return Finding(h, label, "running", f"being trained by {driver}")
        return Finding(h, label, "stuck RUNNING", "its driver died",
                       "a re-run closes the run (KILLED) and " + ("logs it without training" if not damage
                                                                  else _resume_action(wd, h)))  # fmt: skip
    if status != "FINISHED":
        if not damage:
            return Finding(h, label, "unlogged", f"finished on disk, its run {status}",
                           "a re-run logs it without training")  # fmt: skip
        why = run.data.tags.get(S.FAILURE_REASON, "")
        state = "failed" if status == "FAILED" else "interrupted"
        return Finding(h, label, state, f"run {status}" + (f": {why[:200]}" if why else ""),
                       f"a re-run {_resume_action(wd, h)}")  # fmt: skip
    if not damage:
        return Finding(h, label, "whole")
    names: set[str] | None = None

    def has_artifact(name: str) -> bool:
        nonlocal names
        names = store.artifact_names(run.info.run_id) if names is None else names
        return name in names

    fix = plan_repair(wd, h, damage, store.final_epoch(run.info.run_id), has_artifact)
    state = "missing" if not wd.is_dir() else "damaged"
    if fix.retrain:
        action = f"a re-run retrains it into a run superseding {run.info.run_id}"
    elif fix.resume:
        action = "a re-run resumes it from its final checkpoint in the same run (no epoch trained)"
    else:
        action = "a re-run restores it without training"
    return Finding(h, label, state, fix.describe(), action)

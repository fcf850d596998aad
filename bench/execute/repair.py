"""Make a finished job's files whole again, as :func:`bench.execute.integrity.plan_repair` decided; the driver's side.

The student file is re-exported with the training loop's own record (:func:`bench.engine.checkpoint.export_from_
checkpoint`) or copied from the run's artifacts; ``result.json`` is rewritten from the run's summary and history.
Every restored file is checked again before the job counts as finished.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench.execute.integrity import FROM_ARTIFACTS, FROM_CHECKPOINT, FROM_RUN, FROM_SPEC, Repair, damage_of
from bench.jobs.files import CONFIG, RESULT, STUDENT, write_text_atomic
from bench.jobs.spec import JobSpec
from bench.tracking import schema
from bench.tracking.tracker import Tracker


def restore(repair: Repair, spec: JobSpec, workdir: Path, tracker: Tracker, run: Any) -> bool:
    """Carry out ``repair`` for ``spec``'s finished ``run``; whether the job's files are whole afterwards."""
    from bench.engine.checkpoint import export_from_checkpoint

    workdir.mkdir(parents=True, exist_ok=True)
    run_id = run.info.run_id
    for name, source in repair.steps:
        if source == FROM_CHECKPOINT:
            export_from_checkpoint(repair.checkpoint.path, spec, workdir / STUDENT, repair.checkpoint.num_classes)
        elif source == FROM_ARTIFACTS:
            if not _copy_artifact(tracker, run_id, name, workdir):
                return False
        elif source == FROM_RUN:
            write_text_atomic(workdir / RESULT, json.dumps(_result(spec, workdir, tracker, run, repair), indent=2))
        elif source == FROM_SPEC:
            write_text_atomic(workdir / CONFIG, json.dumps(spec.to_dict(), indent=2, default=str))
    return not damage_of(workdir, spec.job_hash)


def _copy_artifact(tracker: Tracker, run_id: str, name: str, workdir: Path) -> bool:
    """Download the run's artifact ``name`` next to ``workdir`` and move it in whole (never a half-copied file)."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix=".restore-") as tmp:
        path = tracker.download_artifact(run_id, name, Path(tmp))
        if path is None or not path.is_file():
            return False
        os.replace(path, workdir / name)
    return True


def _result(spec: JobSpec, workdir: Path, tracker: Tracker, run: Any, repair: Repair) -> dict[str, Any]:
    """The job's ``result.json`` as the loop wrote it: the run's summary, the history of the checkpoint (the exact
    rows) where it holds the final epoch, else the run's per-epoch metrics."""
    summary, history = tracker.finished_result(run.info.run_id)
    if repair.checkpoint is not None and repair.checkpoint.history:
        history = repair.checkpoint.history
    workers = run.data.tags.get(schema.WORKERS, "1")
    return {
        "job_hash": spec.job_hash,
        "status": "FINISHED",
        "metrics": summary,
        "history": history,
        "student_path": str(workdir / STUDENT),
        "workers": int(workers) if workers.isdigit() else 1,
    }

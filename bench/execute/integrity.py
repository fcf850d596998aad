"""Is a finished job whole? What a re-run would do to make it whole: the diagnosis, shared by the driver and
``diffbench doctor``, read without torch, Ray or training.

A job is finished when its MLflow run says so *and* its folder holds a readable ``result.json`` and a whole
``student.pt``, both of this job (:func:`damage_of`). A finished run's damaged or missing file is restored from
what is still there (:func:`plan_repair`), in this order:

* ``student.pt`` — re-exported from the job's last checkpoint (its final epoch holds exactly the weights the loop
  exported), else copied from the run's artifacts (the loop's own file, logged when the job finished), else (a
  checkpoint of an earlier version that lacks the class count) the job resumes from that final checkpoint, which
  trains no epoch and exports it again, in the same run;
* ``result.json`` — rewritten from the run (its summary metrics and per-epoch history; the checkpoint's history
  where it has the final epoch);
* ``config.json`` and ``train.log`` of a folder that went missing — from the job's spec and the run's artifacts.

When nothing holds the student's weights any more, the job trains again into a run that supersedes the old one.
Nothing is silently trusted: every repair or retraining is one line naming the job and what was done.

The logged MLflow model is the *best* epoch's student (``student_best.pt``), not the last one ``student.pt``
holds, so it is never used to restore ``student.pt``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.jobs.files import (
    CHECKPOINT,
    CONFIG,
    LOG,
    RESULT,
    STUDENT,
    STUDENT_BEST,
    previous_path,
    read_result,
    read_torch_file,
)
from bench.jobs.spec import JobSpec

#: Where a restored file comes from (the words of the repair line).
FROM_CHECKPOINT = "re-exported from its checkpoint"
FROM_ARTIFACTS = "copied from its MLflow run's artifacts"
FROM_RUN = "rewritten from its MLflow run"
FROM_SPEC = "rewritten from its job spec"


def student_problem(path: Path, job_hash: str) -> str | None:
    """What is wrong with a job's exported student file (``student.pt``), or ``None`` when it is whole and the job's.

    ``missing``, ``damaged (...)``, ``not a student file``, or ``of job <other hash>`` (a file copied from another
    job folder). The job a file records is compared by hash when this version can read its record; a record it
    cannot read (written by a newer version) is not held against the file.
    """
    obj, problem = read_torch_file(path)
    if problem:
        return problem
    if not isinstance(obj, dict) or "student" not in obj:
        return "not a student file"
    recorded = obj.get("job")
    if isinstance(recorded, dict):
        try:
            other = JobSpec.from_dict(recorded).job_hash
        except Exception:  # noqa: BLE001 - a record of another version: cannot tell, trust the folder
            return None
        if other != job_hash:
            return f"of job {other}"
    return None


def result_problem(workdir: Path, job_hash: str) -> str | None:
    """What is wrong with a job's ``result.json``, or ``None`` when it is readable and the job's."""
    path = Path(workdir) / RESULT
    if not path.is_file():
        return "missing"
    result = read_result(workdir)
    if result is None:
        return "unreadable"
    if result.get("job_hash") not in (None, job_hash):
        return f"of job {result['job_hash']}"
    return None


@dataclass(frozen=True)
class Damage:
    """What is wrong with a job folder's two files that make a job finished (``None``: whole)."""

    result: str | None = None
    student: str | None = None

    def __bool__(self) -> bool:
        return bool(self.result or self.student)

    def describe(self) -> str:
        parts = [f"{name} {why}" for name, why in (("result.json", self.result), ("student.pt", self.student)) if why]
        return ", ".join(parts)


def damage_of(workdir: Path, job_hash: str) -> Damage:
    """Check ``result.json`` (readable, of this job) and ``student.pt`` (whole, a student file of this job)."""
    return Damage(result_problem(workdir, job_hash), student_problem(Path(workdir) / STUDENT, job_hash))


@dataclass(frozen=True)
class Checkpoint:
    """What a job's training checkpoint says, read without torch: its path, epoch, class count and history."""

    path: Path
    epoch: int
    num_classes: int | None
    history: list[dict[str, Any]]


def last_checkpoint(workdir: Path, job_hash: str) -> Checkpoint | None:
    """The job's newest whole checkpoint (``checkpoint.pt``, else ``checkpoint.prev.pt``) of this job, or ``None``."""
    for path in (Path(workdir) / CHECKPOINT, previous_path(Path(workdir) / CHECKPOINT)):
        state, problem = read_torch_file(path)
        if problem or not isinstance(state, dict) or "student" not in state or "epoch" not in state:
            continue
        spec = state.get("spec")
        try:
            if isinstance(spec, dict) and JobSpec.from_dict(spec).job_hash != job_hash:
                continue
        except Exception:  # noqa: BLE001 - a record of another version: trust the folder
            pass
        num_classes = state.get("num_classes")
        if not isinstance(num_classes, int):  # checkpoints of earlier versions: the best student file records it
            best, _ = read_torch_file(Path(workdir) / STUDENT_BEST)
            num_classes = best.get("num_classes") if isinstance(best, dict) else None
        history = [{k: v for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}
                   for row in state.get("history") or [] if isinstance(row, dict)]  # fmt: skip
        return Checkpoint(path, int(state["epoch"]), num_classes if isinstance(num_classes, int) else None, history)
    return None


@dataclass
class Repair:
    """How a finished job's files are made whole: ``(file, where from)`` steps, or why it must train again."""

    damage: Damage
    steps: list[tuple[str, str]] = field(default_factory=list)
    #: why the job must run again from its final checkpoint (no epoch trained), in its finished run.
    resume: str | None = None
    #: why the job must train again into a superseding run (nothing holds its weights).
    retrain: str | None = None
    checkpoint: Checkpoint | None = None

    def describe(self) -> str:
        """``student.pt missing: re-exported from its checkpoint (epoch 2); result.json ...`` (the repair line)."""
        if self.retrain or self.resume:
            return self.retrain or self.resume or ""
        parts = []
        for name, source in self.steps:
            why = {"result.json": self.damage.result, "student.pt": self.damage.student}.get(name) or "missing"
            where = f" (epoch {self.checkpoint.epoch})" if source == FROM_CHECKPOINT and self.checkpoint else ""
            parts.append(f"{name} {why}: {source}{where}")
        return "; ".join(parts)


def plan_repair(workdir: Path, job_hash: str, damage: Damage, final_epoch: int | None,
                has_artifact: Callable[[str], bool]) -> Repair:  # fmt: skip
    """What a re-run does for a job whose MLflow run finished but whose files are ``damage``d.

    Args:
        workdir: the job's folder (it may be gone).
        job_hash: the job.
        damage: :func:`damage_of` the folder.
        final_epoch: the last epoch the finished run logged (``None``: unknown).
        has_artifact: whether the run holds an artifact of this name.
    """
    repair = Repair(damage)
    workdir = Path(workdir)
    ckpt = last_checkpoint(workdir, job_hash) if workdir.is_dir() else None
    final = ckpt is not None and final_epoch is not None and ckpt.epoch == final_epoch
    repair.checkpoint = ckpt if final else None
    if damage.student:
        if final and ckpt.num_classes is not None:
            repair.steps.append((STUDENT, FROM_CHECKPOINT))
        elif has_artifact(STUDENT):
            repair.steps.append((STUDENT, FROM_ARTIFACTS))
        elif final:  # a checkpoint of an earlier version, without the class count the student file records
            repair.resume = (f"student.pt {damage.student}: the job resumes from its final checkpoint (epoch "
                             f"{ckpt.epoch}) to export it again, in the same run")  # fmt: skip
            return repair
        else:
            repair.retrain = (f"student.pt {damage.student} and neither its last checkpoint nor its MLflow run holds "
                              "the weights: it trains again")  # fmt: skip
            return repair
    if damage.result:
        repair.steps.append(("result.json", FROM_RUN))
    if not (workdir / CONFIG).is_file():
        repair.steps.append((CONFIG, FROM_SPEC))
    if not (workdir / LOG).is_file() and has_artifact(LOG):
        repair.steps.append((LOG, FROM_ARTIFACTS))
    return repair

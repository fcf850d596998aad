"""The driver's book-keeping of one ``diffbench run``: what to skip, which run a job logs into, progress.

Every executor drives a :class:`GridRun` through the same events (:mod:`.events`: begin, epoch, finished,
failed; plus start and step, which only the driver sees); it is the grid's one MLflow writer.

**One live run per job hash.** A job's MLflow run is found by its hash and *reused* whenever the job
continues from its checkpoint (a resume, a retry, a re-export of a teacher whose ``student.pt`` was
deleted); when the job has to train again from scratch while its old run already holds epochs (the
``jobs/`` folder was deleted, every checkpoint copy was corrupt), the old run is *superseded*: tagged
``diffbench.superseded=true`` with ``diffbench.superseded_by``, and a new run takes its place. Reports
ignore superseded runs. Older duplicates (left by earlier versions) are superseded when a grid meets them.

**Files that lie.** A finished job is whole or it is not finished (:mod:`.integrity`): before a job counts as
done its ``result.json`` must read and its ``student.pt`` be whole, both of this job. A finished run's damaged or
missing file is restored from its checkpoint or its MLflow run (:mod:`.repair`), or the job retrains into a
superseding run, each said in one line; an unfinished job's damaged file counts as missing (the job resumes from its
final checkpoint and rewrites it, no epoch trained twice). A corrupt checkpoint is the job's to handle
(:func:`bench.engine.checkpoint.load_checkpoint`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group

from bench import clock
from bench.execute import events as ev
from bench.execute.integrity import damage_of, plan_repair
from bench.execute.job_state import JobState
from bench.execute.lock import OutputLock
from bench.execute.progress import GridProgress
from bench.execute.signals import raise_pending
from bench.jobs.files import (
    RESULT,
    STUDENT,
    StorageFull,
    describe_os_error,
    is_write_error,
    job_dir,
    previous_path,
    read_result,
)
from bench.jobs.spec import JobSpec
from bench.tracking import schema
from bench.tracking.tracker import Tracker
from methods.errors import first_line


@dataclass
class GridRun:
    """Driver-side state of one ``diffbench run``: tracking, skipping, progress."""

    jobs: list[JobSpec]
    output: Path
    tracker: Tracker
    device: str
    console: Console = field(default_factory=Console)
    parent_id: str | None = None
    lock: OutputLock | None = None
    states: dict[str, JobState] = field(default_factory=dict)
    primary: dict[str, str] = field(default_factory=dict)
    to_recover: list[JobState] = field(default_factory=list)
    #: a line shown under the view (e.g. jobs waiting for resources).
    notice: str = ""
    #: the error that must end the grid (a store write that failed inside a Tune callback).
    fatal: BaseException | None = None
    #: the grid's fully resolved configuration (YAML), written next to its jobs and to its parent run.
    config_text: str | None = None
    #: the command that started the grid (``run --task detection ...``), for the parent run's name.
    command: str = "run"
    #: the GPU share of each job (``--gpus-per-job``); below 1, jobs are packed on a GPU.
    gpus_per_job: float = 0.0
    #: log each finished job's best student as an MLflow model (:mod:`.model_logging`).
    log_models: bool = False
    #: data-parallel workers per job (recorded on each job's run, not part of its identity).
    workers: int = 1
    #: share finished teachers across output folders (:mod:`.teacher_cache`).
    teacher_cache: bool = False
    _packing_warned: bool = False
    progress: GridProgress | None = None

    def __post_init__(self) -> None:
        from tasks.spec import task_spec

        self.output = Path(self.output).resolve()
        self.progress = GridProgress(self, self.console)
        self.states = {j.job_hash: JobState(j) for j in self.jobs}
        self.primary = {j.task: task_spec(j.task).primary_metric for j in self.jobs}
        self._existing = self.tracker.job_runs([j.job_hash for j in self.jobs], supersede_duplicates=True)

    # -- planning ----------------------------------------------------------------------------
    def _finished_on_disk(self, st: JobState) -> bool:
        """Whether the job's own files say it finished: a readable ``result.json`` and a whole ``student.pt``, both
        of this job (:func:`~.integrity.damage_of`). A damaged file counts as missing, with a line saying so: the job
        runs again, resumes from its final checkpoint and rewrites it (no epoch is trained twice)."""
        wd = job_dir(self.output, st.spec.job_hash)
        if (not (wd / RESULT).is_file() or not (wd / STUDENT).is_file()) and self._from_cache(st, wd):
            return True
        if not wd.is_dir():
            return False
        damage = damage_of(wd, st.spec.job_hash)
        if damage.result and damage.result != "missing":
            self.warn(f"{wd / RESULT} is {damage.result}; the job will rewrite it from its checkpoint")
        if damage.student and damage.student != "missing" and not damage.result:
            self.warn(f"{wd / STUDENT} is {damage.student}; the job will export it again from its checkpoint")
        return not damage

    def _whole(self, st: JobState, run: Any) -> bool:
        """Whether a job whose run finished is whole, after restoring what can be restored (one line per job).

        See :mod:`.integrity`: a damaged or missing file is restored from the checkpoint or the run. ``False`` when
        the job must run again: from its final checkpoint in the same run (``st.reuse``), or, when nothing holds the
        student's weights, from scratch into a superseding run (``st.supersede``); said in one line either way.
        """
        h = st.spec.job_hash
        wd = job_dir(self.output, h)
        damage = damage_of(wd, h)
        if not damage:
            return True
        run_id = run.info.run_id
        epochs = self.tracker.logged_epochs(run_id)
        names: set[str] | None = None

        def has_artifact(name: str) -> bool:
            nonlocal names
            names = self.tracker.artifact_names(run_id) if names is None else names
            return name in names

        fix = plan_repair(wd, h, damage, max(epochs) if epochs else None, has_artifact)
        label = f"{st.spec.label} ({h})"
        if fix.resume:
            self.note("repairing", f"{label}: {fix.resume}")
            st.reuse = run
            return False
        if not fix.retrain:
            from bench.execute.repair import restore

            try:
                if restore(fix, st.spec, wd, self.tracker, run):
                    self.note("repaired", f"{label}: {fix.describe()}")
                    return True
                why = "a restored file was not whole either"
            except Exception as err:  # noqa: BLE001 - a source that lied: retrain, unless the disk is the problem
                if is_write_error(err):
                    raise StorageFull(
                        f"cannot restore the files of {label} in {wd}: {describe_os_error(err)}; "
                        "free space (or make it writable) and run the same command again"
                    ) from None
                why = f"restoring it failed ({type(err).__name__}: {first_line(err, 200)})"
            fix.retrain = f"{damage.describe()} and {why}: it trains again"
        self.note("retraining", f"{label}: {fix.retrain}; its run {run_id} will be superseded")
        st.supersede = run
        return False

    def _from_cache(self, st: JobState, wd: Path) -> bool:
        """A teacher another output folder trained with the same hash: its files copied here (then logged)."""
        if not (self.teacher_cache and st.spec.role == "teacher"):
            return False
        from bench.execute import teacher_cache

        try:
            st.cached_from = teacher_cache.restore(st.spec.job_hash, wd)
        except OSError as e:
            self.warn(f"teacher {st.spec.label}: the teacher cache could not be read ({e}); it trains here")
            return False
        if st.cached_from is not None:
            self.console.print(f"teacher {st.spec.label} ({st.spec.job_hash}): reused from {st.cached_from}",
                               highlight=False, soft_wrap=True)  # fmt: skip
        return st.cached_from is not None

    def _to_cache(self, spec: JobSpec) -> None:
        if not (self.teacher_cache and spec.role == "teacher"):
            return
        from bench.execute import teacher_cache

        try:
            teacher_cache.store(spec.job_hash, job_dir(self.output, spec.job_hash))
        except OSError as e:
            self.warn(f"teacher {spec.label}: not kept in the teacher cache ({e})")

    def plan(self, rerun: bool = False) -> list[JobSpec]:
        """Mark finished jobs as skipped; return the jobs to run, each knowing which run it logs into.

        Jobs finished on disk whose MLflow run is missing or unfinished (the driver died before it
        logged the end) are set aside in :attr:`to_recover`: :meth:`recover` logs them without training.
        With ``rerun`` every job trains again from scratch: its folder is kept aside as
        ``jobs/<hash>.superseded-<time>`` and its run is superseded by the new one.
        """
        todo = []
        self.to_recover = []
        if rerun:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for h, st in self.states.items():
                wd = job_dir(self.output, h)
                if wd.exists():
                    wd.rename(wd.with_name(f"{h}.superseded-{stamp}"))
                st.supersede = self._existing.get(h)
                todo.append(st.spec)
            return todo
        for h, st in self.states.items():
            run = self._existing.get(h)
            if run is not None and run.info.status == "FINISHED":
                # A finished job is whole or it is not finished: its files are checked, restored, or it retrains.
                if self._whole(st, run):
                    st.status, st.run_id = "skipped", run.info.run_id
                else:
                    todo.append(st.spec)
                continue
            on_disk = self._finished_on_disk(st)
            if on_disk:
                self.to_recover.append(st)
            else:
                self._choose_run(st, run)
                todo.append(st.spec)
        return todo

    def _choose_run(self, st: JobState, run: Any | None) -> None:
        """Reuse ``run`` when the job continues from a checkpoint (or the run holds no epoch), else supersede it."""
        if run is None:
            return
        ckpt = job_dir(self.output, st.spec.job_hash) / "checkpoint.pt"
        if ckpt.is_file() or previous_path(ckpt).is_file() or not self.tracker.logged_epochs(run.info.run_id):
            st.reuse = run
        else:
            st.supersede = run

    def claim(self, todo: list[JobSpec]) -> list[JobSpec]:
        """Claim every job to run for this driver; a job another live driver holds is failed with its name."""
        if self.lock is None:
            return todo
        mine = []
        for spec in todo:
            other = self.lock.claim(job_dir(self.output, spec.job_hash))
            if other is None:
                mine.append(spec)
            else:
                self.on_fail(spec, f"being trained by another diffbench driver ({other.describe()})")
        return mine

    def recover(self) -> None:
        """Log the jobs :meth:`plan` found finished on disk only (epochs the run lacks, summary, artifacts)."""
        for st in self.to_recover:
            wd = job_dir(self.output, st.spec.job_hash)
            result = read_result(wd)
            run = self._existing.get(st.spec.job_hash)
            st.run_id = self.tracker.start_job(st.spec, self.parent_id, self.device, existing=run, workers=self.workers)
            if st.cached_from is not None:
                self.tracker.tag(st.run_id, schema.TEACHER_CACHE, str(st.cached_from))
            self._fill_missing_epochs(st, result)
            self.tracker.finish_job(st.run_id, result["metrics"], wd, self._model_logger(wd))
            if st.cached_from is None:
                self._to_cache(st.spec)
            st.status = "skipped"

    # -- events ------------------------------------------------------------------------------
    def handle(self, spec: JobSpec, event: ev.Event) -> None:
        """One event of a running job (:mod:`.events`), from whichever executor runs it.

        An interrupt a finaliser swallowed is raised here (:func:`~.signals.raise_pending`): the grid stops instead
        of training on.
        """
        raise_pending()
        if isinstance(event, ev.Begin):
            self.on_begin(spec, event.resumed_after)
        elif isinstance(event, ev.Step):
            self.on_step(spec, event.epoch, event.step, event.steps, event.loss)
        elif isinstance(event, ev.Epoch):
            self.on_epoch(spec, event.epoch, event.metrics)
        elif isinstance(event, ev.Finished):
            self.on_finish(spec, event.summary)
        else:
            self.on_fail(spec, event.reason, storage=event.storage)

    def on_start(self, spec: JobSpec) -> None:
        raise_pending()
        st = self.states[spec.job_hash]
        st.attempts += 1
        if st.run_id is None:
            if st.supersede is not None:
                self._replace_run(st, st.supersede)
            else:
                st.run_id = self.tracker.start_job(spec, self.parent_id, self.device, st.reuse, workers=self.workers)
                if st.reuse is not None:
                    st.logged = self.tracker.logged_epochs(st.run_id)
        st.status, st.since = "running", clock.now()
        st.t_start = st.t_epoch = clock.now()
        st.epoch_times, st.t_end = [], None
        self.progress.job_started(st)

    def _replace_run(self, st: JobState, old: Any) -> None:
        st.run_id = self.tracker.start_job(st.spec, self.parent_id, self.device, workers=self.workers)
        self.tracker.supersede(old.info.run_id, st.run_id)
        st.supersede, st.reuse, st.logged = None, None, set()

    def on_begin(self, spec: JobSpec, done: int) -> None:
        """The job starts training after epoch ``done`` (0: from scratch).

        A run that already holds epochs of a job now starting from scratch (every checkpoint copy was
        unreadable) would mix two trainings: it is superseded by a fresh run.
        """
        st = self.states[spec.job_hash]
        if st.run_id is None:
            self.on_start(spec)
        st.t_epoch, st.epoch = clock.now(), done
        if done:
            st.resumed_from = done
            self.progress.job_resumed(st)
        if done == 0 and st.logged:
            old = self.tracker.get_run(st.run_id)
            self._replace_run(st, old)
            self.warn(f"{spec.label}: restarted from scratch; its earlier run {old.info.run_id} is superseded")

    def on_epoch(self, spec: JobSpec, epoch: int, metrics: dict[str, Any]) -> None:
        st = self.states[spec.job_hash]
        if st.run_id is None:
            self.on_start(spec)
        st.epoch = epoch
        key = f"val/{self.primary[spec.task]}"
        if key in metrics:
            st.metric = float(metrics[key])
        if isinstance(metrics.get("train/loss"), int | float):
            st.loss = float(metrics["train/loss"])
        now = clock.now()
        if st.t_epoch is not None:
            st.epoch_times.append(now - st.t_epoch)
        st.t_epoch, st.step = now, 0
        if epoch not in st.logged:
            self.tracker.log_epoch(st.run_id, epoch, epoch_metrics(metrics))
            st.logged.add(epoch)
        self.progress.job_epoch(st)
        self.check_packing(metrics)

    def check_packing(self, metrics: dict[str, Any]) -> None:
        """Warn once when jobs packed on one GPU (``--gpus-per-job`` < 1) measure more memory than it has.

        Ray shares a GPU by bookkeeping only; the memory is the user's to fit. The first epoch's measured
        peak of a job times the jobs per GPU is compared with the device's memory.
        """
        peak, total = metrics.get("peak_mem_mb"), metrics.get("device_mem_mb")
        if self._packing_warned or not (0 < self.gpus_per_job < 1) or not peak or not total:
            return
        packed = int(1 / self.gpus_per_job + 1e-9)
        if peak * packed > 0.95 * total:
            fit = max(1, int(0.95 * total // peak))
            self._packing_warned = True
            self.warn(f"a job peaks at {peak:.0f} MiB of GPU memory: {packed} per GPU (--gpus-per-job "
                      f"{self.gpus_per_job:g}) need {peak * packed:.0f} of {total:.0f} MiB and may run out; "
                      f"use --gpus-per-job {1 / fit:.3g} ({fit} per GPU)")  # fmt: skip

    def on_step(self, spec: JobSpec, epoch: int, step: int, steps: int, loss: float) -> None:
        """Progress inside an epoch (jobs running in this process report every step)."""
        raise_pending()
        st = self.states[spec.job_hash]
        st.step, st.steps = step, steps
        if loss == loss:  # not NaN
            st.loss = loss

    def on_finish(self, spec: JobSpec, summary: dict[str, float]) -> None:
        st = self.states[spec.job_hash]
        if st.run_id is None:
            self.on_start(spec)
        wd = job_dir(self.output, spec.job_hash)
        self._fill_missing_epochs(st, read_result(wd))
        self.tracker.finish_job(st.run_id, summary, wd, self._model_logger(wd))
        self._to_cache(spec)
        st.status, st.since = "finished", clock.now()
        st.t_end = clock.now()
        key = f"best_{self.primary[spec.task]}"
        if isinstance(summary.get(key), int | float):
            st.metric = float(summary[key])
        self._unclaim(spec)
        self.progress.job_finished(st)

    def _fill_missing_epochs(self, st: JobState, result: dict[str, Any] | None) -> None:
        """Log epochs the run lacks from the job's own history (``result.json``).

        An epoch is checkpointed before it is reported, so if the driver died between the two, the
        resumed job starts after it and the run would never get it: the finished job's history fills the gap.
        """
        if result is None:
            return
        st.logged = self.tracker.logged_epochs(st.run_id)
        for row in result["history"]:
            if int(row["epoch"]) not in st.logged:
                self.tracker.log_epoch(st.run_id, int(row["epoch"]), epoch_metrics(row))
                st.logged.add(int(row["epoch"]))

    def on_fail(self, spec: JobSpec, reason: str, storage: bool = False) -> None:
        """Record the job as failed; with ``storage`` (it could not write its files) also end the grid."""
        st = self.states[spec.job_hash]
        if st.run_id is None:
            self.on_start(spec)
        if storage:  # the job can resume after a re-run: leave its run resumable rather than FAILED
            st.status = "running"
            raise StorageFull(reason)
        st.status, st.reason, st.since = "failed", reason, clock.now()
        st.t_end = clock.now()
        self.tracker.fail_job(st.run_id, reason, job_dir(self.output, spec.job_hash))
        self._unclaim(spec)
        self.progress.job_failed(st)

    def _unclaim(self, spec: JobSpec) -> None:
        if self.lock is not None:
            self.lock.unclaim(job_dir(self.output, spec.job_hash))

    def kill_running(self) -> None:
        """Mark running jobs' runs ``KILLED`` (Ctrl-C, SIGTERM): a re-run resumes them into the same runs."""
        for st in self.states.values():
            if st.status == "running" and st.run_id:
                self.tracker.kill(st.run_id)

    def teacher_failed(self, spec: JobSpec) -> str | None:
        """The reason a student cannot run because its teacher job failed, else None."""
        if spec.teacher_ref and spec.teacher_ref.startswith("job:"):
            t = self.states.get(spec.teacher_ref[4:])
            if t is not None and t.status == "failed":
                return f"teacher job {t.spec.label} ({t.spec.job_hash}) failed: {t.reason}"
        return None

    def _model_logger(self, workdir: Path) -> Any:
        """What logs a finished job's best student to its run (``None`` with ``--no-log-model``)."""
        if not self.log_models:
            return None
        from bench.execute.model_logging import log_model

        return lambda run_id: log_model(run_id, workdir, self.tracker.uri, warn=self.warn)

    def warn(self, message: str) -> None:
        self.note("warning:", message)

    def note(self, what: str, message: str) -> None:
        """One line: ``what`` (``warning:``, ``repaired``, ``retraining``) and the message, never wrapped."""
        from rich.markup import escape

        self.console.print(f"[yellow]{what}[/] {escape(message)}", highlight=False, soft_wrap=True)

    # -- view --------------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        out = {k: 0 for k in ("finished", "skipped", "running", "failed", "queued")}
        for st in self.states.values():
            out[st.status] += 1
        return out

    def view(self) -> Group:
        """The live table (see :mod:`bench.execute.progress`)."""
        return self.progress.render()


def epoch_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The per-epoch series of a job's metrics (``train/*``, ``val/*``, ``lr``, ``epoch_time_s``)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if (k.startswith(schema.EPOCH_PREFIXES) or k in schema.EPOCH_KEYS) and isinstance(v, int | float)
    }


def stages(jobs: list[JobSpec]) -> list[list[JobSpec]]:
    """The grid's jobs in the order they can run: teacher jobs, then students (which read the teachers' weights)."""
    teachers = [j for j in jobs if j.role == "teacher"]
    students = [j for j in jobs if j.role != "teacher"]
    return [s for s in (teachers, students) if s]

"""MLflow tracking: one parent run per ``diffbench run``, one child run per job, keyed by job hash.

There is exactly **one writer**: the driver process. Ray workers never touch MLflow; their per-epoch
results reach the driver through Ray Tune's result stream and a Tune callback logs them (see
``bench.execute.ray_tune``). So many concurrent jobs cannot lock the SQLite store or interleave writes, and a
remote tracking server sees one client.

Default store: ``sqlite:///<output>/mlflow.db`` with artifacts in ``<output>/mlartifacts`` (absolute
paths: Ray runs trials in their own working directory).

The names of every tag, param, metric and artifact are in :mod:`bench.tracking.schema`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.jobs.compat import identity_fields
from bench.jobs.spec import JobSpec
from bench.tracking import schema as S
from bench.tracking.store import check_server, default_tracking_uri, fail_fast_http
from bench.tracking.version import diffbench_version, git_commit
from methods.errors import UserError, first_line


def grid_hash(job_hashes: list[str]) -> str:
    """A grid's identity: 12 hex digits over its sorted job hashes."""
    import hashlib

    return hashlib.sha1(",".join(sorted(job_hashes)).encode()).hexdigest()[:12]


#: Recipe fields that say how a job computes, not what it trains: a preset is matched on the others (the
#: report states the precision next to the preset).
_HOW_FIELDS = {"num_workers", "eval_batch_size", "precision", "channels_last", "compile", "data_pipeline", "sync_bn"}


def recipe_preset(spec: JobSpec) -> str:
    """The name of the task's recipe preset this job's training recipe equals, else ``custom``.

    Compared on every field but the speed settings (:data:`_HOW_FIELDS`), which a preset leaves to the device.
    Reports show a published number only beside runs of the recipe the paper used.
    """
    from tasks.spec import task_spec

    task = task_spec(spec.task)
    mine = {k: v for k, v in spec.recipe.items() if k not in _HOW_FIELDS}
    recipe = task.teacher_recipe if spec.role == "teacher" else task.recipe  # teachers may train longer
    for name in task.presets:
        try:
            ref = recipe(spec.dataset, spec.student, name).to_dict()
        except Exception:  # noqa: BLE001 - a preset that does not apply to this dataset
            continue
        if {k: v for k, v in ref.items() if k not in _HOW_FIELDS} == mine:
            return name
    return "custom"


def _chunks(items: list[Any], n: int) -> list[list[Any]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


class Tracker:
    """The single MLflow writer of a grid. Uses ``MlflowClient`` with explicit run ids (no global state).

    Args:
        output: the grid's output folder (default store and artifact root live there).
        tracking_uri: a remote server (``http://host:5000``) or any MLflow URI; default: the SQLite file.
        experiment: experiment name.
    """

    def __init__(self, output: Path, tracking_uri: str | None = None, experiment: str = S.EXPERIMENT) -> None:
        fail_fast_http()
        check_server(tracking_uri or "")
        import logging

        import mlflow
        from mlflow.tracking import MlflowClient

        for name in ("mlflow", "alembic"):  # schema-migration chatter on a new store
            logging.getLogger(name).setLevel(logging.WARNING)
        # A failed write is logged there with a traceback *and* raised; we report the raised one in one line.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

        self.output = Path(output).resolve()
        self.output.mkdir(parents=True, exist_ok=True)
        self.uri = tracking_uri or default_tracking_uri(self.output)
        self._mlflow = mlflow
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                artifacts = None if tracking_uri else (self.output / "mlartifacts").as_uri()
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifacts)
            else:
                self.experiment_id = exp.experiment_id
        except Exception as err:  # noqa: BLE001 - connection errors come in many types
            from bench.jobs.files import describe_os_error, is_write_error

            if is_write_error(err):
                raise UserError(f"MLflow store {self.uri!r} cannot be written: {describe_os_error(err)}") from None
            first = first_line(err)
            raise UserError(f"MLflow tracking store {self.uri!r} is not usable: {first[:300]}") from None

    # -- grid --------------------------------------------------------------------------------
    def start_grid(
        self, name: str, tags: dict[str, str], job_hashes: list[str], adopt: str | None = None,
        config_text: str | None = None,
    ) -> str:  # fmt: skip
        """The grid's parent run (a new one, or the stale one of an earlier run of this grid, ``adopt``).

        Tags: ``grid_hash`` (the grid's identity: its sorted job hashes), ``diffbench.output``; artifact
        ``grid_jobs.json``: the grid's job hashes, so ``diffbench report --grid`` finds jobs that an earlier
        run of the same grid finished (their runs have that run as parent).
        """
        tags = {
            S.KIND: S.KIND_GRID,
            S.GIT_COMMIT: git_commit(),
            S.VERSION: diffbench_version(),
            S.GRID_HASH: grid_hash(job_hashes),
            S.OUTPUT: str(self.output),
            **tags,
        }
        if adopt is not None:
            self.client.update_run(adopt, status="RUNNING")
            for k, v in tags.items():
                self.client.set_tag(adopt, k, v)
            run_id = adopt
        else:
            run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        self.mark_ui([run_id])
        self.client.log_text(run_id, json.dumps(sorted(job_hashes)), S.GRID_JOBS_ARTIFACT)
        if config_text:
            # The resolved configuration, as `diffbench run --config` reads it back: in the run and the output.
            self.client.log_text(run_id, config_text, S.GRID_CONFIG_ARTIFACT)
            folder = self.output / "grids"
            folder.mkdir(exist_ok=True)
            (folder / f"{tags[S.GRID_HASH]}.yaml").write_text(config_text, encoding="utf-8")
        return run_id

    def close_stale(self, job_hashes: list[str]) -> str | None:
        """Close what a dead driver of this output folder left ``RUNNING``; return a parent run to adopt.

        Called while holding the output lock, so no live driver writes into this output: every
        ``RUNNING`` grid or job run of it is stale. A stale grid run of the *same* grid (same
        ``grid_hash``) is adopted (the re-run continues it); others are ended as ``KILLED`` with a
        ``diffbench.closed`` tag. Job runs are ended as ``KILLED`` (a later grid resumes into them).
        On a shared tracking server only runs tagged with this output folder are touched.
        """
        default_store = self.uri == default_tracking_uri(self.output)
        adopt = None
        want = grid_hash(job_hashes)
        for run in self._search("attributes.status = 'RUNNING'"):
            tags = run.data.tags
            owned = tags.get(S.OUTPUT) == str(self.output) or (default_store and S.OUTPUT not in tags)
            if not owned:
                continue
            if tags.get(S.KIND) == S.KIND_GRID and adopt is None and tags.get(S.GRID_HASH) == want:
                adopt = run.info.run_id
                continue
            self.client.set_tag(run.info.run_id, S.CLOSED, "its driver died; closed by a later run")
            self.client.set_terminated(run.info.run_id, "KILLED")
        return adopt

    def search_runs(self, filter_string: str) -> list[Any]:
        """Every run of the experiment that matches an MLflow filter (all pages)."""
        return self._search(filter_string)

    def _search(self, filter_string: str) -> list[Any]:
        out, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, max_results=1000, page_token=token)
            out += list(page)
            token = page.token
            if not token:
                return out

    def end_grid(self, run_id: str, failed: int, finished: int) -> None:
        self.client.log_metric(run_id, "jobs_failed", failed)
        self.client.log_metric(run_id, "jobs_finished", finished)
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def mark_ui(self, parent_runs: list[str]) -> None:
        """Let the MLflow UI open on the runs table with this grid expanded (see :mod:`bench.tracking.ui_view`)."""
        from bench.tracking.ui_view import mark_experiment
        from tasks.spec import task_names, task_spec

        metrics = [task_spec(t).primary_metric for t in task_names()]
        mark_experiment(self.client, self.experiment_id, metrics, parent_runs)

    # -- jobs --------------------------------------------------------------------------------
    def job_runs(self, hashes: list[str] | None = None, supersede_duplicates: bool = False) -> dict[str, Any]:
        """The live run per job hash (all statuses; superseded runs excluded), optionally only for ``hashes``.

        With ``supersede_duplicates``, older live runs of one hash (left by earlier versions) are tagged
        superseded by the newest, so every hash keeps at most one live run.
        """
        # MLflow's filter language has no IN for tags: page through the experiment's job runs instead.
        wanted = set(hashes) if hashes is not None else None
        found: dict[str, Any] = {}
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                filter_string=S.job_filter(),
                max_results=1000,
                page_token=token,
                order_by=["attributes.start_time ASC"],
            )
            for run in page:
                h = run.data.tags.get(S.JOB_HASH)
                if not h or (wanted is not None and h not in wanted) or run.data.tags.get(S.SUPERSEDED) == "true":
                    continue
                older = found.get(h)
                if older is not None and supersede_duplicates:
                    self.supersede(older.info.run_id, run.info.run_id)
                found[h] = run
            token = page.token
            if not token:
                break
        return found

    def get_run(self, run_id: str) -> Any:
        return self.client.get_run(run_id)

    def supersede(self, old_id: str, new_id: str) -> None:
        """Mark ``old_id`` as replaced by ``new_id`` (kept for the record, ignored by reports and resumes)."""
        self.client.set_tag(old_id, S.SUPERSEDED, "true")
        self.client.set_tag(old_id, S.SUPERSEDED_BY, new_id)
        if self.client.get_run(old_id).info.status == "RUNNING":
            self.client.set_terminated(old_id, "KILLED")

    def start_job(self, spec: JobSpec, parent_id: str | None, device: str, existing: Any | None = None,
                  workers: int = 1) -> str:  # fmt: skip
        """The job's run: ``existing`` when the job continues in it (resume, re-export), else a new child.

        ``workers``: data-parallel workers it trains with now (a tag, updated on every start: not its identity).
        """
        if existing is not None:
            self.client.set_tag(existing.info.run_id, S.WORKERS, str(workers))
            self.client.update_run(existing.info.run_id, status="RUNNING")
            if S.FAILURE_REASON in existing.data.tags:  # an earlier attempt's reason no longer applies
                self.client.delete_tag(existing.info.run_id, S.FAILURE_REASON)
            return existing.info.run_id
        import torch  # the driver that trains has it loaded already
        import torchvision

        values = (spec.task, spec.dataset, spec.teacher or "", spec.student, spec.method, str(spec.seed), spec.role)
        axes = dict(zip(S.JOB_TAGS, values, strict=True))
        tags = {
            S.KIND: S.KIND_JOB,
            **axes,
            S.SETTING: S.setting(spec.role, spec.method, spec.teacher, spec.student, spec.dataset),
            S.JOB_HASH: spec.job_hash,
            S.RECIPE_PRESET: recipe_preset(spec),
            S.OUTPUT: str(self.output),
            S.VERSION: diffbench_version(),
            S.GIT_COMMIT: git_commit(),
            "torch_version": torch.__version__,
            "torchvision_version": torchvision.__version__,
            "device": device,
            S.WORKERS: str(workers),
        }
        if parent_id:
            tags[S.PARENT] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=spec.label, tags=tags)
        params = {f"{S.HP_PREFIX}{k}": v for k, v in spec.hparams}
        recipe = identity_fields({"recipe": spec.recipe})["recipe"]  # fields at their neutral value: as older runs
        params.update({f"{S.RECIPE_PREFIX}{k}": v for k, v in recipe.items() if k != "extra"})
        params.update({f"{S.RECIPE_PREFIX}extra.{k}": v for k, v in (spec.recipe.get("extra") or {}).items()})
        if spec.teacher_ref:
            params[S.TEACHER_REF] = spec.teacher_ref
        if spec.student_init:
            params[S.STUDENT_INIT] = spec.student_init
            if spec.student_init_path:
                params[S.STUDENT_INIT_FILE] = Path(spec.student_init_path).name
        from mlflow.entities import Param

        plist = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for chunk in _chunks(plist, 100):
            self.client.log_batch(run.info.run_id, params=chunk)
        self._log_dataset(run.info.run_id, spec)
        return run.info.run_id

    def _log_dataset(self, run_id: str, spec: JobSpec) -> None:
        """The job's data as an MLflow dataset input (the runs table's Dataset column): name and fingerprint."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        digest = (spec.data_id or spec.dataset).rpartition(":")[2][:36]
        source = spec.data_dir or f"diffbench:{spec.dataset} (embedded)"
        dataset = Dataset(name=spec.dataset, digest=digest, source_type="local" if spec.data_dir else "code",
                          source=json.dumps({"uri": source}))  # fmt: skip
        self.client.log_inputs(run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "train")])])

    def log_epoch(self, run_id: str, epoch: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(epoch)) for k, v in metrics.items() if k != "epoch"]
        for chunk in _chunks(items, 1000):
            self.client.log_batch(run_id, metrics=chunk)

    def logged_epochs(self, run_id: str, key: str = "train/loss") -> set[int]:
        """Epochs (steps) of ``key`` the run already holds."""
        return {m.step for m in self.client.get_metric_history(run_id, key)}

    def finish_job(self, run_id: str, summary: dict[str, float], workdir: Path,
                   before_end: Callable[[str], None] | None = None) -> None:  # fmt: skip
        """Log the summary and the job's files, call ``before_end(run_id)`` (e.g. log the model), end the run."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()])
        for name in S.JOB_ARTIFACTS:
            path = Path(workdir) / name
            if path.is_file():
                self.client.log_artifact(run_id, str(path))
        if before_end is not None:
            before_end(run_id)
        self.client.set_terminated(run_id, "FINISHED")

    def tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    # -- reading a finished job back (to restore its files) ----------------------------------------
    def artifact_names(self, run_id: str) -> set[str]:
        """The names of the files a run holds at the top of its artifacts (``student.pt``, ``train.log``...)."""
        try:
            return {Path(a.path).name for a in self.client.list_artifacts(run_id) if not a.is_dir}
        except Exception:  # noqa: BLE001 - an artifact store that is gone holds nothing
            return set()

    def download_artifact(self, run_id: str, name: str, folder: Path) -> Path | None:
        """Copy the run's artifact ``name`` into ``folder``; its path, or ``None`` when it cannot be had."""
        try:
            return Path(self.client.download_artifacts(run_id, name, str(folder)))
        except Exception:  # noqa: BLE001 - missing or unreadable: the caller tries the next source
            return None

    def finished_result(self, run_id: str) -> tuple[dict[str, float], list[dict[str, float]]]:
        """A finished run's summary metrics and per-epoch history, as its ``result.json`` held them."""
        run = self.client.get_run(run_id)
        epoch_keys = [k for k in run.data.metrics if k.startswith(S.EPOCH_PREFIXES) or k in S.EPOCH_KEYS]
        summary = {k: v for k, v in run.data.metrics.items() if k not in epoch_keys}
        rows: dict[int, dict[str, float]] = {}
        for key in epoch_keys:
            for m in self.client.get_metric_history(run_id, key):
                rows.setdefault(int(m.step), {"epoch": int(m.step)})[key] = m.value
        return summary, [rows[e] for e in sorted(rows)]

    def kill(self, run_id: str) -> None:
        """Mark a run interrupted by the user (``KILLED``); a re-run resumes the job into it."""
        self.client.set_terminated(run_id, "KILLED")

    def fail_job(self, run_id: str, reason: str, workdir: Path | None = None) -> None:
        self.client.set_tag(run_id, S.FAILURE_REASON, reason[:4000])
        if workdir is not None and (Path(workdir) / "train.log").is_file():
            self.client.log_artifact(run_id, str(Path(workdir) / "train.log"))
        self.client.set_terminated(run_id, "FAILED")

    # -- tuning (``diffbench tune``) -----------------------------------------------------------
    def start_tune(self, name: str, key: str, params: dict[str, str], description: str) -> str:
        """The tune run of ``key``: the one an earlier (killed) run of the same tune left, reopened, else a new one."""
        found = self._search(f"{S.tune_filter()} AND tags.`{S.TUNE_KEY}` = '{key}'")
        mine = [r for r in found if r.data.tags.get(S.OUTPUT) == str(self.output)]
        if mine:
            run_id = mine[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        tags = {S.KIND: S.KIND_TUNE, S.TUNE_KEY: key, S.OUTPUT: str(self.output), S.GIT_COMMIT: git_commit(),
                S.VERSION: diffbench_version(), "mlflow.note.content": description}  # fmt: skip
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        from mlflow.entities import Param

        self.client.log_batch(run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        self.mark_ui([run_id])
        return run_id

    def trial_runs(self, tune_run: str) -> dict[str, Any]:
        """The trial runs of a tune run, by Tune trial id."""
        return {r.data.tags[S.TRIAL_ID]: r for r in self._search(S.trial_filter(tune_run)) if S.TRIAL_ID in r.data.tags}

    def start_trial(self, spec: JobSpec, tune_run: str, search: str, trial_id: str, index: int,
                    values: dict[str, Any], existing: Any | None = None) -> str:  # fmt: skip
        """A trial's run, a child of the tune run (``existing``: the run an interrupted attempt of it left, reopened).

        Tagged with the job axes (``role`` = ``trial``) and a setting (``kd trial resnet20→resnet8 · colorshapes``) so
        the UI groups a search's trials apart from the jobs; never a job run.
        """
        if existing is not None:
            self.client.update_run(existing.info.run_id, status="RUNNING")
            return existing.info.run_id
        values_text = (spec.task, spec.dataset, spec.teacher or "", spec.student, spec.method, str(spec.seed), "trial")
        tags = {
            S.KIND: S.KIND_TRIAL,
            **dict(zip(S.JOB_TAGS, values_text, strict=True)),
            S.SETTING: S.setting("trial", f"{spec.method} trial", spec.teacher, spec.student, spec.dataset),
            S.JOB_HASH: spec.job_hash,
            S.SEARCH: search,
            S.TRIAL_ID: trial_id,
            S.TRIAL_INDEX: str(index),
            S.OUTPUT: str(self.output),
            S.PARENT: tune_run,
        }
        run = self.client.create_run(self.experiment_id, run_name=f"{search} trial {index}", tags=tags)
        params = {f"{S.HP_PREFIX}{k}": v for k, v in spec.hparams}
        params.update({f"{S.RECIPE_PREFIX}{k}": v for k, v in spec.recipe.items() if k != "extra"})
        params[S.TRIAL_VALUES] = json.dumps(values, sort_keys=True)
        from mlflow.entities import Param

        plist = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for chunk in _chunks(plist, 100):
            self.client.log_batch(run.info.run_id, params=chunk)
        return run.info.run_id

    def end_trial(self, run_id: str, metrics: dict[str, float], stop_reason: str, failed: bool = False) -> None:
        """A trial's summary metrics and why it ended; ``FAILED`` for a failed trial, ``FINISHED`` otherwise."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        self.client.set_tag(run_id, S.STOP_REASON, stop_reason[:4000])
        self.client.set_terminated(run_id, "FAILED" if failed else "FINISHED")

    def tag_runs(self, run_ids: list[str], tags: dict[str, str]) -> None:
        for run_id in run_ids:
            for k, v in tags.items():
                self.client.set_tag(run_id, k, v[:5000])

    def end_tune(self, run_id: str, metrics: dict[str, float], tags: dict[str, str], status: str = "FINISHED") -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if metrics:
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        self.tag_runs([run_id], tags)
        self.client.set_terminated(run_id, status)

"""`diffbench run` end to end: Ray Tune (2 CPUs) into MLflow, crash recovery, concurrency, re-runs, bad input.

Every fitnet job of this module crashes once right after its first epoch is checkpointed
(``DIFFBENCH_CRASH_ONCE_AT_EPOCH``/``DIFFBENCH_CRASH_METHOD``, set before Ray starts so the workers
inherit it); Ray's FailureConfig retries it and the job resumes from its checkpoint.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from bench import report as rep
from bench.cli.app import app
from bench.engine.loop import run_job
from bench.execute.driver import run_grid
from bench.execute.options import RunOptions
from bench.jobs.grid import GridSpec, expand
from bench.jobs.spec import job_dir, resolve_job

RECIPE = {"epochs": 2, "batch_size": 16, "max_steps": 2}


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    os.environ["DIFFBENCH_CRASH_ONCE_AT_EPOCH"] = "1"
    os.environ["DIFFBENCH_CRASH_METHOD"] = "fitnet"
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()
    for k in ("DIFFBENCH_CRASH_ONCE_AT_EPOCH", "DIFFBENCH_CRASH_METHOD"):
        os.environ.pop(k, None)


def _grid(jobs, output, **options):
    """``run_grid`` with the driver's options given as keywords."""
    return run_grid(jobs, RunOptions(output=output, **options))


def _job_runs(out: Path) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("diffbench")
    return client, client.search_runs([exp.experiment_id], "tags.`diffbench.kind` = 'job'", max_results=1000)


def _history_steps(client, run, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))


def test_grid_through_ray_into_mlflow_and_report(ray_cluster, tmp_path):
    grid = GridSpec(
        task="classification",
        dataset="digits",
        pairs=(("resnet8", "resnet8"),),
        methods=("kd", "fitnet"),
        seeds=2,
        recipe=RECIPE,
    )
    jobs = expand(grid)
    assert len(jobs) == 1 + 2 + 4
    failed = _grid(jobs, tmp_path, executor="ray", cpus_per_job=1, max_failures=1)
    assert failed == 0

    client, runs = _job_runs(tmp_path)
    assert sorted(r.data.tags["job_hash"] for r in runs) == sorted(j.job_hash for j in jobs)  # one run per job
    for run in runs:
        assert run.info.status == "FINISHED"
        assert _history_steps(client, run, "train/loss") == [1, 2]  # every epoch once, none lost or doubled
        assert _history_steps(client, run, "val/top1") == [1, 2]
        tags = run.data.tags
        for key in (
            "task",
            "dataset",
            "student",
            "method",
            "seed",
            "job_hash",
            "git_commit",
            "torch_version",
            "torchvision_version",
            "device",
        ):
            assert key in tags
        assert "mlflow.parentRunId" in tags
        assert "best_top1" in run.data.metrics and "images_per_s" in run.data.metrics
    # The fitnet jobs really crashed once and were resumed.
    for j in jobs:
        assert (job_dir(tmp_path, j.job_hash) / "crashed_once").exists() == (j.method == "fitnet")
    fitnet = [r for r in runs if r.data.tags["method"] == "fitnet"]
    assert all(any(a.path == "student.pt" for a in client.list_artifacts(r.info.run_id)) for r in fitnet)
    assert "hp.feat_weight" in fitnet[0].data.params

    # The leaderboard's numbers are the logged ones, aggregated over the two seeds.
    lb = rep.leaderboard(rep.load_runs(f"sqlite:///{tmp_path / 'mlflow.db'}"), "best", task="classification")
    tidy = lb.tidy.set_index("method")
    for method in ("vanilla", "kd", "fitnet"):
        values = [
            r.data.metrics["best_top1"]
            for r in runs
            if r.data.tags["method"] == method and r.data.tags["role"] == "student"
        ]
        assert len(values) == 2
        assert tidy.loc[method, "mean"] == pytest.approx(statistics.mean(values))
        assert tidy.loc[method, "std"] == pytest.approx(statistics.stdev(values))
        assert tidy.loc[method, "n"] == 2
    assert tidy.loc["kd", "gain"] == pytest.approx(tidy.loc["kd", "mean"] - tidy.loc["vanilla", "mean"])

    # A re-run of the finished grid trains nothing and creates no run.
    stamps = {j.job_hash: (job_dir(tmp_path, j.job_hash) / "checkpoint.pt").stat().st_mtime_ns for j in jobs}
    assert _grid(jobs, tmp_path, executor="ray") == 0
    _, again = _job_runs(tmp_path)
    assert len(again) == len(runs)
    assert stamps == {j.job_hash: (job_dir(tmp_path, j.job_hash) / "checkpoint.pt").stat().st_mtime_ns for j in jobs}


def test_concurrent_jobs_lose_no_metric_and_a_failing_job_does_not_stop_the_grid(ray_cluster, tmp_path):
    teacher = run_job(
        resolve_job(
            task="classification",
            dataset="digits",
            student="resnet8",
            recipe_overrides={"epochs": 1, "batch_size": 16, "max_steps": 2},
        ),
        tmp_path / "teacher",
        device="cpu",
        log=lambda m: None,
    )
    grid = GridSpec(
        task="classification",
        dataset="digits",
        pairs=(("resnet8", "resnet8"),),
        methods=("kd", "dkd"),
        seeds=2,
        recipe={"epochs": 3, "batch_size": 16, "max_steps": 2},
        sets={"kd": {"kd_weight": 1e300}},  # finite, so accepted; the KD term overflows to inf at the first step
        teacher_checkpoints={"resnet8": teacher.student_path},
    )
    jobs = expand(grid)
    assert len(jobs) == 6 and not any(j.role == "teacher" for j in jobs)
    failed = _grid(jobs, tmp_path / "grid", executor="ray", cpus_per_job=0.5, max_failures=1)
    assert failed == 2  # the two kd jobs: non-finite loss, recorded without retries

    client, runs = _job_runs(tmp_path / "grid")
    assert len(runs) == 6
    spans = []
    for run in runs:
        if run.data.tags["method"] == "kd":
            assert run.info.status == "FAILED"
            assert "loss is inf" in run.data.tags["failure_reason"]
            continue
        assert run.info.status == "FINISHED"
        for key in ("train/loss", "train/ce", "lr", "val/top1", "val/top5"):
            assert _history_steps(client, run, key) == [1, 2, 3], key
        spans.append((run.info.start_time, run.info.end_time))
    # Several jobs really ran (and logged) at the same time.
    overlap = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
    assert overlap >= 2


runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--methods", "kd,foo"], "unknown method 'foo'"),
        (["--pairs", "resnet20:resnet999"], "unknown architecture 'resnet999'"),
        (["--teacher-checkpoint", "resnet20=/nonexistent/ckpt.pth"], "not found"),
        (["--tracking-uri", "http://127.0.0.1:9"], "not reachable"),
        (["--address", "127.0.0.1:9"], "cannot reach Ray"),
        (["--executor", "slurm"], "unknown executor"),
    ],
)
def test_run_bad_input_records_nothing(tmp_path, args, needle):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "--output", str(out), *args], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith("error:") and needle in result.output
    assert "Traceback" not in result.output
    assert not (out / "jobs").exists()
    assert not (out / "mlflow.db").exists() or "tracking" not in needle


def test_run_bad_yaml(tmp_path):
    cfg = tmp_path / "experiment.yaml"
    cfg.write_text("methods: [kd\n")
    result = runner.invoke(app, ["run", "--config", str(cfg), "--output", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not valid YAML" in result.output
    assert not (tmp_path / "o").exists()


def test_dry_run_lists_jobs(tmp_path):
    result = runner.invoke(app, ["run", "--dry-run", "--seeds", "2", "--output", str(tmp_path)])
    assert result.exit_code == 0
    assert "11 jobs" in result.output  # teacher + 2 x (vanilla, kd, dkd, fitnet, diffkd)
    assert not any(tmp_path.iterdir())


def test_an_epoch_the_driver_missed_is_filled_in_when_the_job_finishes(tmp_path, monkeypatch):
    from bench.execute.ray_tune import GridRun

    original = GridRun.on_epoch

    def lossy(self, spec, epoch, metrics):
        if epoch == 1:  # as if the driver died after the checkpoint of epoch 1, before logging it
            return
        original(self, spec, epoch, metrics)

    monkeypatch.setattr(GridRun, "on_epoch", lossy)
    jobs = [resolve_job(task="classification", dataset="digits", student="resnet8", recipe_overrides=RECIPE)]
    assert _grid(jobs, tmp_path, executor="local") == 0
    client, runs = _job_runs(tmp_path)
    assert len(runs) == 1
    for key in ("train/loss", "val/top1", "lr"):
        assert _history_steps(client, runs[0], key) == [1, 2], key


def test_rerun_after_a_crash_resumes_into_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFBENCH_CRASH_ONCE_AT_EPOCH", "1")
    monkeypatch.delenv("DIFFBENCH_CRASH_METHOD", raising=False)
    jobs = [resolve_job(task="classification", dataset="digits", student="resnet8", recipe_overrides=RECIPE)]
    assert _grid(jobs, tmp_path, executor="local", max_failures=0) == 1  # crashed, no retries
    client, runs = _job_runs(tmp_path)
    assert runs[0].info.status == "FAILED" and "simulated crash" in runs[0].data.tags["failure_reason"]
    assert _grid(jobs, tmp_path, executor="local", max_failures=0) == 0  # the same command again
    client, runs = _job_runs(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert "failure_reason" not in runs[0].data.tags
    assert _history_steps(client, runs[0], "train/loss") == [1, 2]


def test_a_job_finished_on_disk_but_not_in_mlflow_is_logged_not_retrained(tmp_path):
    jobs = [resolve_job(task="classification", dataset="digits", student="resnet8", recipe_overrides=RECIPE)]
    assert _grid(jobs, tmp_path, executor="local") == 0
    client, runs = _job_runs(tmp_path)
    client.update_run(runs[0].info.run_id, status="RUNNING")  # the driver died before it logged the end
    stamp = (job_dir(tmp_path, jobs[0].job_hash) / "checkpoint.pt").stat().st_mtime_ns
    assert _grid(jobs, tmp_path, executor="local") == 0
    client, runs = _job_runs(tmp_path)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert _history_steps(client, runs[0], "train/loss") == [1, 2]  # not logged twice
    assert (job_dir(tmp_path, jobs[0].job_hash) / "checkpoint.pt").stat().st_mtime_ns == stamp  # not retrained


def test_a_request_no_node_can_meet_is_refused(ray_cluster, tmp_path):
    result = runner.invoke(app, ["run", "--preset", "smoke", "--gpus-per-job", "1", "--output", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no Ray node has that many GPUs" in result.output
    assert not (tmp_path / "o").exists()


def test_train_is_a_one_job_grid_in_the_report_and_log_model_logs_the_student(tmp_path):
    """`diffbench train` writes an MLflow run that `report` sees; `--log-model` logs the best student by URI."""
    out = str(tmp_path)
    common = ["--dataset", "digits", "--epochs", "1", "--max-steps", "1", "--output", out]
    trained = runner.invoke(app, ["train", "--student", "resnet8", *common])
    assert trained.exit_code == 0, trained.output
    (train_run,) = _job_runs(tmp_path)[1]  # train wrote exactly one job run
    grid = runner.invoke(app, ["run", "--preset", "smoke", "--executor", "local", "--methods", "kd", "--log-model",
                               *common])  # fmt: skip
    assert grid.exit_code == 0, grid.output
    report = runner.invoke(app, ["report", "--output", out, "--format", "csv"])
    assert report.exit_code == 0, report.output
    assert "vanilla" in report.output and ",kd," in report.output
    assert train_run.info.run_id in report.output  # the train job's own run is one of the report's cells

    client, runs = _job_runs(tmp_path)
    logged = client.search_logged_models([runs[0].info.experiment_id])
    grid_runs = {r.info.run_id for r in runs if r.data.tags.get("method") == "kd" or r.data.tags["role"] == "teacher"}
    assert {m.source_run_id for m in logged if m.name == "student"} >= grid_runs  # one model per finished grid job

"""`diffbench tune` end to end on the CPU with tiny sizes: equal trial counts per method, trials scored on a hold-out,
ASHA stopping trials, the winner in the final grid and marked by the report, a killed search resumed.

Ray Tune runs the searches (2 CPUs); teachers and final grids run in-process (``--executor local``) to keep it short.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench import report as rep
from bench.cli.app import app
from bench.jobs.files import job_dir
from bench.jobs.grid import GridSpec, expand
from bench.tracking import schema as S

REPO = Path(__file__).resolve().parents[2]
TINY = ["--task", "classification", "--dataset", "digits", "--pairs", "resnet8:resnet8", "--batch-size", "16",
        "--max-steps", "2", "--seeds", "1", "--executor", "local", "--max-concurrent", "1",
        "--no-log-model"]  # fmt: skip


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _tune(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["tune", *args], catch_exceptions=False)
    return result.exit_code, result.output


def _trial_runs(out: Path) -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("diffbench")
    return client.search_runs([exp.experiment_id], S.trial_filter(), max_results=1000)


def _live(runs: list) -> list:
    return [r for r in runs if r.data.tags.get(S.SUPERSEDED) != "true"]


def test_every_method_gets_the_same_trials_and_its_winner_reaches_the_final_grid_and_the_report(ray_cluster, tmp_path):
    out = tmp_path / "out"
    code, text = _tune(*TINY, "--methods", "kd,dkd", "--trials", "2", "--epochs", "1", "--output", str(out))
    assert code == 0, text

    trials = _trial_runs(out)
    per_search = {}
    for r in trials:
        per_search.setdefault(r.data.tags[S.SEARCH], []).append(r)
    assert sorted(per_search) == ["dkd resnet8→resnet8", "kd resnet8→resnet8"]
    assert [len(v) for v in per_search.values()] == [2, 2]  # the same budget for every method
    for r in trials:
        assert r.data.tags["role"] == "trial" and r.info.status == "FINISHED"
        assert r.data.tags[S.STOP_REASON] == "completed"
        assert S.BEST_SCORE in r.data.metrics and f"{S.HOLDOUT_PREFIX}best_top1" in r.data.metrics
        config = json.loads((job_dir(out, r.data.tags["job_hash"]) / "config.json").read_text())
        recipe = config["recipe"]
        assert recipe["extra"]["holdout"] == {"fraction": 0.1, "seed": 0}  # scored on the hold-out, not on val

    # The teacher is run's own job (same hash).
    grid = GridSpec(dataset="digits", pairs=(("resnet8", "resnet8"),), methods=("kd",),
                    recipe={"batch_size": 16, "max_steps": 2, "epochs": 1})
    teacher = next(j for j in expand(grid) if j.role == "teacher")
    assert (job_dir(out, teacher.job_hash) / "student.pt").is_file()

    # The winner of each search is what its final-grid job trains; the report shows it as a tuned column.
    runs = rep.load_runs(f"sqlite:///{out / 'mlflow.db'}")
    assert "trial" not in set(runs["tags.role"])  # trial runs are never job runs
    for method in ("kd", "dkd"):
        summary = json.loads(next((out / "tune").glob(f"*/{method}-resnet8-resnet8.json")).read_text())
        won = {k.partition(".")[2]: v for k, v in summary["winner"].items()}
        final = runs[runs["tags.method"] == f"{method} (tuned)"]
        assert len(final) == 1 and final["tags.diffbench.tuned"].iloc[0]
        for name, value in won.items():
            assert float(final[f"params.hp.{name}"].iloc[0]) == pytest.approx(value)
    assert set(runs["tags.method"]) == {"vanilla", "kd (tuned)", "dkd (tuned)"}
    lb = rep.leaderboard(runs, "best")
    assert {"kd (tuned)", "dkd (tuned)", "vanilla"} <= set(lb.methods)
    result = CliRunner().invoke(app, ["report", "--output", str(out), "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert "kd (tuned)" in result.output and "tuned by random search with ASHA" in result.output
    assert "hold-out" in result.output and "won " in result.output
    result = CliRunner().invoke(app, ["report", "--output", str(out), "--tuning", "--format", "markdown"])
    assert result.exit_code == 0, result.output
    assert "| kd resnet8→resnet8 | 2 | 2 | 0 | 0 |" in result.output

    # The same command again: searches finished earlier are not run again, nothing trains.
    code, text = _tune(*TINY, "--methods", "kd,dkd", "--trials", "2", "--epochs", "1", "--output", str(out))
    assert code == 0, text
    assert "finished earlier" in text and "nothing to do" in text
    assert len(_trial_runs(out)) == len(trials)


def test_asha_stops_weak_trials_early(ray_cluster, tmp_path):
    out = tmp_path / "out"
    # Vanilla with the recipe tuned: an lr at which nothing moves is a weak trial, which ASHA stops after its first
    # epoch once a trial that learns has reached that rung. (Ray's random search, seeded, draws 0.1, 0.1, 1e-7 here.)
    code, text = _tune(*TINY, "--methods", "vanilla", "--tune-recipe", "--space", "recipe.lr=choice(1e-7, 0.1)",
                       "--trials", "3", "--epochs", "2", "--max-steps", "30", "--output", str(out))  # fmt: skip
    assert code == 0, text
    trials = _trial_runs(out)
    assert len(trials) == 3
    reasons = [r.data.tags[S.STOP_REASON] for r in trials]
    stopped = [r for r in trials if r.data.tags[S.STOP_REASON].startswith("stopped early by asha")]
    assert stopped, reasons
    assert all(r.data.metrics["epochs_run"] == 1 for r in stopped)
    assert any(r == "completed" for r in reasons)
    assert any(json.loads(r.data.params[S.TRIAL_VALUES])["recipe.lr"] == 1e-7 for r in stopped)  # the weak one


#: A plugin method: KD, except that inside a Ray actor every trial after the first waits at its first step while
#: the file ``hold`` exists (the folder is filled in by the test). The search's second trial then waits for the kill,
#: however fast the machine. (The gate sits in ``forward``: the search space is read from ``KD.__init__``'s signature.)
HELD_KD = """
import time
from pathlib import Path

import ray

from methods.base import register
from methods.kd import KD

GATE = Path({gate!r})


@register
class HeldKD(KD):
    \"\"\"KD whose second and later trials in a Ray actor wait while the gate's hold file exists.\"\"\"

    name = "kd_held"
    passed_gate = False

    def forward(self, *args, **kwargs):
        if not self.passed_gate and ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
            self.passed_gate = True
            started = len(list(GATE.glob("started-*")))
            (GATE / f"started-{{started}}").touch()
            if started >= 1 and (GATE / "hold").exists():
                (GATE / "waiting").touch()
                while (GATE / "hold").exists():
                    time.sleep(0.2)
        return super().forward(*args, **kwargs)
"""


@pytest.fixture
def held_kd(tmp_path, monkeypatch):
    """The gated plugin as a ``.py`` path for ``--import``; the registries forget it after the test."""
    from bench.jobs import plugins
    from methods import catalog
    from methods.base import METHODS

    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "hold").touch()
    module = tmp_path / "held_kd.py"
    module.write_text(HELD_KD.format(gate=str(gate)))
    monkeypatch.setattr(catalog, "_PLUGINS", dict(catalog._PLUGINS))
    monkeypatch.setattr(plugins, "_imported", [])
    yield module, gate
    METHODS._entries.pop("kd_held", None)
    sys.modules.pop(str(module), None)
    sys.modules.pop("held_kd", None)


def test_a_killed_search_resumes_without_repeating_finished_trials(ray_cluster, tmp_path, held_kd):
    module, gate = held_kd
    out = tmp_path / "out"
    args = [*TINY, "--methods", "kd_held", "--import", str(module), "--trials", "3", "--epochs", "2",
            "--scheduler", "fifo", "--output", str(out)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "bench.cli", "tune", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 600
        while not (gate / "waiting").exists():  # the first trial has finished; the second waits at the gate
            assert proc.poll() is None, "the search ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.5)
        time.sleep(3)  # Ray Tune saves the search's state every second (TUNE_GLOBAL_CHECKPOINT_S=1)
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray instance it started, without a chance to clean up
        proc.wait()
    first = [r for r in _trial_runs(out) if r.data.tags.get(S.STOP_REASON) == "completed"]
    assert len(first) == 1
    stamps = {r.data.tags["job_hash"]: (job_dir(out, r.data.tags["job_hash"]) / "checkpoint.pt").stat().st_mtime_ns
              for r in first}  # fmt: skip

    (gate / "hold").unlink()
    code, text = _tune(*args)
    assert code == 0, text
    assert "resuming the search where it stopped" in text, text
    live = _live(_trial_runs(out))
    assert len(live) == 3  # the budget, not more: finished trials are not repeated
    assert sorted(int(r.data.tags[S.TRIAL_INDEX]) for r in live) == [0, 1, 2]
    assert {r.info.run_id for r in first} <= {r.info.run_id for r in live}
    for job_hash, stamp in stamps.items():  # no epoch of a finished trial trained again
        assert (job_dir(out, job_hash) / "checkpoint.pt").stat().st_mtime_ns == stamp
    assert all(r.info.status == "FINISHED" for r in live)


def test_a_failed_trial_is_recorded_and_the_search_goes_on(tmp_path):
    """The driver's side of a search, fed the results a failed, a crashed and a finished trial report."""
    from types import SimpleNamespace

    from rich.console import Console

    from bench.execute.events import Failed, Finished, to_report
    from bench.execute.tune import _collect
    from bench.execute.tune_callback import SearchState, TrialCallback, register
    from bench.jobs.tuning import Budget, TuneSettings, plan_tune
    from bench.tracking.tracker import Tracker

    grid = GridSpec(dataset="digits", pairs=(("resnet8", "resnet8"),), methods=("dkd",), recipe={"epochs": 2})
    plan = plan_tune(grid, TuneSettings(budget=Budget(trials=3)))
    search = plan.searches[0]
    tracker = Tracker(tmp_path)
    tune_run = tracker.start_tune("tune", plan.key, {}, "")
    state = SearchState(search, tracker, tune_run, tmp_path, Console(file=open(os.devnull, "w")), "top1", "asha",
                        None, 1.0)  # fmt: skip
    register("t", state)
    callback = TrialCallback("t")
    trials = [SimpleNamespace(trial_id=f"x_0000{i}", config={"hp": {"beta": float(i + 1)}, "recipe": {}},
                              error_file=None) for i in range(3)]  # fmt: skip
    for t in trials:
        callback.on_trial_start(0, trials, t)
    callback.on_trial_result(0, trials, trials[0], to_report(Failed("JobFailed: the loss became NaN")))
    callback.on_trial_complete(0, trials, trials[0])
    callback.on_trial_error(0, trials, trials[1])
    finished = {**to_report(Finished({"best_top1": 42.0})), "epoch": 2, S.SCORE: 42.0, "val/top1": 40.0}
    callback.on_trial_result(0, trials, trials[2], finished)
    callback.on_trial_complete(0, trials, trials[2])

    runs = {r.data.tags[S.TRIAL_INDEX]: r for r in tracker.trial_runs(tune_run).values()}
    assert runs["0"].info.status == "FAILED" and "NaN" in runs["0"].data.tags[S.STOP_REASON]
    assert runs["1"].info.status == "FAILED" and runs["1"].data.tags[S.STOP_REASON] == "failed: crashed"
    assert runs["2"].info.status == "FINISHED" and runs["2"].data.tags[S.STOP_REASON] == "completed"
    assert runs["2"].data.metrics[S.BEST_SCORE] == 42.0
    result = _collect(tracker, tune_run, search)
    assert len(result.trials) == 3 and result.counts == {"completed": 1, "stopped": 0, "failed": 2}
    assert result.winner == {"hp.beta": 3.0} and result.winner_score == 42.0

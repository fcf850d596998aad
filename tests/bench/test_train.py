"""The training loop: schedules, export, resume after a crash, NaN handling, eval reproduction."""

from __future__ import annotations

import pytest
import torch

from bench.engine.evaluate import evaluate_checkpoint
from bench.engine.loop import JobFailed, lr_factor, run_job
from bench.jobs.spec import resolve_job
from tasks.base import Recipe
from tasks.classification.models import zoo


def test_step_schedule_matches_mdistiller():
    # mdistiller: lr = base * 0.1 ** sum(epoch > stages), epoch 1-based; decays start at epoch 151.
    r = Recipe(epochs=240, batch_size=64, lr=0.05, milestones=(150, 180, 210))
    it = 10  # iterations per epoch
    for epoch_1based, expected in [(1, 1.0), (150, 1.0), (151, 0.1), (180, 0.1), (181, 0.01), (211, 0.001)]:
        first_iter = (epoch_1based - 1) * it
        assert lr_factor(r, first_iter, it) == pytest.approx(expected)


def test_poly_cosine_and_warmup():
    r = Recipe(epochs=2, batch_size=1, lr=1.0, schedule="poly", poly_power=0.9)
    assert lr_factor(r, 0, 10) == pytest.approx(1.0)
    assert lr_factor(r, 10, 10) == pytest.approx(0.5**0.9)
    c = Recipe(epochs=2, batch_size=1, lr=1.0, schedule="cosine")
    assert lr_factor(c, 10, 10) == pytest.approx(0.5)
    w = Recipe(epochs=4, batch_size=1, lr=1.0, warmup_epochs=1.0, warmup_factor=0.1)
    assert lr_factor(w, 0, 10) == pytest.approx(0.1)
    assert lr_factor(w, 5, 10) == pytest.approx(0.55)
    assert lr_factor(w, 10, 10) == pytest.approx(1.0)


def _spec(tmp_path, method="vanilla", teacher_ckpt=None, epochs=2, lr=None, seed=0, max_steps=2):
    return resolve_job(
        task="classification",
        dataset="digits",
        student="resnet8",
        method=method,
        teacher="resnet8" if method != "vanilla" else None,
        teacher_ref=f"file:{teacher_ckpt}" if teacher_ckpt else None,
        seed=seed,
        recipe_overrides={"epochs": epochs, "batch_size": 16, "lr": lr, "max_steps": max_steps},
    )


def test_export_holds_student_only_and_eval_reproduces(tmp_path):
    teacher = run_job(_spec(tmp_path, epochs=1, max_steps=3), tmp_path, device="cpu", log=lambda m: None)
    res = run_job(
        _spec(tmp_path, "fitnet", teacher.student_path, epochs=1, max_steps=3),
        tmp_path,
        device="cpu",
        log=lambda m: None,
    )
    exported = torch.load(res.student_path, weights_only=False)
    fresh = zoo.build("resnet8", 10)
    # Exactly the student's keys: FitNet's regressor is not part of the exported student.
    assert set(exported["student"]) == set(fresh.state_dict())
    fresh.load_state_dict(exported["student"], strict=True)
    again = evaluate_checkpoint("classification", "digits", None, "resnet8", res.student_path, device="cpu")
    assert again["top1"] == pytest.approx(res.metrics["last_top1"])
    assert again["images"] == 360
    assert "teacher_top1" in res.metrics


def test_crash_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    straight = run_job(_spec(tmp_path / "a"), tmp_path / "a", device="cpu", log=lambda m: None)
    monkeypatch.setenv("DIFFBENCH_CRASH_ONCE_AT_EPOCH", "1")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_job(_spec(tmp_path / "b"), tmp_path / "b", device="cpu", log=lambda m: None)
    lines = []
    resumed = run_job(_spec(tmp_path / "b"), tmp_path / "b", device="cpu", log=lines.append)
    assert any("resumed from epoch 1" in line for line in lines)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    a = torch.load(straight.student_path, weights_only=False)["student"]
    b = torch.load(resumed.student_path, weights_only=False)["student"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)
    assert resumed.metrics["last_top1"] == straight.metrics["last_top1"]


def test_nan_loss_fails_the_job(tmp_path):
    with pytest.raises(JobFailed, match="loss is"):
        run_job(_spec(tmp_path, epochs=1, lr=1e30, max_steps=5), tmp_path, device="cpu", log=lambda m: None)


def test_job_hash_is_identity():
    a = resolve_job(task="classification", dataset="digits", student="resnet8")
    b = resolve_job(task="classification", dataset="digits", student="resnet8")
    c = resolve_job(task="classification", dataset="digits", student="resnet8", seed=1)
    d = resolve_job(task="classification", dataset="digits", student="resnet8", recipe_overrides={"lr": 0.1})
    assert a.job_hash == b.job_hash
    assert len({a.job_hash, c.job_hash, d.job_hash}) == 3
    # A smoke run (capped steps) is another job than the full one; 1 and 1.0 are the same setting.
    e = resolve_job(task="classification", dataset="digits", student="resnet8", recipe_overrides={"max_steps": 2})
    assert e.job_hash != a.job_hash
    f = resolve_job(task="classification", dataset="digits", student="resnet8", recipe_overrides={"lr": 1})
    g = resolve_job(task="classification", dataset="digits", student="resnet8", recipe_overrides={"lr": 1.0})
    assert f.job_hash == g.job_hash
    kd4 = resolve_job(
        task="classification",
        dataset="digits",
        student="resnet8",
        teacher="resnet20",
        method="kd",
        hparam_overrides={"temperature": 4},
    )
    kd4f = resolve_job(task="classification", dataset="digits", student="resnet8", teacher="resnet20", method="kd")
    assert kd4.job_hash == kd4f.job_hash
    assert len(a.job_hash) == 12 and int(a.job_hash, 16) >= 0  # 12 hex digits, as job folders are named


def test_an_iteration_schedule_stops_at_max_iters_and_decays_at_its_iterations():
    """detectron2's SOLVER.MAX_ITER / STEPS and CIRKD's --max-iterations: counted in iterations, not epochs."""
    from bench.engine.loop import training_epochs

    r = Recipe(epochs=13, batch_size=8, lr=0.01, max_iters=180_000, iter_milestones=(120_000, 160_000))
    per_epoch = 14_659  # COCO train2017's 117,266 images with a box, batch 8
    assert training_epochs(r, per_epoch) == 13  # 12.28 epochs: the 13th is cut short
    assert lr_factor(r, 119_999, per_epoch) == pytest.approx(1.0)
    assert lr_factor(r, 120_000, per_epoch) == pytest.approx(0.1)
    assert lr_factor(r, 160_000, per_epoch) == pytest.approx(0.01)
    poly = Recipe(epochs=216, batch_size=16, lr=0.02, schedule="poly", max_iters=40_000)
    assert lr_factor(poly, 20_000, 186) == pytest.approx(0.5**0.9)  # over 40k iterations, not 216 x 186
    assert training_epochs(poly, 186) == 216


def test_a_max_iters_job_trains_exactly_that_many_steps(tmp_path):
    spec = resolve_job(task="classification", dataset="digits", student="resnet8",
                       recipe_overrides={"epochs": 3, "batch_size": 64, "max_iters": 30})  # fmt: skip
    steps = []
    run_job(spec, tmp_path, device="cpu", log=lambda _m: None, on_step=lambda e, i, n, _l: steps.append((e, i, n)))
    per_epoch = max(i for e, i, n in steps if e == 1)  # 22 batches of 64 in digits' 1437 training images
    assert len(steps) == 30
    assert steps[-1] == (2, 30 - per_epoch, 30 - per_epoch)  # 2 epochs of the 3 suffice; the second is cut short


def test_a_job_reruns_bit_for_bit_on_one_machine(tmp_path):
    """Same identity, same thread count, same machine: the same student to the last bit, the same numbers."""
    spec = resolve_job(task="classification", dataset="digits", student="resnet8", teacher="resnet8", method="kd",
                       teacher_ref="job:0",
                       recipe_overrides={"epochs": 2, "batch_size": 32, "max_steps": 6})  # fmt: skip
    teacher = tmp_path / "teacher.pt"
    torch.manual_seed(0)
    torch.save({"model": zoo.build("resnet8", 10).state_dict()}, teacher)
    from dataclasses import replace

    spec = replace(spec, teacher_path=str(teacher))
    a = run_job(spec, tmp_path / "a", device="cpu", log=lambda _m: None)
    b = run_job(spec, tmp_path / "b", device="cpu", log=lambda _m: None)
    clock = {"epoch_time_s", "train_time_s", "images_per_s"}  # wall-clock figures, not results

    def numbers(d: dict) -> dict:
        return {k: v for k, v in d.items() if k not in clock}

    assert numbers(a.metrics) == numbers(b.metrics)
    assert [numbers(h) for h in a.history] == [numbers(h) for h in b.history]
    sa = torch.load(a.student_path, weights_only=False)["student"]
    sb = torch.load(b.student_path, weights_only=False)["student"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.threads == torch.get_num_threads()

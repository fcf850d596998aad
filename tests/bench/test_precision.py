"""Speed settings on CPU: bf16 autocast trains every method on every task, fp32 is today's step,
and precision / channels_last / compile / data pipeline are part of a job's identity.

bf16 on the CPU is how the tests reach the autocast path (CUDA is never required).
"""

from __future__ import annotations

import math

import pytest
import torch

from bench.engine.build import Built, build_models, make_optimizer
from bench.engine.step import Stepper
from bench.jobs.spec import resolve_job
from methods.base import Progress
from tasks.base import get_task

CPU = torch.device("cpu")

#: (task, dataset, teacher, student, batch, methods): the smallest real pair of each task.
CASES = [
    ("classification", "cifar100", "resnet20", "resnet8", 8, ("vanilla", "kd", "dkd", "fitnet", "diffkd")),
    ("detection", "shapes", "fasterrcnn_r18", "fasterrcnn_mbv3s", 2, ("vanilla", "kd", "dkd", "fitnet", "diffkd")),
    ("segmentation", "shapes", "deeplabv3_tiny_t", "deeplabv3_tiny_s", 2, ("vanilla", "kd", "dkd", "fitnet", "diffkd")),
]
#: Relative difference allowed between the bf16 and fp32 loss of the same first step. bf16 keeps 8 bits of
#: mantissa (relative rounding 2**-9 = 0.2 % per operation); through a dozen layers and a loss that is a sum
#: of terms this gives a few percent. Detection samples its proposals from scores that bf16 perturbs, so
#: the boxes themselves can differ: it gets a looser bound.
TOLERANCE = {"classification": 0.05, "detection": 0.25, "segmentation": 0.05}


def _steps(task_name, dataset, teacher, student, batch_size, method, precision, n=2):
    task = get_task(task_name)
    classes = task.default_num_classes(dataset)
    torch.manual_seed(0)
    hp = task.method_defaults(method, dataset, teacher, student) if method != "vanilla" else {}
    s, t, m = build_models(task, student, teacher, method, hp, classes, dataset, None, CPU)
    built = Built(task, s, t, m, None, None, classes, {})
    recipe = task.recipe(dataset, student)
    stepper = Stepper(built, make_optimizer(recipe, s, m, CPU), CPU, precision)
    batch = task.synthetic_batch(batch_size, classes, CPU, dataset=dataset, arch=student)
    losses = []
    for i in range(n):
        torch.manual_seed(100 + i)  # the same random draws (DiffKD noise, samplers) in both precisions
        stepper.reset()
        stepper.step(batch, Progress(epoch=30, epochs=30, step=i, steps_per_epoch=n))
        stepper.check(1, i, force=True)
        losses.append(stepper.means())
    return losses


@pytest.mark.parametrize(
    ("task_name", "dataset", "teacher", "student", "batch", "method"),
    [(c[0], c[1], c[2], c[3], c[4], m) for c in CASES for m in c[5]],
    ids=[f"{c[0]}-{m}" for c in CASES for m in c[5]],
)
def test_bf16_autocast_trains_every_method_close_to_fp32(task_name, dataset, teacher, student, batch, method):
    fp32 = _steps(task_name, dataset, teacher, student, batch, method, "fp32")
    bf16 = _steps(task_name, dataset, teacher, student, batch, method, "bf16")
    for step in bf16:  # finite terms at every step (a NaN would also have raised in check())
        assert all(math.isfinite(v) for v in step.values()), step
    a, b = fp32[0]["train/loss"], bf16[0]["train/loss"]
    assert abs(a - b) <= TOLERANCE[task_name] * abs(a), (a, b)
    assert set(fp32[0]) == set(bf16[0])  # the same loss terms


def test_fp32_step_is_exactly_the_plain_step():
    """No autocast, no scaler, no cast in fp32: the Stepper's update equals a hand-written step bit for bit."""
    task = get_task("classification")
    torch.manual_seed(0)
    s, t, m = build_models(task, "resnet8", "resnet20", "kd", {}, 100, "cifar100", None, CPU)
    import copy

    twin_s, twin_m = copy.deepcopy(s), copy.deepcopy(m)
    task.attach_taps(twin_s, "resnet8", 100, "cifar100")
    recipe = task.recipe("cifar100", "resnet8")
    batch = task.synthetic_batch(8, 100, CPU, dataset="cifar100", arch="resnet8")
    progress = Progress(epoch=1, epochs=1, step=0, steps_per_epoch=1)

    stepper = Stepper(Built(task, s, t, m, None, None, 100, {}), make_optimizer(recipe, s, m, CPU), CPU, "fp32")
    stepper.step(batch, progress)

    opt = torch.optim.SGD([*twin_s.parameters(), *twin_m.parameters()], lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay)  # fmt: skip
    out = task.paired_forward(twin_s, t, batch, CPU)
    terms = {k: m.task_weight * v for k, v in out.losses.items()}
    terms.update(twin_m(out.student_taps, out.teacher_taps, out.target, progress))
    loss = sum(terms.values())
    opt.zero_grad()
    loss.backward()
    opt.step()
    for (name, a), b in zip(s.state_dict().items(), twin_s.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def _hash(**recipe):
    return resolve_job(task="classification", dataset="digits", student="resnet8", recipe_overrides=recipe).job_hash


@pytest.mark.parametrize(
    ("field", "a", "b"),
    [("precision", "fp32", "bf16"), ("channels_last", False, True), ("compile", "off", "default"),
     ("data_pipeline", "pil", "device")],  # fmt: skip
)
def test_speed_settings_are_part_of_a_jobs_identity(field, a, b):
    assert _hash(**{field: a}) != _hash(**{field: b})


def test_auto_settings_resolve_per_device_and_fp32_keeps_todays_recipe(cifar_dir):
    cpu = resolve_job(task="classification", dataset="cifar100", student="resnet8", data_dir=cifar_dir, device="cpu")
    gpu = resolve_job(task="classification", dataset="cifar100", student="resnet8", data_dir=cifar_dir, device="cuda")
    assert (cpu.recipe["precision"], cpu.recipe["channels_last"]) == ("fp32", False)
    assert (gpu.recipe["precision"], gpu.recipe["channels_last"]) == ("bf16", True)
    assert cpu.job_hash != gpu.job_hash
    explicit = resolve_job(task="classification", dataset="cifar100", student="resnet8", data_dir=cifar_dir,
                           device="cuda", recipe_overrides={"precision": "fp32", "channels_last": False})  # fmt: skip
    # mdistiller's CIFAR-100 recipe, unchanged by the speed settings
    for key, value in {"epochs": 240, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
                       "milestones": [150, 180, 210], "gamma": 0.1, "nesterov": False, "weight_decay_1d": True,
                       "precision": "fp32", "channels_last": False, "compile": "off"}.items():  # fmt: skip
        assert explicit.recipe[key] == value, key
    assert explicit.hparams == cpu.hparams


def test_a_pipeline_that_cannot_apply_is_refused(imagenet_dir):
    from methods.base import UserError

    with pytest.raises(UserError, match="only in-memory data sets"):
        resolve_job(task="classification", dataset="imagenet", student="resnet18", data_dir=imagenet_dir,
                    recipe_overrides={"data_pipeline": "device"})  # fmt: skip
    with pytest.raises(UserError, match="precision 'fp8'"):
        resolve_job(task="classification", dataset="digits", student="resnet8", recipe_overrides={"precision": "fp8"})


def test_packed_jobs_that_do_not_fit_one_gpu_are_warned_about(tmp_path):
    from rich.console import Console

    from bench.execute.state import GridRun

    class NoStore:
        def job_runs(self, *_a, **_k):
            return {}

    console = Console(record=True, width=200)
    grid = GridRun([], tmp_path, NoStore(), "cuda", console, gpus_per_job=0.25)
    grid.check_packing({"peak_mem_mb": 30_000.0, "device_mem_mb": 80_000.0})  # 4 x 30 GB > 80 GB
    text = console.export_text()
    assert "4 per GPU" in text and "--gpus-per-job 0.5 (2 per GPU)" in text
    grid.check_packing({"peak_mem_mb": 30_000.0, "device_mem_mb": 80_000.0})
    assert console.export_text().count("may run out") == 0  # once (export_text clears the record)
    ok = GridRun([], tmp_path, NoStore(), "cuda", Console(record=True), gpus_per_job=0.25)
    ok.check_packing({"peak_mem_mb": 10_000.0, "device_mem_mb": 80_000.0})
    assert "may run out" not in ok.console.export_text()

"""Published recipes, exactly: DiffKD's ImageNet B1 optimizer next to mdistiller's."""

from __future__ import annotations

from bench.engine.build import make_optimizer
from bench.jobs.spec import resolve_job
from tasks.base import get_task


def test_diffkd_b1_recipe_is_nesterov_without_decay_on_1d_parameters():
    """image_classification_sota lib/utils/optim.py: ``len(param.shape) == 1 or name.endswith('.bias')`` get
    weight decay 0; SGD(nesterov=not args.sgd_no_nesterov) with the flag off; wd 1e-4, lr 0.1, batch 8 x 32."""
    task = get_task("classification")
    recipe = task.recipe("imagenet", "resnet18", "imagenet-diffkd")
    assert (recipe.lr, recipe.batch_size, recipe.weight_decay, recipe.epochs) == (0.1, 256, 1e-4, 100)
    assert recipe.milestones == (30, 60, 90) and recipe.gamma == 0.1 and recipe.warmup_epochs == 0
    model = task.build_model("resnet18", 1000, "imagenet")
    opt = make_optimizer(recipe, model, None)
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] == 1e-4 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decay) == (p.ndim > 1 and not name.endswith(".bias")), name
    assert all(g["nesterov"] and g["momentum"] == 0.9 for g in opt.param_groups)


def test_mdistiller_imagenet_recipe_decays_every_parameter():
    task = get_task("classification")
    recipe = task.recipe("imagenet", "resnet18", "imagenet")
    model = task.build_model("resnet18", 1000, "imagenet")
    (group,) = make_optimizer(recipe, model, None).param_groups
    assert group["weight_decay"] == 1e-4 and not group["nesterov"]
    assert len(group["params"]) == len(list(model.parameters()))


def test_every_method_runs_with_the_diffkd_recipe(imagenet_dir, tmp_path):
    for method in ("vanilla", "kd", "dkd", "fitnet", "diffkd"):
        job = resolve_job(task="classification", dataset="imagenet", student="resnet18", data_dir=imagenet_dir,
                          teacher=None if method == "vanilla" else "resnet34", method=method,
                          teacher_ref=None if method == "vanilla" else "file:/t.pth",
                          preset="imagenet-diffkd")  # fmt: skip
        assert job.recipe["nesterov"] is True and job.recipe["weight_decay_1d"] is False


def test_a_jobs_recipe_preset_is_recognised_whatever_its_speed_settings(cifar_dir):
    from bench.tracking.tracker import recipe_preset

    for device in ("cpu", "cuda"):
        job = resolve_job(task="classification", dataset="cifar100", student="resnet8", data_dir=cifar_dir,
                          device=device)
        assert recipe_preset(job) == "cifar100", device
    smoke = resolve_job(task="classification", dataset="cifar100", student="resnet8", data_dir=cifar_dir,
                        recipe_overrides={"max_steps": 2})  # fmt: skip
    assert recipe_preset(smoke) == "custom"

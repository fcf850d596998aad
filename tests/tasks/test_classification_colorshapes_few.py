"""``colorshapes-few`` (tasks/classification/colorshapes_few.py): the teacher's split is the whole training split,
the students' a few labelled images per class of it (each repeated), the recipes pick the split and the teacher's
is the longer one, the Bayes posterior and ``excess_nll`` against hand computations, plain colorshapes unchanged."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn
from torch.utils.data import DataLoader, Subset

from bench.jobs.grid import GridSpec, expand, grid_from_preset
from methods.errors import UserError
from tasks.base import get_task
from tasks.classification import colorshapes as cs
from tasks.classification import colorshapes_few as few
from tasks.classification.data import DATASETS, build_datasets
from tasks.classification.resident import ResidentLoader, supports

K = few.LABELLED_PER_CLASS


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def teacher_split():
    return build_datasets("colorshapes-few", augment=False)


@pytest.fixture(scope="module")
def student_split():
    return build_datasets("colorshapes-few", augment=False, labelled_per_class=K, repeat=few.REPEAT)


# -- the splits ---------------------------------------------------------------------------------


def test_teacher_split_is_all_2560_labels_with_colorshapes_labels_and_hues(teacher_split):
    plain = build_datasets("colorshapes", augment=False)
    assert len(teacher_split.train) == cs.NUM_TRAIN and len(teacher_split.val) == cs.NUM_VAL
    # the same generator draws: the same labels (and hues), only the geometry differs
    assert teacher_split.train.targets == plain.train.targets and teacher_split.val.targets == plain.val.targets
    assert _digest(teacher_split.train.data) != _digest(plain.train.data)
    assert teacher_split.num_classes == 20 == DATASETS["colorshapes-few"].num_classes


def test_larger_objects_cover_more_of_the_image():
    # same draws, larger radius: the object's area grows with r^2, (mean r^2 over 10-13) / (over 5-8) ~ 3.1
    def covered(x: np.ndarray) -> np.ndarray:  # pixels far from the image's median (background) colour
        bg = np.median(x.reshape(len(x), -1, 3), axis=1)
        return (np.abs(x.astype(int) - bg[:, None, None, :].astype(int)).max(axis=3) > 40).mean(axis=(1, 2))

    assert few.RADIUS[0] > cs.RADIUS[1] and few.JITTER < cs.JITTER
    x, _, _ = few.generate(400, (0, 7))
    x0, _ = cs.generate(400, (0, 7))
    ratio = np.mean([r * r for r in np.linspace(*few.RADIUS, 101)]) / np.mean(
        [r * r for r in np.linspace(*cs.RADIUS, 101)]
    )
    assert covered(x).mean() / covered(x0).mean() == pytest.approx(ratio, rel=0.15)


def test_normalisation_constants_are_the_training_split(teacher_split):
    x = teacher_split.train.data.astype(np.float64) / 255
    assert few.MEAN == pytest.approx(tuple(x.mean(axis=(0, 1, 2))), abs=1e-3)
    assert few.STD == pytest.approx(tuple(x.std(axis=(0, 1, 2))), abs=1e-3)
    assert DATASETS["colorshapes-few"].mean == few.MEAN and DATASETS["colorshapes-few"].std == few.STD


def test_students_see_k_labelled_images_per_class_each_repeated(teacher_split, student_split):
    train = student_split.train
    assert len(train) == K * 20 * few.REPEAT == 640
    assert np.bincount(train.targets, minlength=20).tolist() == [K * few.REPEAT] * 20  # class-balanced
    distinct = {}
    for img, label in zip(train.data, train.targets, strict=True):
        distinct.setdefault(img.tobytes(), []).append(label)
    assert len(distinct) == K * 20 and all(len(v) == few.REPEAT and len(set(v)) == 1 for v in distinct.values())
    # every student image is a teacher image with the same label: a subset, not new data
    teacher = {
        img.tobytes(): lab for img, lab in zip(teacher_split.train.data, teacher_split.train.targets, strict=True)
    }
    assert all(teacher[k] == v[0] for k, v in distinct.items())
    assert student_split.val.targets == teacher_split.val.targets  # one validation split for everyone
    assert _digest(student_split.val.data) == _digest(teacher_split.val.data)


def test_the_subset_is_the_first_images_of_each_class_in_stream_order(teacher_split):
    labels = np.asarray(teacher_split.train.targets)
    idx = few.labelled_subset(labels, 4)
    assert len(idx) == 80 and np.all(np.diff(idx) > 0)
    for c in range(20):
        assert idx[labels[idx] == c].tolist() == np.flatnonzero(labels == c)[:4].tolist()
    assert idx.max() >= 100  # the generator shuffles its labels: not simply the first 80 images
    with pytest.raises(ValueError, match="fewer than"):
        few.labelled_subset(labels[:100], 6)


def test_deterministic():
    a, _ = few.build(augment=False, labelled_per_class=4, repeat=2)
    b, _ = few.build(augment=False, labelled_per_class=4, repeat=2)
    assert _digest(a.data) == _digest(b.data) and a.targets == b.targets
    c, _ = few.build(augment=False, labelled_per_class=4, repeat=2, seed=1)
    assert _digest(c.data) != _digest(a.data)


def test_bad_split_settings_are_one_line_errors():
    with pytest.raises(UserError, match="labelled_per_class must be a positive integer"):
        build_datasets("colorshapes-few", labelled_per_class=0)
    with pytest.raises(UserError, match="more than the 128 images per class"):
        build_datasets("colorshapes-few", labelled_per_class=129)
    with pytest.raises(UserError, match="repeat must be a positive integer"):
        build_datasets("colorshapes-few", repeat=0)


def test_resident_and_equal_to_the_pil_path(student_split):
    assert supports(student_split.train) and supports(student_split.val)
    loader = ResidentLoader(student_split.train, 64, "cpu", train=False, generator=None, drop_last=False)
    x, y = next(iter(loader))
    for i in (0, 9, 63):
        assert torch.equal(x[i], student_split.train[i][0]) and int(y[i]) == student_split.train[i][1]


# -- the Bayes posterior and excess_nll ---------------------------------------------------------


def test_generate_is_generate_with_hue_without_the_hue():
    x, y = cs.generate(50, 4)
    x2, y2, hue = cs.generate_with_hue(50, 4)
    assert _digest(x) == _digest(x2) and np.array_equal(y, y2)
    assert hue.shape == (50,) and np.all((hue >= 0) & (hue < 1))
    centre = (y % 4) / 4
    dist = np.minimum(np.abs(hue - centre), 1 - np.abs(hue - centre))
    assert dist.max() < 6 * cs.HUE_SD  # drawn around the label's family centre
    _, y3, hue3 = cs.generate_with_hue(50, 4, few.RADIUS, few.JITTER)  # other geometry, same draws
    assert np.array_equal(y3, y) and np.array_equal(hue3, hue)


def _posterior_by_hand(h: float) -> list[float]:
    """Wrapped-normal likelihood of hue ``h`` under each family (centres 0, .25, .5, .75), equal priors."""
    lik = [sum(stats.norm.pdf(h + k, loc=f / 4, scale=cs.HUE_SD) for k in (-1, 0, 1)) for f in range(4)]
    return [v / sum(lik) for v in lik]


@pytest.mark.parametrize("h", [0.0, 0.1, 0.125, 0.3, 0.5, 0.62, 0.98])
def test_hue_posterior_matches_a_hand_computation(h):
    np.testing.assert_allclose(cs.hue_posterior(np.array([h]))[0], _posterior_by_hand(h), rtol=1e-9, atol=1e-300)


def test_hue_posterior_facts():
    post = cs.hue_posterior(np.array([0.125, 0.0, 0.99]))
    assert post[0, 0] == pytest.approx(0.5) and post[0, 1] == pytest.approx(0.5)  # half-way red -> lime
    assert post[1].argmax() == 0 and post[2].argmax() == 0  # 0.99 wraps round to red
    assert post[1, 1] == pytest.approx(post[1, 3])  # symmetric neighbours
    np.testing.assert_allclose(post.sum(axis=1), 1.0)


def test_bayes_log_likelihood_on_a_tiny_known_case():
    # hue 0.125 is half-way red (0) -> lime (1): either label has probability 1/2; hue 0 labelled red: ~1
    ll = cs.bayes_log_likelihood(np.array([0, 1, 4 * 3 + 1, 0]), np.array([0.125, 0.125, 0.125, 0.0]))
    # (the two far families take ~3e-8 of the mass: not exactly 1/2); the shape (label // 4) does not matter
    np.testing.assert_allclose(ll[:3], math.log(_posterior_by_hand(0.125)[0]), rtol=1e-9)
    assert ll[0] == pytest.approx(math.log(0.5), abs=1e-6)
    # at its family's centre the two neighbours (0.25 = 4.2 sd away) each keep exp(-0.25^2 / (2 sd^2)) of the mass
    neighbour = math.exp(-(0.25**2) / (2 * cs.HUE_SD**2))
    assert ll[3] == pytest.approx(math.log(1 / (1 + 2 * neighbour)), rel=1e-4) and -1e-3 < ll[3] < 0


def test_validation_split_carries_its_bayes_nll(teacher_split):
    _, labels, hue = cs.generate_with_hue(cs.NUM_VAL, (cs.DATA_SEED, 1))
    by_hand = -np.mean([math.log(_posterior_by_hand(h)[int(y) % 4]) for h, y in zip(hue, labels, strict=True)])
    assert teacher_split.val.bayes_nll == pytest.approx(by_hand, rel=1e-9)
    assert teacher_split.info["bayes_nll"] == teacher_split.val.bayes_nll
    assert teacher_split.val.bayes_nll == pytest.approx(0.1036, abs=1e-4)
    bayes_top1 = (cs.hue_posterior(hue).argmax(axis=1) == labels % 4).mean()
    assert bayes_top1 == pytest.approx(0.962, abs=1e-9)  # the best top-1 any classifier can expect here
    assert build_datasets("colorshapes", augment=False).val.bayes_nll is None  # plain colorshapes: none


class _Uniform(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 20)


def test_evaluate_reports_excess_nll_on_colorshapes_few_only(teacher_split):
    task = get_task("classification")
    val = teacher_split.val
    out = task.evaluate(_Uniform(), DataLoader(val, batch_size=250), torch.device("cpu"))
    assert out["loss"] == pytest.approx(math.log(20))
    assert out["excess_nll"] == pytest.approx(math.log(20) - val.bayes_nll)
    resident = ResidentLoader(val, 128, "cpu", train=False, generator=None, drop_last=False)
    assert task.evaluate(_Uniform(), resident, torch.device("cpu"))["excess_nll"] == pytest.approx(out["excess_nll"])
    part = task.evaluate(_Uniform(), DataLoader(Subset(val, range(100)), batch_size=50), torch.device("cpu"))
    assert "excess_nll" not in part  # a subset's NLL is not comparable with the split's Bayes NLL
    plain = build_datasets("colorshapes", augment=False).val
    assert "excess_nll" not in task.evaluate(_Uniform(), DataLoader(plain, batch_size=500), torch.device("cpu"))


# -- recipes, task and grid ---------------------------------------------------------------------


def test_recipes_pick_the_split_and_the_teacher_trains_longer():
    task = get_task("classification")
    student = task.recipe("colorshapes-few", "resnet8")
    teacher = task.teacher_recipe("colorshapes-few", "resnet20")
    assert dict(student.extra) == {"labelled_per_class": K, "repeat": few.REPEAT}
    assert dict(teacher.extra) == {}
    assert len(task.build_data("colorshapes-few", None, student).train) == 640
    assert len(task.build_data("colorshapes-few", None, teacher).train) == 2560

    def images_seen(r):
        return r.epochs * (2560 if not r.extra else K * 20 * r.extra["repeat"])

    assert images_seen(teacher) == 2 * images_seen(student)  # 30 720 images against 15 360 (960 steps each)
    assert student.milestones[-1] < student.epochs and teacher.milestones[-1] < teacher.epochs
    # another preset keeps its own recipe for teachers
    assert task.teacher_recipe("colorshapes-few", "resnet20", "colorshapes") == task.recipe("colorshapes", "resnet20")
    assert task.teacher_recipe("colorshapes", "resnet20") == task.recipe("colorshapes", "resnet20")


def test_task_declarations():
    task = get_task("classification")
    assert "colorshapes-few" in task.resident_datasets and "colorshapes-few" in task.presets
    assert task.default_pairs("colorshapes-few") == [("resnet20", "resnet8")]
    student = task.recipe("colorshapes-few", "resnet8")
    assert task.method_defaults("dkd", "colorshapes-few", "resnet20", "resnet8")["warmup"] == student.epochs // 12
    assert task.method_defaults("dkd", "colorshapes", "resnet20", "resnet8")["warmup"] == 1


def test_a_colorshapes_few_grid_trains_its_teacher_on_every_label():
    jobs = expand(GridSpec(task="classification", dataset="colorshapes-few", seeds=[0, 1, 2]))
    teacher, students = jobs[0], jobs[1:]
    assert teacher.role == "teacher" and teacher.dataset == "colorshapes-few" and teacher.student == "resnet20"
    assert teacher.recipe["extra"] == {} and teacher.recipe["epochs"] == 12
    assert all(j.recipe["extra"] == {"labelled_per_class": K, "repeat": few.REPEAT} for j in students)
    assert all(j.recipe["data_pipeline"] == "device" for j in jobs)
    from bench.tracking.tracker import recipe_preset

    assert {recipe_preset(j) for j in jobs} == {"colorshapes-few"}  # the teacher's own recipe is recognised


def test_the_default_grid_is_colorshapes_few_and_the_old_default_keeps_its_jobs():
    default = expand(grid_from_preset("default"))
    assert len(default) == 1 + 5 * 3 and {j.dataset for j in default} == {"colorshapes-few"}
    assert [j.job_hash for j in expand(grid_from_preset("colorshapes-few"))] == [j.job_hash for j in default]
    assert get_task("classification").default_dataset == "colorshapes-few"
    # `--preset colorshapes` is the old default grid, job for job (its finished runs are found again)
    old = expand(GridSpec(task="classification", dataset="colorshapes", seeds=3))
    assert [j.job_hash for j in expand(grid_from_preset("colorshapes"))] == [j.job_hash for j in old]
    assert old[0].job_hash == "d8183fd92925"  # the old default's teacher (tests/bench/test_pinned_hashes.py)


def test_tiny_training_run_reports_excess_nll(tmp_path):
    from bench.engine.loop import run_job
    from bench.jobs.spec import resolve_job

    common = {"task": "classification", "dataset": "colorshapes-few",
              "recipe_overrides": {"epochs": 1, "max_steps": 2, "batch_size": 16, "eval_every": 1}}  # fmt: skip
    teacher = run_job(resolve_job(student="resnet8", role="teacher", **common), tmp_path, device="cpu",
                      log=lambda m: None)  # fmt: skip
    student = resolve_job(student="resnet8", teacher="resnet8", method="kd",
                          teacher_ref=f"file:{teacher.student_path}", **common)  # fmt: skip
    res = run_job(student, tmp_path, device="cpu", log=lambda m: None)
    assert res.status == "FINISHED" and "last_excess_nll" in res.metrics
    assert res.metrics["last_excess_nll"] == pytest.approx(res.metrics["last_loss"] - 0.1036, abs=1e-4)


def test_a_students_split_override_leaves_the_teacher_on_every_label():
    """``--set recipe.extra=...`` (the students' split) must not move the teacher onto the students' few labels."""
    base = expand(GridSpec(task="classification", dataset="colorshapes-few", seeds=1, methods=("kd",)))
    fewer = expand(GridSpec(task="classification", dataset="colorshapes-few", seeds=1, methods=("kd",),
                            recipe={"extra": {"labelled_per_class": 4, "repeat": 8}, "epochs": 30}))  # fmt: skip
    teacher, students = fewer[0], fewer[1:]
    assert teacher.recipe["extra"] == {} and teacher.recipe["epochs"] == 30  # other recipe keys still reach it
    assert all(j.recipe["extra"] == {"labelled_per_class": 4, "repeat": 8} for j in students)
    own = expand(GridSpec(task="classification", dataset="colorshapes-few", seeds=1, methods=("kd",),
                          recipe={"extra": {"labelled_per_class": 4, "repeat": 8}},
                          teacher_recipe={"extra": {"labelled_per_class": 8, "repeat": 4}}))  # fmt: skip
    assert own[0].recipe["extra"] == {"labelled_per_class": 8, "repeat": 4}  # --set teacher.extra=... does
    assert base[0].job_hash == expand(GridSpec(task="classification", dataset="colorshapes-few", seeds=1,
                                               methods=("kd",), recipe={"extra": {"repeat": 1}}))[0].job_hash

"""A tuning trial's validation split: carved from the training split, seeded, class-balanced, never the eval split."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from methods.errors import UserError
from tasks.base import SplitPart, get_task, holdout_indices
from tasks.recipe import HOLDOUT, Recipe

RECIPE = Recipe(epochs=1, batch_size=16, lr=0.05)


def test_holdout_indices_are_seeded_balanced_and_a_partition():
    labels = np.repeat(np.arange(5), 40)
    kept, held = holdout_indices(len(labels), 0.1, seed=3, labels=labels)
    assert sorted([*kept, *held]) == list(range(200))
    assert Counter(labels[held].tolist()) == dict.fromkeys(range(5), 4)  # 10 % of every class
    again = holdout_indices(len(labels), 0.1, seed=3, labels=labels)
    assert np.array_equal(held, again[1])
    assert not np.array_equal(held, holdout_indices(len(labels), 0.1, seed=4, labels=labels)[1])
    kept, held = holdout_indices(50, 0.2, seed=0)  # by image where the task has no classes
    assert len(held) == 10 and set(kept).isdisjoint(held)


def test_digits_holdout_is_disjoint_from_the_evaluation_split_and_read_without_augmentation():
    task = get_task("classification")
    plain = task.build_split("digits", None, RECIPE)
    carved = task.build_split("digits", None, RECIPE.updated(extra={HOLDOUT: {"fraction": 0.25, "seed": 0}}))
    assert isinstance(carved.train, SplitPart) and isinstance(carved.val, SplitPart)
    # Positions in load_digits(): the hold-out comes from the training split only, never from its validation split.
    train_pos = set(plain.train.indices.tolist())
    eval_pos = set(plain.val.indices.tolist())
    held_pos = {int(plain.train.indices[i]) for i in carved.val.indices}
    kept_pos = {int(plain.train.indices[i]) for i in carved.train.indices}
    assert held_pos <= train_pos and held_pos.isdisjoint(eval_pos) and kept_pos.isdisjoint(held_pos)
    assert len(held_pos) + len(kept_pos) == len(train_pos)
    counts = Counter(carved.val.targets)
    assert max(counts.values()) - min(counts.values()) <= 1  # class-balanced
    # The held-out images are evaluated as validation images are: no random crop.
    x1, y1 = carved.val[0]
    x2, y2 = carved.val[0]
    assert torch.equal(x1, x2) and y1 == y2
    assert carved.val.resident_transform is not None and not carved.val.resident_transform.augments
    images, labels = carved.val.resident_data()
    assert len(images) == len(carved.val) and labels.tolist() == carved.val.targets
    assert carved.info["holdout"]["held_out"] == len(carved.val)


def test_a_job_with_a_holdout_evaluates_on_it(tmp_path):
    from bench.engine.build import build_job
    from bench.jobs.spec import resolve_job

    holdout = {HOLDOUT: {"fraction": 0.2, "seed": 1}}
    spec = resolve_job(task="classification", dataset="digits", student="resnet8",
                       recipe_overrides={"epochs": 1, "batch_size": 16, "extra": holdout})
    built = build_job(spec, tmp_path, torch.device("cpu"))
    carved = get_task("classification").build_split("digits", None, spec.recipe_obj())
    plain = get_task("classification").build_data("digits", None, RECIPE)
    evaluated = torch.cat([labels for _, labels in built.val_loader])
    assert len(evaluated) == len(carved.val) < len(plain.val)
    assert evaluated.tolist() == carved.val.targets  # the hold-out's images, in order


@pytest.mark.parametrize("bad", [{"fraction": 0.9, "seed": 0}, {"fraction": 0.1}, {"fraction": 0.1, "seed": -1}])
def test_a_bad_holdout_is_refused_when_the_recipe_is_built(bad):
    with pytest.raises(UserError, match="hold-out|holdout"):
        RECIPE.updated(extra={HOLDOUT: bad})

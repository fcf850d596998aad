"""Task specs answer everything a plan needs without torch; ``get_task`` still hands out the torch implementation.

Commands that do not train (``--help``, ``list``, ``report``, a misspelt arch, data set, preset or pair) must
not pay the seconds torch costs to import, so every question the job-planning layer asks a task is answered by
its :class:`~tasks.spec.TaskSpec`. The torch-free test runs in a subprocess where ``torch`` and ``torchvision``
cannot be imported (stub packages first on ``PYTHONPATH`` that record the attempt and raise), so an import
hidden behind a ``try``/``except ImportError`` is caught too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from methods.errors import UserError
from tasks.base import Task
from tasks.spec import TaskSpec, get_task, task_names, task_spec

ROOT = Path(__file__).resolve().parents[2]

#: Raises on import and leaves a mark, so the script can tell an import that was attempted and swallowed.
_BLOCKER = 'import builtins\nbuiltins.__dict__.setdefault("_blocked_imports", []).append(__name__)\n' \
           'raise ImportError("blocked")\n'  # fmt: skip

_SCRIPT = textwrap.dedent(
    """
    import builtins
    import sys

    import tasks
    from methods.catalog import BUILTIN
    from methods.errors import UserError
    from tasks import TaskSpec, task_names, task_spec

    assert task_names() == ["classification", "detection", "segmentation"], task_names()
    for name in task_names():
        spec = task_spec(name)
        assert isinstance(spec, TaskSpec) and spec.name == name
        assert spec.default_dataset in spec.datasets and spec.primary_metric in spec.metrics
        assert set(spec.resident_datasets) <= set(spec.datasets)
        assert set(spec.lower_is_better) <= set(spec.metrics) and set(spec.metric_decimals) <= set(spec.metrics)
        assert spec.primary_metric not in spec.lower_is_better and spec.decimals(spec.primary_metric) == 2
        archs = spec.archs()
        assert archs and len(set(archs)) == len(archs), archs
        usable = {preset: 0 for preset in spec.presets}
        for dataset in spec.datasets:
            pairs = spec.default_pairs(dataset)
            assert pairs, (name, dataset)
            for teacher, student in pairs:
                spec.check_names(dataset, teacher, student)
                spec.check_arch_pair(teacher, student)
                assert spec.teacher_recipe(dataset, teacher).epochs >= 1
                for preset in (None, *spec.presets):
                    try:
                        recipe = spec.recipe(dataset, student, preset)
                    except UserError:  # a preset of another data set
                        assert preset is not None, (name, dataset)
                        continue
                    assert recipe.epochs >= 1 and recipe.lr > 0
                    usable[preset] = usable.get(preset, 0) + 1
            teacher, student = pairs[0]
            classes = spec.default_num_classes(dataset)
            for arch in (teacher, student):
                taps = spec.tap_specs(arch, classes, dataset)
                assert taps and all(t.channels > 0 for t in taps.values()), (name, arch, taps)
            for method in BUILTIN:
                assert isinstance(spec.method_defaults(method, dataset, teacher, student), dict)
        assert all(usable.values()), (name, usable)  # every preset applies to some data set
        try:
            spec.check_names(spec.default_dataset, archs[0] + "x")
        except UserError as err:
            assert str(err).startswith(f"unknown architecture {archs[0] + 'x'!r} for task {name!r}; did you mean"), err
        else:
            raise AssertionError(f"{name}: a misspelt arch was accepted")
        try:
            spec.check_names(spec.default_dataset[:-1])
        except UserError as err:
            assert "unknown dataset" in str(err) and "did you mean" in str(err), err
        else:
            raise AssertionError(f"{name}: a misspelt data set was accepted")
        recipe = spec.recipe(spec.default_dataset, spec.default_pairs(spec.default_dataset)[0][1])
        assert spec.data_fingerprint(spec.default_dataset, None, recipe) == f"{spec.default_dataset}:embedded"

    # RetinaNet has no softmax class logits: KD and DKD are refused there with the reason, the others are not.
    det = task_spec("detection")
    for method in BUILTIN:
        try:
            det.method_defaults(method, "coco", "retinanet_r101", "retinanet_r50")
        except UserError as err:
            assert method in ("kd", "dkd") and "RetinaNet" in str(err), (method, err)
        else:
            assert method not in ("kd", "dkd"), method
    """
)


def test_specs_answer_without_torch(tmp_path: Path) -> None:
    for package in ("torch", "torchvision"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(_BLOCKER)
    script = _SCRIPT + textwrap.dedent(
        """
        blocked = builtins.__dict__.get("_blocked_imports", [])
        assert not blocked, f"imported {blocked}"
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "numpy", "PIL"))
        assert not heavy, heavy
        print("specs ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    assert "specs ok" in out.stdout


@pytest.mark.parametrize("name", ["classification", "detection", "segmentation"])
def test_get_task_is_the_torch_implementation_of_its_spec(name: str) -> None:
    spec, task = task_spec(name), get_task(name)
    assert isinstance(spec, TaskSpec) and not isinstance(spec, Task)
    assert isinstance(task, type(spec)) and isinstance(task, Task)
    assert f"{type(task).__module__}:{type(task).__name__}" == spec.implementation
    assert get_task(name) is task  # one instance per task
    assert task.name == name and task.archs() == spec.archs()


def test_unknown_task_names_the_likely_one() -> None:
    assert task_names() == ["classification", "detection", "segmentation"]
    with pytest.raises(UserError, match=r"unknown task 'segmentaton'; did you mean 'segmentation'\? valid: "):
        task_spec("segmentaton")
    with pytest.raises(UserError, match=r"unknown task 'pose'; valid: classification, detection, segmentation"):
        get_task("pose")


def test_classification_metrics_declare_direction_and_decimals():
    """The NLL metrics are lower-is-better and printed to 3 decimals; accuracies keep 2; an unknown one is refused."""
    spec = task_spec("classification")
    assert spec.lower_is_better == ("loss", "excess_nll")
    assert [spec.decimals(m) for m in ("top1", "top5", "loss", "excess_nll")] == [2, 2, 3, 3]
    spec.check_metric("excess_nll")
    with pytest.raises(UserError, match=r"unknown metric 'excess_nl' for task 'classification'; did you mean "
                                        r"'excess_nll'\?"):  # fmt: skip
        spec.check_metric("excess_nl")

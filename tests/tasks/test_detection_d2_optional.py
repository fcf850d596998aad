"""The detectron2 backend is optional: without it everything else works and ``d2_*`` archs say how to install it.

These tests run everywhere: detectron2 is hidden (``sys.modules["detectron2"] = None`` makes every import of it
fail) whether or not it is installed. Also the parts of the backend that need no detectron2: names, pairs,
tap specs, pair refusals (the ``d2_*`` recipes are in ``test_detection_presets.py``).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from bench.cli.app import app
from bench.jobs.grid import GridSpec, expand
from methods.base import UserError
from tasks.base import get_task
from tasks.detection import d2

TASK = get_task("detection")
R101, R18, MV2 = "d2_faster_rcnn_R_101_FPN", "d2_faster_rcnn_R_18_FPN", "d2_faster_rcnn_MV2_FPN"
runner = CliRunner()


@pytest.fixture
def no_detectron2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "detectron2", None)
    assert not d2.available()


def test_d2_archs_say_how_to_install_detectron2(no_detectron2) -> None:
    assert {R101, R18, MV2} <= set(TASK.archs())  # listed, so names are validated and shown
    for call in (
        lambda: TASK.check_names("shapes", R18),
        lambda: TASK.build_model(R18, 4, "shapes"),
        lambda: expand(GridSpec(task="detection", pairs=((R18, MV2),), methods=("kd",))),
    ):
        with pytest.raises(UserError, match="needs detectron2, which is not installed.*--no-build-isolation") as err:
            call()
        assert "\n" not in str(err.value)
    # what needs no detectron2 still works: tap specs, recipes, method defaults, the torchvision backend
    assert TASK.tap_specs(R18, 4, "shapes") == TASK.tap_specs("fasterrcnn_r18", 4, "shapes")
    assert TASK.method_defaults("dkd", "coco", R101, R18)["beta"] == 0.25
    assert TASK.build_model("fasterrcnn_mbv3s", 4, "shapes") is not None


def test_cli_without_detectron2(no_detectron2) -> None:
    assert runner.invoke(app, ["--help"]).exit_code == 0
    listed = runner.invoke(app, ["list", "archs", "--task", "detection"])
    assert listed.exit_code == 0 and "fasterrcnn_r18" in listed.output and "d2_faster_rcnn_MV2_FPN" in listed.output
    res = runner.invoke(app, ["run", "--task", "detection", "--pairs", f"{R18}:{MV2}", "--dry-run"])
    assert res.exit_code == 2 and res.output.startswith("error:") and "Traceback" not in res.output
    assert "needs detectron2" in res.output
    ok = runner.invoke(app, ["run", "--task", "detection", "--methods", "kd", "--dry-run"])  # torchvision default
    assert ok.exit_code == 0, ok.output


def test_importing_diffbench_never_imports_detectron2() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["detectron2"] = None
        import tasks, bench.cli.app
        from tasks.base import get_task
        t = get_task("detection")
        t.tap_specs("d2_faster_rcnn_R_18_FPN", 4, "shapes")
        assert not [m for m in sys.modules if m.startswith(("detectron2.", "tasks.detection.d2.backend"))]
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_unknown_d2_arch_lists_the_valid_ones() -> None:
    with pytest.raises(UserError, match="unknown architecture 'd2_faster_rcnn_R_34_FPN'.*d2_faster_rcnn_R_18_FPN"):
        TASK.check_names("shapes", "d2_faster_rcnn_R_34_FPN")


def test_pairs_across_backends_are_refused_from_the_names() -> None:
    with pytest.raises(UserError, match="mixes detection backends.*detectron2 teacher, torchvision student"):
        TASK.check_arch_pair(R101, "fasterrcnn_r18")
    with pytest.raises(UserError, match="mixes detection backends"):
        TASK.check_arch_pair("fasterrcnn_r101", R18)
    TASK.check_arch_pair(R101, R18)
    for teacher, student in d2.PAIRS.values():
        assert d2.is_d2(teacher) and d2.is_d2(student)

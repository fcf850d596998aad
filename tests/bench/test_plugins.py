"""Plugins: the README's example method, installed as a real entry point, runs through a grid to the report; an
architecture plugin too; ``--import`` by name and by path; one-line errors; nothing loads for ``--help``;
timm models as ``timm/<model>`` where timm is installed.

"Installed" means what ``pip install`` leaves for :mod:`importlib.metadata`: a ``<name>.dist-info`` folder
with ``METADATA`` and ``entry_points.txt`` on a ``sys.path`` entry beside the module (written here from the
README's ``pyproject.toml`` snippet), instead of running pip, which would take longer and touch the venv.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from bench.cli.app import app
from bench.jobs import plugins
from methods import catalog
from methods.base import METHODS, Progress, TapSpec, UserError, build_method
from tasks.classification.models import zoo

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

ARCH_PLUGIN = '''
"""A tiny CIFAR-style net registered from outside diffbench."""
from torch import nn

from tasks.classification.models.zoo import register_arch


@register_arch(hint=("layer2", 16, 2), feat=("layer3", 32, 4), logits="fc", input_size=32)
def plugin_net(num_classes: int) -> nn.Module:
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            block = lambda i, o, s: nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
            self.layer1, self.layer2, self.layer3 = block(3, 8, 1), block(8, 16, 2), block(16, 32, 2)
            self.fc = nn.Linear(32, num_classes)

        def forward(self, x):
            return self.fc(self.layer3(self.layer2(self.layer1(x))).mean((2, 3)))

    return Net()
'''


def readme_block(name: str) -> str:
    """The code block after ``<!-- plugin-example: NAME -->`` in the README (so README and test cannot drift)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- plugin-example: {re.escape(name)} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"README has no plugin example {name}"
    return match.group(1)


def install(site: Path, dist: str, modules: dict[str, str], entry_points: dict[str, dict[str, str]]) -> None:
    """What ``pip install`` of a pure-Python distribution leaves in site-packages: modules and a dist-info."""
    site.mkdir(parents=True, exist_ok=True)
    for name, code in modules.items():
        (site / f"{name}.py").write_text(code)
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
                for group, eps in entry_points.items())  # fmt: skip
    )


@pytest.fixture
def clean_registries(monkeypatch):
    """Plugins register into process-wide registries: forget what a test added, so tests stay independent."""
    for name in catalog.BUILTIN:  # built-in classes register on first use: register them before the snapshot
        METHODS.get(name)
    methods_before, archs_before, mods_before = set(METHODS._entries), set(zoo.ARCHS), set(sys.modules)
    monkeypatch.setattr(catalog, "_PLUGINS", dict(catalog._PLUGINS))
    monkeypatch.setattr(plugins, "_loaded_entry_points", set())
    monkeypatch.setattr(plugins, "_imported", [])
    yield
    for name in set(METHODS._entries) - methods_before:
        del METHODS._entries[name]
    for name in set(zoo.ARCHS) - archs_before:
        del zoo.ARCHS[name]
    for name in set(sys.modules) - mods_before:
        if name in ("kd_anneal", "plugin_net", "broken_plugin", "dup_plugin", "local_plugin"):
            del sys.modules[name]


@pytest.fixture
def installed_example(tmp_path, monkeypatch, clean_registries) -> Path:
    """The README's kd_anneal and an architecture plugin, installed as entry points on a temporary sys.path entry."""
    eps = tomllib.loads(readme_block("pyproject.toml"))["project"]["entry-points"]
    site = tmp_path / "site"
    install(site, "kd_anneal_plugin", {"kd_anneal": readme_block("kd_anneal.py")}, eps)
    install(site, "net_plugin", {"plugin_net": ARCH_PLUGIN}, {"diffbench.archs": {"plugin_net": "plugin_net"}})
    monkeypatch.syspath_prepend(str(site))
    return site


def _ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


def _one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert out.startswith("error:") and "\n" not in out and "Traceback" not in out, out
    for n in needles:
        assert n in out, out
    return out


# -- the README's example, installed, through a grid ------------------------------------------------------------
def test_entry_point_plugins_run_through_a_grid_to_the_report(installed_example, tmp_path):
    out = tmp_path / "results"
    args = ["run", "--executor", "local", "--pairs", "resnet8:plugin_net", "--methods", "kd_anneal", "--epochs", "1",
            "--max-steps", "2", "--batch-size", "16", "--dataset", "digits", "--output", str(out),
            "--set", "kd_anneal.t_start=6"]  # fmt: skip
    _ok(runner.invoke(app, args))
    report = json.loads(_ok(runner.invoke(app, ["report", "--output", str(out), "--format", "json"])))
    cells = report["records"] if isinstance(report, dict) and "records" in report else report
    found = {(c["student"], c["method"]) for c in cells}
    assert {("plugin_net", "kd_anneal"), ("plugin_net", "vanilla")} <= found, found
    (row,) = [c for c in cells if c["method"] == "kd_anneal"]
    assert row["n"] == 1
    # the job ran the plugin with the grid's setting: its resolved hyper-parameters are in the job's config
    (job,) = [c for c in (json.loads(p.read_text()) for p in out.glob("jobs/*/config.json"))
              if c["method"] == "kd_anneal"]  # fmt: skip
    assert job["hparams"] == {"t_start": 6.0, "t_end": 2.0, "ce_weight": 0.1, "kd_weight": 0.9}
    assert (Path(out) / "jobs" / job["teacher_ref"].removeprefix("job:") / "student.pt").is_file()  # resnet8 teacher


def test_readme_example_follows_its_schedule(installed_example):
    plugins.load_plugins()
    s = {"logits": TapSpec("logits", 5, 0, ("logits",), "fc")}
    method = build_method("kd_anneal", s, s, t_start=8.0, t_end=2.0)
    assert method.temperature(Progress(epoch=1, epochs=4, step=0, steps_per_epoch=10)) == 8.0
    assert method.temperature(Progress(epoch=3, epochs=4, step=0, steps_per_epoch=10)) == pytest.approx(5.0)
    assert method.temperature(Progress(epoch=4, epochs=4, step=10, steps_per_epoch=10)) == pytest.approx(2.0)
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    p = Progress(epoch=3, epochs=4, step=0, steps_per_epoch=10)  # T = 5
    t = 5.0
    want = 0.9 * t**2 * (F.softmax(zt / t, 1) * (F.log_softmax(zt / t, 1) - F.log_softmax(zs / t, 1))).sum(1).mean()
    torch.testing.assert_close(method({"logits": zs}, {"logits": zt}, None, p)["kd"], want)
    assert method.task_weight == pytest.approx(0.1)
    with pytest.raises(UserError, match="t_end"):
        build_method("kd_anneal", s, s, t_end=0.0)


def test_arch_plugin_is_listed_and_its_taps_hold(installed_example):
    out = _ok(runner.invoke(app, ["list", "archs", "--task", "classification"]))
    assert "plugin_net" in out
    assert zoo.validate_taps("plugin_net", 10) == {"hint": (2, 16, 16, 16), "feat": (2, 32, 8, 8), "logits": (2, 10)}


def test_help_loads_no_plugin(tmp_path, monkeypatch, clean_registries):
    site = tmp_path / "site"
    install(site, "broken", {"broken_plugin": "raise RuntimeError('boom at import')\n"},
            {"diffbench.methods": {"broken": "broken_plugin"}})  # fmt: skip
    monkeypatch.syspath_prepend(str(site))
    for cmd in (["run", "--help"], ["list", "--help"], ["--help"]):
        assert runner.invoke(app, cmd).exit_code == 0
    assert "broken_plugin" not in sys.modules
    _one_line_error(runner.invoke(app, ["list", "methods"]), "plugin 'broken'", "broken_plugin", "boom at import")


# -- --import ---------------------------------------------------------------------------------------------------
def test_import_by_module_name_and_by_path(tmp_path, monkeypatch, clean_registries):
    (tmp_path / "local_plugin.py").write_text(readme_block("kd_anneal.py"))
    monkeypatch.chdir(tmp_path)  # a console script's sys.path lacks the current folder; --import adds it
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert "kd_anneal" not in _ok(runner.invoke(app, ["list", "methods"]))
    listed = _ok(runner.invoke(app, ["list", "methods", "--import", "local_plugin"]))
    assert "kd_anneal: KD with a temperature" in listed
    assert plugins.imported_modules() == ["local_plugin"]
    del METHODS._entries["kd_anneal"], sys.modules["local_plugin"], catalog._PLUGINS["kd_anneal"]
    plugins._imported.clear()
    listed = _ok(runner.invoke(app, ["list", "methods", "--import", str(tmp_path / "local_plugin.py")]))
    assert "kd_anneal" in listed and plugins.imported_modules() == [str(tmp_path / "local_plugin.py")]


def test_import_errors_are_one_line(tmp_path, monkeypatch, clean_registries):
    monkeypatch.chdir(tmp_path)
    _one_line_error(runner.invoke(app, ["list", "methods", "--import", "no_such_plugin"]),
                    "--import no_such_plugin", "no module named 'no_such_plugin'")  # fmt: skip
    _one_line_error(runner.invoke(app, ["list", "methods", "--import", "missing/x.py"]), "no such file")
    (tmp_path / "broken_plugin.py").write_text("import no_such_dependency_xyz\n")
    _one_line_error(runner.invoke(app, ["list", "methods", "--import", "broken_plugin"]),
                    "--import broken_plugin: importing it failed", "no_such_dependency_xyz")  # fmt: skip
    (tmp_path / "dup_plugin.py").write_text(readme_block("kd_anneal.py").replace('"kd_anneal"', '"kd"'))
    _one_line_error(runner.invoke(app, ["list", "methods", "--import", "dup_plugin"]), "method 'kd' registered twice")


def test_yaml_imports_key(tmp_path, monkeypatch, clean_registries):
    """``imports:`` in experiment.yaml is the ``--imports`` flag (the schema takes every long flag as a key)."""
    (tmp_path / "local_plugin.py").write_text(readme_block("kd_anneal.py"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp.yaml").write_text("imports: [local_plugin]\nmethods: [kd_anneal]\npairs: ['resnet8:resnet8']\n")
    out = _ok(runner.invoke(app, ["run", "--config", str(tmp_path / "exp.yaml"), "--dry-run", "--dataset", "digits"]))
    assert "3 jobs" in out and "t_start" in out  # teacher, vanilla and kd_anneal, with the plugin's own settings


# -- timm -------------------------------------------------------------------------------------------------------
def test_timm_models_are_archs_with_taps_from_timm():
    timm = pytest.importorskip("timm")
    from tasks.base import TapRecorder, get_task

    task = get_task("classification")
    task.check_names("digits", "timm/test_resnet")
    specs = task.tap_specs("timm/test_resnet", 7, "digits")
    assert {n: (s.module, s.channels, s.stride) for n, s in specs.items()} == {
        "hint": ("layer3", 192, 16), "feat": ("layer4", 96, 32), "logits": ("fc", 7, 0)}  # timm's feature_info
    model = task.build_model("timm/test_resnet", 7, "digits").eval()
    assert isinstance(model, timm.models.ResNet)
    rec = TapRecorder(model, {n: s.module for n, s in specs.items()})
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        taps = rec.pop()
        assert torch.equal(taps["feat"], model.forward_features(x))  # the map the head pools
    assert torch.equal(taps["logits"], out)
    # a feature method pairs two timm models by their taps: FitNet's regressor maps 192 to 48 hint channels
    t_specs = task.tap_specs("timm/test_efficientnet", 7, "digits")
    assert (t_specs["hint"].channels, t_specs["hint"].stride) == (48, 16)
    teacher = task.build_model("timm/test_efficientnet", 7, "digits").eval()
    t_rec = TapRecorder(teacher, {n: s.module for n, s in t_specs.items()})
    fitnet = build_method("fitnet", specs, t_specs)
    model.train()
    model(x)
    with torch.no_grad():
        teacher(x)
    loss = fitnet(rec.pop(), t_rec.pop(), None, Progress())["fitnet"]
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(UserError, match="unknown timm model 'resnet_nope'"):
        task.check_names("digits", "timm/resnet_nope")
    with pytest.raises(UserError, match="not an \\[N, C, H, W\\] feature map"):
        zoo.get_arch("timm/test_vit")


def test_timm_student_through_a_grid(tmp_path):
    pytest.importorskip("timm")
    out = tmp_path / "results"
    args = ["run", "--executor", "local", "--pairs", "resnet8:timm/test_resnet", "--methods", "kd", "--epochs", "1",
            "--max-steps", "2", "--batch-size", "16", "--dataset", "digits", "--output", str(out)]  # fmt: skip
    _ok(runner.invoke(app, args))
    report = json.loads(_ok(runner.invoke(app, ["report", "--output", str(out), "--format", "json"])))
    cells = report["records"] if isinstance(report, dict) and "records" in report else report
    assert ("timm/test_resnet", "kd") in {(c["student"], c["method"]) for c in cells}

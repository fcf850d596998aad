"""The bad-input matrix, re-runnable: every command fed what a clumsy or hostile user types.

    python -m bench.perf.bad_inputs            # prints one row per case and the count refused cleanly

A case passes when the command exits 2, prints exactly one ``error:`` line, no traceback, and started
nothing (no ``jobs/`` folder, no job run in a store it created). Cases run in-process through Typer's test
runner against fixtures this script writes into a temporary folder (CIFAR-100 pickles that are not pickles,
a COCO json with a 3-number box, a teacher checkpoint of another architecture, a foreign SQLite file...).
:data:`ACCEPTED` lists the other side: numbers written the ways ``float()`` reads them (``1e-4``, ``1.0e30``), which a
dry run must read as those numbers, from flags, ``--set`` and YAML alike.
"""

from __future__ import annotations

import json
import os
import pickle
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

Case = tuple[str, Callable[[Path], list[str]]]


def _cifar_garbage(t: Path) -> str:
    d = t / "cifar_garbage" / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test", "meta"):
        (d / name).write_bytes(b"\x80\x04not a pickle")
    return str(d.parent)


def _cifar_wrong_keys(t: Path) -> str:
    d = t / "cifar_keys" / "cifar-100-python"
    d.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test"):
        (d / name).write_bytes(pickle.dumps({"data": [[0] * 3072], "labels": [0]}))
    (d / "meta").write_bytes(pickle.dumps({"fine_label_names": [str(i) for i in range(100)]}))
    return str(d.parent)


def _coco(t: Path, name: str, annotation: dict | None, image: bool = True, raw: str | None = None) -> str:
    root = t / name
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val"):
        (root / f"{split}2017").mkdir(exist_ok=True)
        if image:
            from PIL import Image

            Image.new("RGB", (64, 48)).save(root / f"{split}2017" / "1.jpg")
        doc = {"images": [{"id": 1, "file_name": "1.jpg", "width": 64, "height": 48}],
               "categories": [{"id": 1, "name": "thing"}],
               "annotations": [annotation or {"id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10],
                                              "area": 100, "iscrowd": 0}]}  # fmt: skip
        (root / "annotations" / f"instances_{split}2017.json").write_text(raw if raw is not None else json.dumps(doc))
    return str(root)


def _teacher(t: Path, arch: str, garbage: bool = False) -> str:
    import torch

    from tasks.classification.models import zoo

    path = t / f"teacher_{arch}_{int(garbage)}.pth"
    if garbage:
        path.write_bytes(os.urandom(4096))
    else:
        torch.save({"model": zoo.build(arch, 10).state_dict()}, path)
    return str(path)


def _cpus() -> int:
    """The CPUs a local Ray instance would get here."""
    return len(os.sched_getaffinity(0))


def _file(t: Path, name: str, data: bytes) -> str:
    path = t / name
    path.write_bytes(data)
    return str(path)


def _foreign_db(t: Path) -> str:
    out = t / "foreign"
    out.mkdir(exist_ok=True)
    with sqlite3.connect(out / "mlflow.db") as db:
        db.execute("create table recipes (name text)")
    return str(out)


def _garbage_db(t: Path) -> str:
    out = t / "garbage"
    out.mkdir(exist_ok=True)
    (out / "mlflow.db").write_bytes(os.urandom(8192))
    return str(out)


RUN = ["run", "--pairs", "resnet8:resnet8", "--methods", "kd", "--epochs", "1", "--max-steps", "1", "--dataset",
       "digits"]  # fmt: skip
DET = ["run", "--task", "detection", "--dataset", "coco", "--pairs", "fasterrcnn_r18:fasterrcnn_mbv3s", "--methods",
       "kd", "--epochs", "1", "--batch-size", "1"]  # fmt: skip
#: RUN without --epochs (cases that give the epochs some other way).
RUN_ANY_EPOCHS = [*RUN[:5], "--max-steps", "1", "--dataset", "digits"]
TRAIN = ["train", "--student", "resnet8", "--dataset", "digits", "--epochs", "1", "--max-steps", "1"]

CASES: list[Case] = [
    # data
    ("run: missing CIFAR-100 folder", lambda t: [*RUN, "--dataset", "cifar100", "--data-dir", str(t / "none")]),
    ("run: CIFAR-100 files that are not pickles", lambda t: [*RUN, "--dataset", "cifar100", "--data-dir",
                                                               _cifar_garbage(t)]),  # fmt: skip
    ("run: CIFAR-10 pickles given as CIFAR-100", lambda t: [*RUN, "--dataset", "cifar100", "--data-dir",
                                                              _cifar_wrong_keys(t)]),  # fmt: skip
    ("run: COCO json truncated", lambda t: [*DET, "--data-dir", _coco(t, "coco_trunc", None, raw='{"images": [')]),
    ("run: COCO bbox with 3 numbers", lambda t: [*DET, "--data-dir", _coco(t, "coco_3", {
        "id": 7, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3], "area": 1, "iscrowd": 0})]),
    ("run: COCO bbox as a string", lambda t: [*DET, "--data-dir", _coco(t, "coco_str", {
        "id": 8, "image_id": 1, "category_id": 1, "bbox": "1 2 3 4", "area": 1, "iscrowd": 0})]),
    ("run: COCO image missing", lambda t: [*DET, "--data-dir", _coco(t, "coco_noimg", None, image=False)]),
    ("run: batch larger than the data set", lambda t: [*RUN, "--batch-size", "5000"]),
    ("run: dataset of another task", lambda t: [*RUN, "--dataset", "coco"]),
    ("run: unknown dataset", lambda t: [*RUN, "--dataset", "mnist"]),
    ("run: unknown task", lambda t: [*RUN, "--task", "pose"]),
    # teachers
    ("run: teacher of another architecture", lambda t: [*RUN, "--teacher-checkpoint",
                                                          f"resnet8={_teacher(t, 'resnet20')}"]),  # fmt: skip
    ("run: garbage teacher checkpoint", lambda t: [*RUN, "--teacher-checkpoint",
                                                   f"resnet8={_teacher(t, 'resnet8', True)}"]),  # fmt: skip
    ("run: missing teacher checkpoint", lambda t: [*RUN, "--teacher-checkpoint", f"resnet8={t / 'none.pth'}"]),
    ("run: teacher checkpoint without ARCH=", lambda t: [*RUN, "--teacher-checkpoint", "resnet8.pth"]),
    ("run: teacher checkpoint for an unused arch", lambda t: [*RUN, "--teacher-checkpoint",
                                                                f"resnet20={_teacher(t, 'resnet20')}"]),  # fmt: skip
    # names and pairs
    ("run: unknown method", lambda t: [*RUN, "--methods", "kd,foo"]),
    ("run: unknown architecture", lambda t: [*RUN, "--pairs", "resnet8:resnet999"]),
    ("run: pair without colon", lambda t: [*RUN, "--pairs", "resnet8"]),
    ("run: mixed detector families", lambda t: ["run", "--task", "detection", "--pairs",
                                               "fasterrcnn_r18:retinanet_r18", "--methods", "fitnet"]),  # fmt: skip
    ("run: KD on RetinaNet", lambda t: ["run", "--task", "detection", "--pairs", "retinanet_r50:retinanet_r18",
                                       "--methods", "kd"]),  # fmt: skip
    ("run: unknown preset", lambda t: [*RUN, "--preset", "huge"]),
    ("run: unknown recipe preset", lambda t: [*RUN, "--recipe", "huge"]),
    # hyper-parameters
    ("run: hyper-parameter not a number", lambda t: [*RUN, "--set", "kd.temperature=abc"]),
    ("run: hyper-parameter out of range", lambda t: [*RUN, "--set", "kd.temperature=-2"]),
    ("run: hyper-parameter NaN", lambda t: [*RUN, "--set", "kd.kd_weight=.nan"]),
    ("run: unknown hyper-parameter", lambda t: [*RUN, "--set", "kd.betta=3"]),
    ("run: --set for a method not run", lambda t: [*RUN, "--set", "dkd.beta=6"]),
    ("run: --set without scope", lambda t: [*RUN, "--set", "temperature=2"]),
    ("run: --set without value", lambda t: [*RUN, "--set", "kd.temperature"]),
    ("run: unknown recipe field", lambda t: [*RUN, "--set", "recipe.momentumm=0.5"]),
    ("run: recipe field of the wrong type", lambda t: [*RUN, "--set", "recipe.weight_decay=lots"]),
    ("run: boolean hyper-parameter as text", lambda t: ["run", "--pairs", "resnet8:resnet8", "--methods",
                                                       "diffkd", "--dataset", "digits", "--set",
                                                       "diffkd.use_ae=maybe"]),  # fmt: skip
    # recipe flags
    ("run: --lr nan", lambda t: [*RUN, "--lr", "nan"]),
    ("run: --lr inf", lambda t: [*RUN, "--lr", "inf"]),
    ("run: --lr -1", lambda t: [*RUN, "--lr", "-1"]),
    ("run: --lr text", lambda t: [*RUN, "--lr", "fast"]),
    ("run: --epochs 0", lambda t: [*RUN, "--epochs", "0"]),
    ("run: --batch-size 0", lambda t: [*RUN, "--batch-size", "0"]),
    ("run: --max-steps 0", lambda t: [*RUN, "--max-steps", "0"]),
    ("run: --seeds 0", lambda t: [*RUN, "--seeds", "0"]),
    ("run: --seeds text", lambda t: [*RUN, "--seeds", "many"]),
    ("run: --seeds -1,2", lambda t: [*RUN, "--seeds", "-1,2"]),
    ("run: --precision fp8", lambda t: [*RUN, "--precision", "fp8"]),
    ("run: --compile bogus", lambda t: [*RUN, "--compile", "bogus"]),
    ("run: --channels-last maybe", lambda t: [*RUN, "--channels-last", "maybe"]),
    ("run: --data-pipeline device for folders", lambda t: [*RUN, "--dataset", "imagenet", "--pairs",
                                                             "resnet34:resnet18", "--data-pipeline", "device",
                                                             "--data-dir", str(t)]),  # fmt: skip
    ("run: --scale-lr bogus", lambda t: [*RUN, "--scale-lr", "sqrt"]),
    ("run: --sync-bn maybe", lambda t: [*RUN, "--sync-bn", "maybe"]),
    # resources and devices
    ("run: --device tpu", lambda t: [*RUN, "--device", "tpu"]),
    ("run: --device cuda without CUDA", lambda t: [*RUN, "--device", "cuda"]),
    ("run: --gpus-per-job -1", lambda t: [*RUN, "--gpus-per-job", "-1"]),
    ("run: --gpus-per-job 1.5", lambda t: [*RUN, "--gpus-per-job", "1.5"]),
    ("run: --gpus-per-job 1 on a machine without GPU", lambda t: [*RUN, "--gpus-per-job", "1"]),
    ("run: --cpus-per-job -1", lambda t: [*RUN, "--cpus-per-job", "-1"]),
    ("run: --cpus-per-job 0", lambda t: [*RUN, "--cpus-per-job", "0"]),
    ("run: --max-concurrent -1", lambda t: [*RUN, "--max-concurrent", "-1"]),
    ("run: --max-failures -1", lambda t: [*RUN, "--max-failures", "-1"]),
    ("run: --workers-per-job 0", lambda t: [*RUN, "--workers-per-job", "0"]),
    ("run: --workers-per-job with the local executor", lambda t: [*RUN, "--workers-per-job", "2", "--executor",
                                                                   "local"]),  # fmt: skip
    ("run: batch not divisible by the workers", lambda t: [*RUN, "--workers-per-job", "3", "--batch-size", "16"]),
    ("run: --executor slurm", lambda t: [*RUN, "--executor", "slurm"]),
    ("run: --address not HOST:PORT", lambda t: [*RUN, "--address", "localhost"]),
    ("run: --address unreachable", lambda t: [*RUN, "--address", "127.0.0.1:9"]),
    # stores and files
    ("run: --tracking-uri foo://bar", lambda t: [*RUN, "--tracking-uri", "foo://bar"]),
    ("run: --tracking-uri dead server", lambda t: [*RUN, "--tracking-uri", "http://127.0.0.1:9"]),
    ("run: --output is a file", lambda t: [*RUN, "--output", _file(t, "a_file", b"x")]),
    ("run: --config missing", lambda t: [*RUN, "--config", str(t / "none.yaml")]),
    ("run: --config binary", lambda t: [*RUN, "--config", _file(t, "bin.yaml", bytes(range(256)) * 4)]),
    ("run: --config not YAML", lambda t: [*RUN, "--config", _file(t, "bad.yaml", b"methods: [kd\n")]),
    ("run: --config a list", lambda t: [*RUN, "--config", _file(t, "list.yaml", b"- a\n- b\n")]),
    ("run: --config unknown key", lambda t: [*RUN, "--config", _file(t, "key.yaml", b"tsk: x\n")]),
    ("run: --config wrong type", lambda t: [*RUN, "--config", _file(t, "type.yaml", b"batch_size: many\n")]),
    ("run: unknown flag", lambda t: [*RUN, "--epoch", "3"]),
    # train
    ("train: no student", lambda t: ["train", "--dataset", "digits"]),
    ("train: method without teacher", lambda t: [*TRAIN, "--method", "kd"]),
    ("train: missing teacher checkpoint", lambda t: [*TRAIN, "--method", "kd", "--teacher", "resnet8",
                                                     "--teacher-checkpoint", str(t / "none.pth")]),  # fmt: skip
    ("train: --set of another method", lambda t: [*TRAIN, "--method", "kd", "--teacher", "resnet8",
                                                  "--teacher-checkpoint", _teacher(t, "resnet8"), "--set",
                                                  "dkd.beta=6"]),  # fmt: skip
    ("train: --workers 0", lambda t: [*TRAIN, "--workers", "0"]),
    ("train: --batch-size 16 over 3 workers", lambda t: [*TRAIN, "--workers", "3", "--batch-size", "16"]),
    ("train: unknown architecture", lambda t: ["train", "--student", "resnet9"]),
    # eval
    ("eval: missing checkpoint", lambda t: ["eval", "--arch", "resnet8", "--checkpoint", str(t / "none.pth")]),
    ("eval: garbage checkpoint", lambda t: ["eval", "--arch", "resnet8", "--checkpoint",
                                            _teacher(t, "resnet8", True)]),  # fmt: skip
    ("eval: checkpoint of another architecture", lambda t: ["eval", "--arch", "resnet8", "--checkpoint",
                                                            _teacher(t, "resnet20")]),  # fmt: skip
    ("eval: no --arch for a foreign checkpoint", lambda t: ["eval", "--checkpoint", _teacher(t, "resnet8")]),
    # report
    ("report: no store", lambda t: ["report", "--output", str(t / "nostore")]),
    ("report: unknown task", lambda t: ["report", "--task", "nosuch", "--output", str(t / "nostore")]),
    ("report: garbage mlflow.db", lambda t: ["report", "--output", _garbage_db(t)]),
    ("report: foreign SQLite file", lambda t: ["report", "--output", _foreign_db(t)]),
    ("report: unknown format", lambda t: ["report", "--format", "pdf"]),
    ("report: bad --epoch", lambda t: ["report", "--epoch", "middle"]),
    # others
    ("speed: unknown method", lambda t: ["speed", "--teacher", "resnet8", "--student", "resnet8", "--methods",
                                         "foo", "--device", "cpu"]),  # fmt: skip
    ("speed: unknown precision", lambda t: ["speed", "--teacher", "resnet8", "--student", "resnet8", "--precision",
                                            "fp8", "--device", "cpu"]),  # fmt: skip
    ("list: unknown kind", lambda t: ["list", "things"]),
    ("ui: no store", lambda t: ["ui", "--output", str(t / "nostore")]),
    ("export: unknown source", lambda t: ["export", "0123456789ab", "--output", str(t / "nostore")]),
    # numbers: one parser for flags, --set and YAML; ranges checked before anything starts
    ("run: --seeds a count of 2^32", lambda t: [*RUN, "--seeds", "4294967296"]),
    ("run: --seeds a seed above 2^32-1", lambda t: [*RUN, "--seeds", "0,4294967296"]),
    ("run: --epochs 2.5", lambda t: [*RUN_ANY_EPOCHS, "--epochs", "2.5"]),
    ("run: --set recipe.epochs=true", lambda t: [*RUN_ANY_EPOCHS, "--set", "recipe.epochs=true"]),
    ("run: --set recipe.milestones of text", lambda t: [*RUN, "--set", "recipe.milestones=[abc]"]),
    ("run: --config epochs: [3]", lambda t: [*RUN_ANY_EPOCHS, "--config",
                                            _file(t, "ep_list.yaml", b"epochs: [3]\n")]),  # fmt: skip
    ("run: --config epochs: true", lambda t: [*RUN_ANY_EPOCHS, "--config",
                                             _file(t, "ep_bool.yaml", b"epochs: true\n")]),  # fmt: skip
    ("run: --config lr: [0.1]", lambda t: [*RUN, "--config", _file(t, "lr_list.yaml", b"lr: [0.1]\n")]),
    ("train: --seed 4294967296", lambda t: [*TRAIN, "--seed", "4294967296"]),
    ("train: --seed -1", lambda t: [*TRAIN, "--seed", "-1"]),
    # paths and stores: one line within seconds
    ("run: --output ''", lambda t: [*RUN, "--output", ""]),
    ("run: --output with a 300-character name", lambda t: [*RUN, "--output", str(t / ("o" * 300))]),
    ("run: --tracking-uri sqlite:////proc/x.db", lambda t: [*RUN, "--tracking-uri", "sqlite:////proc/x.db"]),
    ("run: --tracking-uri sqlite under a file", lambda t: [
        *RUN, "--tracking-uri", f"sqlite:///{_file(t, 'plain', b'x')}/x/mlflow.db"]),  # fmt: skip
    ("run: --config /dev/zero", lambda t: [*RUN, "--config", "/dev/zero"]),
    ("run: --config a folder", lambda t: [*RUN, "--config", str(t)]),
    # resources no local Ray instance can meet: refused before Ray starts
    ("run: --cpus-per-job 99 (more than this machine)", lambda t: [*RUN, "--cpus-per-job", str(_cpus() + 97)]),
    ("run: --workers-per-job above this machine's CPUs", lambda t: [
        *RUN, "--workers-per-job", str(_cpus() + 1), "--batch-size", str(8 * (_cpus() + 1))]),  # fmt: skip
    ("run: workers x CPUs above this machine's CPUs", lambda t: [
        *RUN, "--workers-per-job", "2", "--cpus-per-job", str(2 * _cpus() + 2), "--batch-size", "16"]),  # fmt: skip
]

#: Values that must be *accepted*, read as numbers: ``(name, arguments, recipe field, expected value)``. YAML 1.1
#: reads 1e-4 and 1.0e30 as text; Python's float() reads them as numbers, and so does diffbench.
ACCEPTED: list[tuple[str, Callable[[Path], list[str]], str, float]] = [
    ("--set recipe.weight_decay=1e-4", lambda t: [*RUN, "--set", "recipe.weight_decay=1e-4"], "weight_decay", 1e-4),
    ("--set recipe.lr=1e30", lambda t: [*RUN, "--set", "recipe.lr=1e30"], "lr", 1e30),
    ("--set recipe.lr=1.0e30", lambda t: [*RUN, "--set", "recipe.lr=1.0e30"], "lr", 1e30),
    ("--lr 1e-4", lambda t: [*RUN, "--lr", "1e-4"], "lr", 1e-4),
    ("--epochs 1e1", lambda t: [*RUN_ANY_EPOCHS, "--epochs", "1e1"], "epochs",
     10),
    ("YAML lr: 1.0e30", lambda t: [*RUN, "--config", _file(t, "lr.yaml", b"lr: 1.0e30\n")], "lr", 1e30),
    ("YAML set: {recipe: {weight_decay: 1e-4}}", lambda t: [*RUN, "--config", _file(
        t, "wd.yaml", b"set: {recipe: {weight_decay: 1e-4}}\n")], "weight_decay", 1e-4),
    ("YAML epochs: 1e1", lambda t: [*RUN_ANY_EPOCHS, "--config",
                                    _file(t, "ep.yaml", b"epochs: 1e1\n")], "epochs", 10),  # fmt: skip
]


def check(args: list[str], out: Path) -> tuple[bool, str]:
    """Run one case; ``(refused cleanly, why not or the error line)``."""
    from typer.testing import CliRunner

    from bench.cli.app import app

    if "--output" not in args and args[0] in ("run", "train"):
        args = [*args, "--output", str(out)]
    result = CliRunner().invoke(app, args)
    text = result.output
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    if result.exit_code != 2:
        return False, f"exit {result.exit_code}: {text.strip().splitlines()[-1:] or ['(no output)']}"
    if "Traceback" in text or len(errors) != 1:
        return False, f"{len(errors)} error lines: {text.strip()[:300]}"
    if (out / "jobs").exists():
        return False, "a job folder was created"
    return True, errors[0][:160]


def check_accepted(args: list[str], field: str, expected: float) -> tuple[bool, str]:
    """Run one accepted case with ``--dry-run --json``; ``(read as the number, what was read)``."""
    from typer.testing import CliRunner

    from bench.cli.app import app

    result = CliRunner().invoke(app, [*args, "--dry-run", "--json"])
    if result.exit_code != 0:
        return False, f"exit {result.exit_code}: {result.output.strip()[:200]}"
    start = result.output.index("{")
    recipes = [j["recipe"] for j in json.loads(result.output[start:])["jobs"]]
    got = {r[field] for r in recipes}
    return got == {expected}, f"{field} = {', '.join(map(repr, sorted(got)))}"


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="bad inputs")
    for col in ("case", "refused", "line"):
        table.add_column(col, overflow="fold")
    passed = accepted = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        for i, (name, make) in enumerate(CASES):
            out = root / f"out{i}"
            ok, line = check(make(root), out)
            passed += ok
            table.add_row(name, "yes" if ok else "[red]NO[/]", line)
        for name, make, field, expected in ACCEPTED:
            ok, line = check_accepted(make(root), field, expected)
            accepted += ok
            table.add_row(f"accepted: {name}", "yes" if ok else "[red]NO[/]", line)
    console.print(table)
    console.print(f"refused cleanly: {passed}/{len(CASES)}; read as numbers: {accepted}/{len(ACCEPTED)}")
    return 0 if passed == len(CASES) and accepted == len(ACCEPTED) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Generate the official-code fixtures in this folder (run by hand; the tests only read its output).

Every tensor stored here is computed by the *official* implementations, never by diffbench:

* DiffKD: ``hunto/image_classification_sota`` (the ``classification`` submodule of ``hunto/DiffKD``),
  ``lib/models/losses/diffkd/`` (``DiffKD``) and ``lib/models/losses/kl_div.py`` (``KLDivergence``);
* KD / DKD / FitNet: ``megvii-research/mdistiller``, ``mdistiller/distillers/KD.py`` (``kd_loss``),
  ``DKD.py`` (``dkd_loss``) and ``_common.py`` (``ConvReg``; the loss line of ``FitNet.forward_train``).

The official files are imported from the checkouts given on the command line without running their
packages' ``__init__`` files (``lib/models/__init__.py`` pulls in timm and every model of the zoo, and
``mdistiller/distillers/__init__.py`` imports all 14 distillers): the few modules needed are loaded
into synthetic packages, so no stub and no extra dependency is needed -- the official DiffKD code
imports only torch and numpy, mdistiller's distillers only torch.

Usage (from the repository root; a checkout may be a ``git archive`` extract, hence the commit flags)::

    python tests/methods/official/generate.py \\
        --ics-root /path/to/image_classification_sota --ics-commit <40-hex commit> \\
        --mdistiller-root /path/to/mdistiller --mdistiller-commit <40-hex commit>

DiffKD's forward draws random numbers (the noise mixed into the student feature, the training noise and
timesteps of the diffusion loss). They are recorded by wrapping ``torch.randn`` / ``torch.randint`` while
the official forward runs, and stored in call order with the call's name, shape and dtype; the tests
replay them to diffbench's module, which also checks that it draws the same things in the same order.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import types
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
SEED = 20240124  # any fixed seed; the date of hunto/DiffKD's last commit


# ------------------------------------------------------------------------------------------ importing
def _package(name: str, folder: Path) -> types.ModuleType:
    """An empty package ``name`` whose submodules are the ``.py`` files of ``folder`` (no ``__init__`` run)."""
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(folder)]
    sys.modules[name] = pkg
    return pkg


def _module(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_official(ics_root: Path, mdistiller_root: Path) -> dict[str, Any]:
    diffkd_dir = ics_root / "lib/models/losses/diffkd"
    _package("official_diffkd", diffkd_dir)
    diffkd = importlib.import_module("official_diffkd.diffkd")
    kl_div = _module("official_kl_div", ics_root / "lib/models/losses/kl_div.py")
    _package("official_mdistiller", mdistiller_root / "mdistiller/distillers")
    return {
        "DiffKD": diffkd.DiffKD,
        "KLDivergence": kl_div.KLDivergence,
        "kd_loss": importlib.import_module("official_mdistiller.KD").kd_loss,
        "dkd_loss": importlib.import_module("official_mdistiller.DKD").dkd_loss,
        "ConvReg": importlib.import_module("official_mdistiller._common").ConvReg,
    }


# ------------------------------------------------------------------------------------------ RNG capture
class RecordDraws:
    """Wrap ``torch.randn`` / ``torch.randint`` and keep every tensor they return, in call order."""

    def __init__(self) -> None:
        self.draws: list[dict[str, Any]] = []
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> RecordDraws:
        for fn in ("randn", "randint"):
            real = getattr(torch, fn)
            self._saved[fn] = real

            def wrapper(*args: Any, _real: Any = real, _fn: str = fn, **kwargs: Any) -> torch.Tensor:
                out = _real(*args, **kwargs)
                self.draws.append({"fn": _fn, "tensor": out.detach().clone()})
                return out

            setattr(torch, fn, wrapper)
        return self

    def __exit__(self, *exc: object) -> None:
        for fn, real in self._saved.items():
            setattr(torch, fn, real)


# ------------------------------------------------------------------------------------------ DiffKD
DIFFKD_CASES: dict[str, dict[str, Any]] = {
    # Feature maps (kernel_size=3), 4x4 maps, batch 2: student 8 -> teacher 16 channels, diffusing at 16.
    "feat_noae": dict(student=(2, 8, 4, 4), teacher=(2, 16, 4, 4), kwargs=dict(kernel_size=3, use_ae=False)),
    # Student 16 -> teacher 32 channels, diffusing in the AE latent (ae_channels=None: the official default
    # teacher_channels // 2 = 16).
    "feat_ae": dict(student=(2, 16, 4, 4), teacher=(2, 32, 4, 4), kwargs=dict(kernel_size=3, use_ae=True)),
    # Logits (kernel_size=1, never an AE): 10 classes viewed as [N, K, 1, 1] like kd_loss.py's _reshape_BCHW.
    # Batch 8, not 2: this module's BatchNorms see one value per sample and channel, and with two samples
    # their backward is so ill-conditioned that a 1-ulp change of the input moves the official float32
    # gradients by ~3e-5 (measured against the official code in float64).
    "logits": dict(student=(8, 10), teacher=(8, 10), kwargs=dict(kernel_size=1, use_ae=False)),
}


def diffkd_case(off: dict[str, Any], seed: int, student: tuple, teacher: tuple, kwargs: dict) -> dict[str, Any]:
    """Build the official ``DiffKD``, run one training forward + backward as ``kd_loss.py`` does, record all."""
    torch.manual_seed(seed)
    s_ch, t_ch = student[1], teacher[1]
    module = off["DiffKD"](s_ch, t_ch, **kwargs)
    module.train()
    state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    # Inputs on the scale of real activations (ReLU features are >= 0; logits spread over a few units).
    x_s = torch.randn(student)
    x_t = torch.randn(teacher).relu() if len(teacher) == 4 else 3 * torch.randn(teacher)
    if len(student) == 2:
        x_s = 3 * x_s
    x_s.requires_grad_(True)

    rows: list[torch.Tensor] = []
    hooks = [module.model.time_embedding.register_forward_pre_hook(lambda m, a: rows.append(a[0].detach().flatten()))]
    gamma: list[torch.Tensor] = []
    hooks.append(module.noise_adapter.register_forward_hook(lambda m, a, o: gamma.append(o.detach().clone())))
    pre_proj: list[torch.Tensor] = []
    hooks.append(module.proj.register_forward_pre_hook(lambda m, a: pre_proj.append(a[0].detach().clone())))

    def bchw(x: torch.Tensor) -> torch.Tensor:  # kd_loss.py's KDLoss._reshape_BCHW for 2-d tensors
        return x.view(x.shape[0], x.shape[1], 1, 1) if x.dim() == 2 else x

    with RecordDraws() as rec:
        refined, target, diff_loss, ae_loss = module(bchw(x_s), bchw(x_t))
    for h in hooks:
        h.remove()
    # kd_loss.py: nn.MSELoss() for kernel 3, KLDivergence(tau=1) for kernel 1; total kd + diff (+ ae).
    kd = F.mse_loss(refined, target) if kwargs["kernel_size"] == 3 else off["KLDivergence"](tau=1)(refined, target)
    total = kd + diff_loss + (ae_loss if ae_loss is not None else 0)
    total.backward()

    used = torch.unique(torch.cat(rows)).long()
    emb_key = "model.time_embedding.weight"
    grads = {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}
    no_grad = sorted(n for n, p in module.named_parameters() if p.grad is None)
    # Only the rows the forward looked up matter (and only they get gradients): store those, not 1280 rows.
    emb = state.pop(emb_key)
    emb_grad = grads.pop(emb_key)
    assert torch.count_nonzero(emb_grad[torch.ones(len(emb_grad), dtype=torch.bool).index_fill_(0, used, False)]) == 0
    buffers_after = {k: v.detach().clone() for k, v in module.state_dict().items() if "running" in k}
    return {
        "init": dict(student_channels=s_ch, teacher_channels=t_ch, **kwargs),
        "state_dict": state,
        "time_embedding_rows": used,
        "time_embedding_weight_rows": emb[used].clone(),
        "time_embedding_shape": list(emb.shape),
        "student": x_s.detach().clone(),
        "teacher": x_t.clone(),
        "draws": rec.draws,
        "outputs": {
            "refined": refined.detach().clone(),
            "target": target.detach().clone(),
            "diff_loss": diff_loss.detach().clone(),
            "ae_loss": None if ae_loss is None else ae_loss.detach().clone(),
            "kd_loss": kd.detach().clone(),
            "gamma": gamma[0],
            "denoised_before_proj": pre_proj[-1],
        },
        "grads": {
            "student": x_s.grad.detach().clone(),
            "params": grads,
            "time_embedding_rows": emb_grad[used].clone(),
            "params_without_grad": no_grad,
        },
        "buffers_after": buffers_after,
    }


# ------------------------------------------------------------------------------------------ KD / DKD
def logits_pair(seed: int, n: int, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z_s, z_t = 3 * torch.randn(n, k, generator=g), 3 * torch.randn(n, k, generator=g)
    return z_s, z_t, torch.randint(0, k, (n,), generator=g)


def with_grad(fn: Any, z_s: torch.Tensor, *args: Any) -> tuple[torch.Tensor, torch.Tensor]:
    z = z_s.clone().requires_grad_(True)
    loss = fn(z, *args)
    loss.backward()
    return loss.detach().clone(), z.grad.detach().clone()


def kd_cases(off: dict[str, Any], seed: int) -> dict[str, Any]:
    z_s, z_t, _ = logits_pair(seed, 8, 10)
    out = {"student": z_s, "teacher": z_t, "cases": []}
    for temperature in (4.0, 1.0):  # mdistiller CIFAR CFG.KD.TEMPERATURE, ImageNet configs' 1
        loss, grad = with_grad(off["kd_loss"], z_s, z_t, temperature)
        out["cases"].append({"temperature": temperature, "loss": loss, "grad_student": grad})
    return out


def dkd_cases(off: dict[str, Any], seed: int) -> dict[str, Any]:
    z_s, z_t, target = logits_pair(seed + 1, 8, 10)
    out: dict[str, Any] = {"student": z_s, "teacher": z_t, "target": target, "cases": []}
    # (alpha, beta, T): CIFAR default (1, 8, 4), res56_res20 (1, 2, 4), ImageNet r34_r18 (1, 0.5, 1).
    for alpha, beta, temperature in ((1.0, 8.0, 4.0), (1.0, 2.0, 4.0), (1.0, 0.5, 1.0)):
        loss, grad = with_grad(off["dkd_loss"], z_s, z_t, target, alpha, beta, temperature)
        out["cases"].append(dict(alpha=alpha, beta=beta, temperature=temperature, loss=loss, grad_student=grad))

    # Saturated student: the target logit is 120 above the rest at T = 1, so in float32 every non-target
    # probability underflows, p_t == 1 exactly and mdistiller's log(1 - p_t) = log(0) = -inf makes the loss
    # +inf (the teacher keeps some non-target mass) and the gradient NaN. In float64 the same official code
    # is finite (1 - p_t ~ 9 e^-120 ~ 1e-51): that is the value a finite float32 implementation should give.
    sat_s = z_s[:2].clone()
    sat_t = z_t[:2].clone()
    sat_y = target[:2].clone()
    sat_s.scatter_(1, sat_y[:, None], 120.0)
    args = (sat_y, 1.0, 0.5, 1.0)
    loss32, grad32 = with_grad(off["dkd_loss"], sat_s, sat_t, *args)
    loss64, grad64 = with_grad(off["dkd_loss"], sat_s.double(), sat_t.double(), *args)
    out["saturated"] = dict(
        student=sat_s,
        teacher=sat_t,
        target=sat_y,
        alpha=1.0,
        beta=0.5,
        temperature=1.0,
        loss_float32=loss32,
        grad_student_float32=grad32,
        loss_float64=loss64,
        grad_student_float64=grad64,
    )
    return out


# ------------------------------------------------------------------------------------------ FitNet
FITNET_CASES: dict[str, dict[str, Any]] = {
    # mdistiller ConvReg's branches, in its order (student map vs teacher map heights):
    "half": dict(student=(2, 4, 8, 8), teacher=(2, 8, 4, 4)),  # s_H == 2 t_H: 3x3 stride-2 conv
    "double": dict(student=(2, 4, 4, 4), teacher=(2, 8, 8, 8)),  # 2 s_H == t_H: 4x4 stride-2 transposed conv
    "same": dict(student=(2, 4, 4, 4), teacher=(2, 8, 4, 4)),  # equal sizes: 1x1 conv
    "shrink": dict(student=(2, 4, 6, 6), teacher=(2, 8, 4, 4)),  # s_H > t_H otherwise: (1+2)x(1+2) conv
}
FEAT_WEIGHT = 100.0  # mdistiller CFG.FITNET.LOSS.FEAT_WEIGHT


def fitnet_case(off: dict[str, Any], seed: int, student: tuple, teacher: tuple) -> dict[str, Any]:
    torch.manual_seed(seed)
    reg = off["ConvReg"](student, teacher)  # mdistiller passes the full [N, C, H, W] shapes
    reg.train()  # Distiller.train() puts everything but the teacher in training mode
    state = {k: v.detach().clone() for k, v in reg.state_dict().items()}
    f_s = torch.randn(student).relu().requires_grad_(True)
    f_t = torch.randn(teacher).relu()
    regressed = reg(f_s)
    loss = FEAT_WEIGHT * F.mse_loss(regressed, f_t)  # FitNet.forward_train's loss_feat
    loss.backward()
    return {
        "state_dict": state,
        "student": f_s.detach().clone(),
        "teacher": f_t,
        "feat_weight": FEAT_WEIGHT,
        "regressed": regressed.detach().clone(),
        "loss": loss.detach().clone(),
        "grad_student": f_s.grad.detach().clone(),
        "grads": {n: p.grad.detach().clone() for n, p in reg.named_parameters()},
        "buffers_after": {k: v.detach().clone() for k, v in reg.state_dict().items() if "running" in k},
    }


# ------------------------------------------------------------------------------------------ saving
def pack(obj: Any) -> Any:
    """Make every tensor of ``obj`` a view of one flat buffer per dtype, so ``torch.save`` writes one record each.

    A zip record costs ~300 bytes, more than most of these tensors; views keep their shapes on loading.
    """
    tensors: list[torch.Tensor] = []

    def collect(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            tensors.append(o)
        elif isinstance(o, dict):
            for v in o.values():
                collect(v)
        elif isinstance(o, list):
            for v in o:
                collect(v)

    collect(obj)
    flat: dict[torch.dtype, torch.Tensor] = {}
    offsets: dict[int, tuple[torch.dtype, int]] = {}
    sizes: dict[torch.dtype, int] = {}
    for t in tensors:
        offsets[id(t)] = (t.dtype, sizes.get(t.dtype, 0))
        sizes[t.dtype] = sizes.get(t.dtype, 0) + t.numel()
    for dtype, n in sizes.items():
        flat[dtype] = torch.empty(n, dtype=dtype)
    for t in tensors:
        dtype, off = offsets[id(t)]
        flat[dtype][off : off + t.numel()] = t.detach().reshape(-1)

    def replace(o: Any) -> Any:
        if isinstance(o, torch.Tensor):
            dtype, off = offsets[id(o)]
            return flat[dtype][off : off + o.numel()].view(o.shape)
        if isinstance(o, dict):
            return {k: replace(v) for k, v in o.items()}
        if isinstance(o, list):
            return [replace(v) for v in o]
        return o

    return replace(obj)


# ------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ics-root", type=Path, required=True, help="checkout of hunto/image_classification_sota")
    ap.add_argument("--ics-commit", required=True, help="its commit (DiffKD pins 6cb1441...)")
    ap.add_argument("--mdistiller-root", type=Path, required=True, help="checkout of megvii-research/mdistiller")
    ap.add_argument("--mdistiller-commit", required=True, help="its commit")
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: this script's folder)")
    args = ap.parse_args()

    warnings.filterwarnings("ignore", message="size_average and reduce args will be deprecated")  # DKD.py
    torch.set_num_threads(1)
    off = load_official(args.ics_root.resolve(), args.mdistiller_root.resolve())
    ics = "hunto/image_classification_sota"
    md = "megvii-research/mdistiller"
    common = {"torch": str(torch.__version__), "generator": "tests/methods/official/generate.py", "seed": SEED}

    diffkd = {
        "source": dict(
            repo=ics,
            commit=args.ics_commit,
            file="lib/models/losses/diffkd/diffkd.py",
            function="DiffKD.forward",
            loss_file="lib/models/losses/kd_loss.py + kl_div.py",
            **common,
        ),
        "cases": {name: diffkd_case(off, SEED + i, **case) for i, (name, case) in enumerate(DIFFKD_CASES.items())},
    }
    logits = {
        "source": dict(
            repo=md,
            commit=args.mdistiller_commit,
            file="mdistiller/distillers/KD.py, DKD.py",
            function="kd_loss, dkd_loss",
            **common,
        ),
        "kd": kd_cases(off, SEED),
        "dkd": dkd_cases(off, SEED),
    }
    fitnet = {
        "source": dict(
            repo=md,
            commit=args.mdistiller_commit,
            file="mdistiller/distillers/_common.py, FitNet.py",
            function="ConvReg, FitNet.forward_train (loss_feat)",
            **common,
        ),
        "cases": {name: fitnet_case(off, SEED + i, **case) for i, (name, case) in enumerate(FITNET_CASES.items())},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for name, obj in (("diffkd", diffkd), ("kd_dkd", logits), ("fitnet", fitnet)):
        path = args.out / f"{name}.pt"
        torch.save(pack(obj), path)
        print(f"{path}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()

"""Which zoo models get honest LRP relevance (issue 19): the coverage table.

Per model (random weights, ``num_classes=10``, train mode, 64 px where the model allows, its
native size or an ``img_size`` kwarg where it does not):

1. ``Attributor(model)`` with ``method="auto"``, ``backend="auto"``: **refused** (a ``ValueError``:
   the reason is recorded) or accepted (the backend and method ``auto`` chose are recorded);
   ``RelDrop(model, p=1)(x, y)`` must run too.
2. **bias-free conservation** ``Σ R / target logit`` (median over a batch of 4, target = the
   predicted class, ε = 1e-6 where the method has one) on
   :func:`reldrop.attribution.check.bias_free_copy` (tiny/zero gains re-drawn, BN statistics
   calibrated on the batch, every additive shift zeroed) - at initialization and after 30 SGD
   steps on random data (lr 0.01, momentum 0.9; a copy of the model is trained). A RelDrop built at
   step 0 on the trained copy is called again after the 30 steps (a stale verdict would show here).
3. the model, after all calls on it, is bit-for-bit what it was (parameters, buffers, modes,
   requires_grad, hooks).

Status: ``covered`` (accepted, both ratios in [0.9, 1.1]), ``garbage`` (accepted, a ratio outside),
``refused: reason``, ``crash: error`` (anything but a refusal), ``changed`` is reported separately.

Usage::

    python benchmarks/coverage.py --json coverage.json --md docs/coverage.md     # all 57 models
    python benchmarks/coverage.py --models tv:resnet18,test_resnet --json /tmp/c.json
    python benchmarks/coverage.py --list

Names: ``tv:<name>`` is torchvision, anything else timm. One thread unless ``--threads``.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
import traceback
import warnings
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

#: the issue's list: every model it names (refused / garbage / hidden / crash / done-when) plus item 5's lists
TORCHVISION = ("resnet18", "resnet50", "vit_b_16", "resnext50_32x4d", "wide_resnet50_2", "vgg16_bn", "alexnet",
               "efficientnet_v2_s", "squeezenet1_1", "shufflenet_v2_x1_0", "googlenet", "inception_v3",
               "mnasnet0_5", "densenet121", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
               "regnet_y_400mf", "mobilenet_v2", "convnext_tiny", "swin_t")
TIMM = ("resnet50d", "resnext26ts", "cspdarknet53", "deit_tiny_patch16_224", "vit_small_patch16_224",
        "convnextv2_atto", "repvgg_a0", "nfnet_l0", "beit_base_patch16_224", "swin_tiny_patch4_window7_224",
        "cait_xxs24_224", "levit_128s", "mobilevit_xxs", "efficientformer_l1", "poolformer_s12", "mixer_s16_224",
        "resmlp_12_224", "eva02_tiny_patch14_224", "fastvit_t8", "edgenext_xx_small", "coatnet_nano_rw_224",
        "maxvit_nano_rw_256", "seresnet50", "efficientnet_b0", "mobilenetv3_small_100", "regnety_002",
        "ghostnet_100", "convnext_atto", "mobilenetv4_conv_small", "dla34", "hrnet_w18_small", "xception41",
        "convmixer_768_32", "hgnet_tiny", "resnet18", "mobilenetv2_100")
MODELS = tuple(f"tv:{n}" for n in TORCHVISION) + TIMM
#: input side and constructor kwargs where 64 px does not work as is
SIDE = {"tv:inception_v3": 96, "eva02_tiny_patch14_224": 56, "maxvit_nano_rw_256": 256, "levit_128s": 64,
        "efficientformer_l1": 224,  # its attention biases are sized for 224 px (49 tokens at the last stage)
        "tv:swin_t": 64}
KWARGS: dict[str, dict[str, Any]] = {
    "tv:vit_b_16": {"image_size": 64},
    "tv:inception_v3": {"aux_logits": False, "init_weights": True},
    "tv:googlenet": {"aux_logits": False, "init_weights": True},
    **{n: {"img_size": 64} for n in ("deit_tiny_patch16_224", "vit_small_patch16_224", "beit_base_patch16_224",
                                      "cait_xxs24_224", "mixer_s16_224", "resmlp_12_224", "coatnet_nano_rw_224",
                                      "levit_128s", "swin_tiny_patch4_window7_224")},
    "swin_tiny_patch4_window7_224": {"img_size": 64, "window_size": 4},
    "eva02_tiny_patch14_224": {"img_size": 56},
}
BATCH, STEPS, LOW, HIGH = 4, 30, 0.9, 1.1


def build(name: str) -> nn.Module:
    kw = dict(KWARGS.get(name, {}))
    if name.startswith("tv:"):
        import torchvision.models as tvm

        return tvm.get_model(name[3:], weights=None, num_classes=10, **kw)
    import timm

    return timm.create_model(name, pretrained=False, num_classes=10, **kw)


def _state(model: nn.Module) -> dict[str, Any]:
    return {
        "tensors": {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()},
        "modes": [m.training for m in model.modules()],
        "grad": [p.requires_grad for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(getattr(m, "_backward_pre_hooks", {}))) for m in model.modules()],
        "ids": [id(p) for p in model.parameters()],
    }


def _unchanged(before: dict[str, Any], model: nn.Module) -> bool:
    after = _state(model)
    if before["modes"] != after["modes"] or before["grad"] != after["grad"] or before["hooks"] != after["hooks"]:
        return False
    if before["ids"] != after["ids"] or before["tensors"].keys() != after["tensors"].keys():
        return False
    return all(a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(-1).view(torch.uint8) if a.numel() else a,
                                                                         b.view(-1).view(torch.uint8) if b.numel() else b)
               for a, b in zip(before["tensors"].values(), after["tensors"].values()))


def _short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return (text[:limit] + " ...") if len(text) > limit else text


def _ratio(model: nn.Module, x: torch.Tensor, method: str) -> float:
    from reldrop.attribution.check import bias_free_copy, conservation_ratio
    from reldrop.attribution.presets import get_preset

    bf = bias_free_copy(model, x)
    kw = {"epsilon": 1e-6} if "epsilon" in get_preset(method).kwargs else {}
    r = conservation_ratio(bf, x, "predicted", method=method, **kw)
    return float(r.median())


def _train(model: nn.Module, side: int, gen: torch.Generator) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    for _ in range(STEPS):
        xb = torch.randn(BATCH * 2, 3, side, side, generator=gen)
        yb = torch.randint(0, 10, (BATCH * 2,), generator=gen)
        out = model(xb)
        loss = F.cross_entropy(out[0] if isinstance(out, (tuple, list)) else out, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def run_one(name: str) -> dict[str, Any]:
    """One row of the table (never raises)."""
    import reldrop
    from reldrop.attribution import Attributor

    row: dict[str, Any] = {"model": name, "side": SIDE.get(name, 64), "kwargs": KWARGS.get(name, {})}
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    try:
        model = build(name).train()
    except Exception as err:
        row.update(status="crash", reason=f"build: {type(err).__name__}: {_short(err)}")
        return row
    side = row["side"]
    x = torch.randn(BATCH, 3, side, side, generator=gen)
    y = torch.randint(0, 10, (BATCH,), generator=gen)
    before = _state(model)
    try:
        with torch.no_grad():
            copy.deepcopy(model).eval()(x[:1])
    except Exception as err:  # the model itself cannot take this input: a benchmark setting, not LRP's
        row.update(status="crash", reason=f"the model's own forward fails at {side} px (set SIDE/KWARGS): "
                                          f"{type(err).__name__}: {_short(err)}")
        row["unchanged"] = _unchanged(before, model)
        return row
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                att = Attributor(model)
            except ValueError as err:
                lines = [ln.strip() for ln in str(err).splitlines()]
                zennit = [ln for ln in lines if ln.startswith("zennit:")]  # the general fallback's reason
                row.update(status="refused", reason=_short(ValueError(zennit[0] if zennit else str(err)), 600),
                           reasons=lines[1:])
                att = None
            if att is not None:
                row.update(backend=att.backend, method=att.method)
                reldrop.RelDrop(model, p=1.0, generator=torch.Generator().manual_seed(0))(x, y)
                row["ratio_init"] = _ratio(model, x, att.method)
                trained = copy.deepcopy(model)
                early = reldrop.RelDrop(trained, p=1.0, generator=torch.Generator().manual_seed(0))
                early(x, y)  # built at step 0 ...
                _train(trained, side, gen)
                early(x, y)  # ... still honest after training
                row["ratio_trained"] = _ratio(trained, x, att.method)
                ok = all(math.isfinite(row[k]) and LOW <= row[k] <= HIGH for k in ("ratio_init", "ratio_trained"))
                row["status"] = "covered" if ok else "garbage"
        notes = sorted({str(w.message)[:200] for w in caught if "coverage check" in str(w.message)})
        if notes:
            row["notes"] = notes
    except Exception as err:  # anything but a refusal is a crash
        row.update(status="crash", reason=f"{type(err).__name__}: {_short(err)}",
                   where=traceback.format_exc(limit=-3).strip().splitlines()[-3:])
    row["unchanged"] = _unchanged(before, model)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def _fmt(v: Any) -> str:
    return "" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    counts = {k: sum(r["status"] == k for r in rows) for k in ("covered", "refused", "garbage", "crash")}
    changed = sum(not r.get("unchanged", True) for r in rows)
    lines = [
        "# LRP coverage of the model zoo",
        "",
        f"Generated by `{command}` (random weights, `num_classes=10`, train mode, 64 px unless noted; "
        "method and backend chosen by `auto`). Σ R / logit: median over 4 samples of the bias-free copy "
        "(`reldrop.attribution.check.bias_free_copy`), target = predicted class, at init and after "
        f"{STEPS} SGD steps. Covered = both ratios in [{LOW}, {HIGH}].",
        "",
        f"**{len(rows)} models: {counts['covered']} covered, {counts['refused']} refused, "
        f"{counts['garbage']} garbage, {counts['crash']} crashed; {changed} changed by the calls.**",
        "",
        "| model | px | status | backend | method | Σ R / logit (init) | Σ R / logit (30 steps) | unchanged | reason |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        reason = (r.get("reason") or "").replace("|", "\\|").replace("\n", " ")
        reason = reason.split("meaningless: ", 1)[-1]  # the layers, not the preamble
        lines.append(f"| {r['model']} | {r.get('side', '')} | {r['status']} | {r.get('backend', '')} | "
                     f"{r.get('method', '')} | {_fmt(r.get('ratio_init'))} | {_fmt(r.get('ratio_trained'))} | "
                     f"{'yes' if r.get('unchanged', True) else '**no**'} | {reason[:240]} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=None, help="comma-separated names (tv:<name> = torchvision, else timm); "
                                                    "default: the issue's list")
    ap.add_argument("--json", metavar="OUT", default=None, help="write the rows as JSON")
    ap.add_argument("--md", metavar="PATH", default=None, help="write the markdown table (e.g. docs/coverage.md)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--list", action="store_true", help="print the default model list and exit")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(MODELS))
        return 0
    torch.set_num_threads(args.threads)
    names = [n.strip() for n in args.models.split(",") if n.strip()] if args.models else list(MODELS)
    command = "python benchmarks/coverage.py " + " ".join(argv if argv is not None else sys.argv[1:])
    rows = []
    for name in names:
        row = run_one(name)
        rows.append(row)
        print(f"{name:34s} {row['status']:8s} {row.get('backend', ''):7s} "
              f"{_fmt(row.get('ratio_init')):>10s} {_fmt(row.get('ratio_trained')):>10s} "
              f"{'' if row.get('unchanged', True) else 'CHANGED '}{(row.get('reason') or '')[:100]}", flush=True)
        if args.json:  # written after every model: a long run is never lost
            meta = {"command": command, "torch": torch.__version__, "python": platform.python_version(),
                    "threads": args.threads}
            with open(args.json, "w") as fh:
                json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    if args.md:
        with open(args.md, "w") as fh:
            fh.write(markdown(rows, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())

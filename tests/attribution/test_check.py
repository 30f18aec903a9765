"""reldrop.attribution.check: the bias-free copy and the conservation ratio (issue 19 item 5)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock

from helpers.model_state import assert_unchanged, snapshot
from reldrop.attribution.check import bias_free_copy, conservation_ratio, is_shift
from helpers.resnet_zoo import randomize_bn, tiny_resnet


def test_bias_free_copy_zeroes_shifts_redraws_tiny_gains_and_leaves_the_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3))
    randomize_bn(model)
    with torch.no_grad():
        model[1].weight.zero_()  # zero-init gain (timm's last BN of a block)
    model.train()
    before = snapshot(model)
    x = torch.randn(8, 3, 8, 8)
    bf = bias_free_copy(model, x)
    assert_unchanged(before, model)
    assert not bf.training and model.training
    assert bf[0].bias.abs().max() == 0 and bf[4].bias.abs().max() == 0
    assert bf[1].bias.abs().max() == 0 and bf[1].running_mean.abs().max() == 0
    assert bf[1].weight.min() >= 0.5  # re-drawn from U(0.5, 1.5)
    h = bf[0](x.double())  # calibrated: running_var = the batch variance of the conv output
    assert torch.allclose(bf[1].running_var, h.var((0, 2, 3)), rtol=1e-4)


def test_shift_names():
    for name in ("conv.bias", "norm.beta", "pos_embed", "cls_token", "reg_token", "dist_token", "bn.running_mean",
                 "attn.relative_position_bias_table", "attn.attention_biases", "encoder.pos_embedding",
                 "class_token", "attn.q_bias"):
        assert is_shift(name), name
    for name in ("conv.weight", "ls1.gamma", "bn.running_var", "norm.weight", "head.fc.weight"):
        assert not is_shift(name), name


def test_timm_vit_tokens_and_layerscale():
    vit_mod = pytest.importorskip("timm.models.vision_transformer")
    torch.manual_seed(0)
    vit = vit_mod.VisionTransformer(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2, num_classes=3,
                                    init_values=1e-5)
    bf = bias_free_copy(vit, torch.randn(2, 3, 8, 8))
    assert bf.cls_token.abs().max() == 0 and bf.pos_embed.abs().max() == 0
    assert bf.blocks[0].ls1.gamma.min() >= 0.5 and vit.blocks[0].ls1.gamma.max() < 1e-4


def test_conservation_is_one_on_a_bias_free_resnet_and_not_with_shifts():
    model = tiny_resnet(BasicBlock, seed=1, dtype=torch.float64)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    bf = bias_free_copy(model, x)
    r = conservation_ratio(bf, x, epsilon=1e-9)
    assert r.shape == (3,) and torch.allclose(r, torch.ones_like(r), atol=1e-6), r
    torch.manual_seed(0)
    shifted = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 3)).double()
    with torch.no_grad():
        shifted[0].bias.fill_(3.0)
    xs = torch.randn(3, 4, dtype=torch.float64)
    r_shift = conservation_ratio(shifted, xs, epsilon=1e-9)
    assert (r_shift - 1).abs().max() > 0.1  # biases absorb relevance: the check sees it
    r_free = conservation_ratio(bias_free_copy(shifted), xs, epsilon=1e-9)
    assert torch.allclose(r_free, torch.ones_like(r_free), atol=1e-6)

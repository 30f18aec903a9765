"""Channel-relevance AUC: curve arithmetic, depth order, relevance read-out, model untouched."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from reldrop.metrics.channel_auc import (channel_auc, channel_relevance, layer_channel_auc,
                                         relative_auc_change)


def test_channel_auc_known_values():
    auc, valid = channel_auc(torch.tensor([[2.0, 2.0, 2.0, 2.0], [0.0, 5.0, 0.0, 0.0], [1.0, 0.5, 0.0, -3.0]]))
    assert valid.tolist() == [True, True, True]
    # uniform -> 1; one-hot over 4 channels -> one trapezoid from 1 to 0 of width 1/3
    # [1, .5, 0, 0] -> (0.75 + 0.25 + 0) / 3 (negative part counts as 0)
    assert auc.tolist() == pytest.approx([1.0, 0.5 / 3, 1.0 / 3])
    signed, _ = channel_auc(torch.tensor([1.0, 0.5, 0.0, -3.0]), mode="signed")
    assert float(signed) == pytest.approx((0.75 + 0.25 - 1.5) / 3)
    absolute, _ = channel_auc(torch.tensor([1.0, 0.5, 0.0, -3.0]), mode="absolute")
    assert float(absolute) == pytest.approx(((1 + 1 / 3) / 2 + (1 / 3 + 1 / 6) / 2 + 1 / 12) / 3)


def test_channel_auc_is_permutation_invariant_and_flags_nonpositive():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(5, 9, generator=g)
    perm = torch.randperm(9, generator=g)
    assert torch.allclose(channel_auc(s)[0], channel_auc(s[:, perm])[0])
    auc, valid = channel_auc(torch.tensor([[-1.0, -2.0], [0.0, 0.0]]))
    assert valid.tolist() == [False, False] and auc.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="mode"):
        channel_auc(s, mode="max")


class Net(nn.Module):
    """Bias-free conv net whose module registration order differs from its forward order."""

    def __init__(self):
        super().__init__()
        self.late = nn.Conv2d(6, 5, 3, padding=1, bias=False)
        self.early = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)  # a module: the Norm rule (a functional mean is refused)
        self.head = nn.Linear(5, 4, bias=False)

    def forward(self, x):
        h = torch.relu(self.early(x))
        h = torch.relu(self.late(h))
        return self.head(self.pool(h).flatten(1))


def _net():
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():  # positive weights -> positive logits, well-conditioned LRP denominators
        for p in net.parameters():
            p.abs_()
    return net


def test_channel_relevance_depth_order_and_conservation():
    net = _net()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 3])
    state = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    rel = channel_relevance(net, x, y, low=0.0, high=1.0)
    assert list(rel) == ["early", "late"]  # forward order, not registration order
    assert rel["early"].shape == (3, 6) and rel["late"].shape == (3, 5)
    # bias-free net: ε (dense), Norm (mean pool) and γ (conv) rules conserve the output relevance,
    # which is the one-hot target (the attribution default seed), so every layer sums to 1
    for name in ("late", "early"):
        assert torch.allclose(rel[name].sum(1), torch.ones(3), rtol=1e-3), name
    rel_logit = channel_relevance(net, x, y, low=0.0, high=1.0, seed="logit")  # seed one_hot * logit
    logit = net(x).gather(1, y[:, None]).squeeze(1)
    for name in ("late", "early"):
        assert torch.allclose(rel_logit[name].sum(1), logit, rtol=1e-3), name
    assert net.training and all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="layers"):
        channel_relevance(net, x, y, layers=["nope"], low=0.0, high=1.0)


def test_layer_channel_auc_and_relative_change():
    net = _net()
    g = torch.Generator().manual_seed(2)
    batches = [(torch.rand(2, 3, 8, 8, generator=g), torch.tensor([0, 1])),
               (torch.rand(3, 3, 8, 8, generator=g), torch.tensor([2, 3, 0]))]
    res = layer_channel_auc(net, batches, low=0.0, high=1.0)
    assert list(res) == ["early", "late"]
    assert res["late"]["n_valid"] + res["late"]["n_skipped"] == 5 and res["late"]["channels"] == 5
    # the layer AUC is the mean of the per-sample AUCs
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    auc, valid = channel_auc(channel_relevance(net, x, y, low=0.0, high=1.0)["late"])
    assert res["late"]["auc"] == pytest.approx(float(auc[valid].mean()), rel=1e-6)
    change = relative_auc_change({"early": 0.6, "late": 0.3}, {"early": 0.5, "late": 0.4, "x": 1})
    assert change == pytest.approx({"early": 20.0, "late": -25.0})

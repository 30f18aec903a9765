"""The graph backend on timm's tiny ``test_*`` models: the default method attributes them, and on
the bias-free float64 copy Σ R / target logit is 1 (within [0.99, 1.01]) at init and after 30 SGD
steps (zero-initialized branches carry signal by then). The long list runs in benchmarks/."""
from __future__ import annotations

import pytest
import torch

from reldrop.attribution import Attributor
from reldrop.attribution.check import conservation_ratios, train_steps

timm = pytest.importorskip("timm")

#: (name, create_model kwargs, input side, also after 30 SGD steps); training only where timm
#: zero-initializes a branch (the after-training check is what catches an unhandled residual add)
ZOO = [
    ("test_vit", {}, 32, True), ("test_vit_relpos", {"img_size": 32}, 32, False), ("test_convnext", {}, 32, True),
    ("test_efficientnet", {}, 32, True), ("test_efficientnet_gn", {}, 32, False),
    ("test_efficientnet_ln", {}, 32, False), ("test_nfnet", {}, 32, True), ("test_byobnet", {}, 32, True),
    ("test_coatnet", {"img_size": 64}, 64, False), ("test_maxvit", {"img_size": 64}, 64, False),
    ("test_resnet", {}, 32, True), ("test_mambaout", {}, 32, False),
]
AVAILABLE = set(timm.list_models("test_*"))


@pytest.mark.parametrize("name,kw,side,trained", [z for z in ZOO if z[0] in AVAILABLE], ids=[z[0] for z in ZOO if z[0] in AVAILABLE])
def test_tiny_timm_model_is_covered_and_conserves_at_init_and_after_training(name, kw, side, trained):
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=6, **kw)
    a = Attributor(model)
    assert a.backend in ("graph", "vit", "fast"), a.backend
    x = torch.randn(2, 3, side, side)
    r = a(x, torch.tensor([0, 5]))
    assert torch.isfinite(r).all() and r.abs().sum() > 0
    if a.backend == "graph":  # the plan's forward is the model's eval forward
        with torch.no_grad():
            expected = model.eval()(x)
        torch.testing.assert_close(a.impl.logits(x), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()))
    shape = (3, side, side)
    for when in ("init", "trained") if trained else ("init",):
        if when == "trained":
            train_steps(model, shape, 6, steps=30, batch=4)
        ratios = conservation_ratios(model, shape, batch=2)
        assert torch.all((ratios > 0.99) & (ratios < 1.01)), (when, ratios)

"""trace_model: the shared fx tracer (eval-mode graph, timm leaves, cache, clear refusal)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from helpers.model_state import assert_unchanged, snapshot

from reldrop.attribution._trace import TraceError, trace_model

timm = pytest.importorskip("timm")


def _targets(gm, op):
    return [n.target for n in gm.graph.nodes if n.op == op]


def test_timm_leaves_and_eval_mode_and_model_unchanged():
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=5).train()
    before = snapshot(model)
    gm = trace_model(model)
    assert_unchanged(before, model)
    kinds = {type(gm.get_submodule(t)).__name__ for t in _targets(gm, "call_module")}
    assert "BatchNormAct2d" in kinds and "Conv2d" in kinds  # timm BN+act stays one leaf
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(gm(x), model(x))


def test_cached_and_retraced_when_a_module_is_replaced():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 8, 8))
    gm = trace_model(model)
    assert trace_model(model) is gm
    model[1] = nn.GELU()
    gm2 = trace_model(model)
    assert gm2 is not gm
    assert isinstance(gm2.get_submodule(_targets(gm2, "call_module")[1]), nn.GELU)


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
            x = x * 2
        return self.fc(x)


def test_untraceable_model_raises_trace_error_naming_it():
    with pytest.raises(TraceError, match="_DataDependent"):
        trace_model(_DataDependent())
    assert issubclass(TraceError, ValueError)

"""Issue 21 item 10: the zennit backend used from several threads on one model: every call succeeds,
results equal the single-threaded ones, and the model is left bit-for-bit unchanged."""
from __future__ import annotations

import threading

import pytest
import torch
import torch.nn as nn
from helpers.model_state import assert_unchanged, snapshot

from reldrop.attribution import Attributor


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                      nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 1.5)
    return m.train()  # train mode: a call must not leave it in eval mode or touch the BN statistics


@pytest.mark.parametrize("shared", [True, False], ids=["one_attributor", "one_per_thread"])
def test_four_threads_on_one_model(shared: bool) -> None:
    model = _model()
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0])
    ref = Attributor(model, "epsilon_flat", backend="zennit")(x, y)
    before = snapshot(model)
    common = Attributor(model, "epsilon_flat", backend="zennit")
    errors: list[BaseException] = []
    results: list[torch.Tensor] = []
    start = threading.Barrier(4)

    def work() -> None:
        start.wait(30)
        try:  # built at the same moment in every thread (its fx trace patches torch.nn.Module globally)
            attributor = common if shared else Attributor(model, "epsilon_flat", backend="zennit")
        except BaseException as err:
            errors.append(err)
            return
        for _ in range(15):
            try:
                results.append(attributor(x, y))
            except BaseException as err:  # collected: the test reports every failure
                errors.append(err)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(results) == 60
    assert all(torch.equal(r, ref) for r in results)
    assert_unchanged(before, model)
    assert model.training and all(m.training for m in model.modules())

"""Point flipping (Fig. 4): order of removal, batching, modes, AUC, and a trained-model sanity check."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from helpers.point_models import TinyPointNet2
from reldrop.data.shapes import generate_shapes
from reldrop.metrics.flipping import compare_point_flipping, point_flipping, point_flipping_dataset


class SumX(nn.Module):
    """logits = (s, -s) with s = sum of the points' x coordinates; records every input."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        s = (x[..., 0] * self.w).sum(1)
        return torch.stack([s, -s], 1)


def _clouds(b: int = 4, n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, n, 3, generator=g)
    x[..., 0] = x[..., 0].abs() * torch.linspace(0.1, 2.0, n) - 0.3  # mostly positive evidence
    return x


def test_fixed_mode_removes_the_most_relevant_points_in_order_one_forward_per_step():
    model, x = SumX(), _clouds()
    y = torch.zeros(4, dtype=torch.long)
    rel = x[..., 0] * 1.0  # exact contribution of each point to s
    calls = []

    def fn(xx, yy):
        calls.append(1)
        return xx[..., 0] * 1.0

    res = point_flipping(model, x, y, relevance=fn, mode="fixed", step_size=8)
    assert res.steps == 8 and res.correct.shape == (4, 9) and len(calls) == 1
    assert len(model.inputs) == 9 and all(inp.shape == x.shape for inp in model.inputs)  # batched
    order = rel.argsort(dim=1, descending=True)
    for k, inp in enumerate(model.inputs):
        zero = (inp == 0).all(-1)
        expected = torch.zeros_like(zero)
        expected.scatter_(1, order[:, : 8 * k], True)
        assert torch.equal(zero, expected), k
    assert res.correct[:, 0].all() and not res.correct[:, 1:8].all()
    assert torch.equal(res.fractions, torch.arange(9, dtype=torch.float64) / 8.0)
    assert torch.equal(x, _clouds())  # input untouched


def test_recompute_mode_recomputes_each_step_and_never_picks_removed_points():
    model, x = SumX(), _clouds(n=40)
    y = torch.zeros(4, dtype=torch.long)
    calls = []

    def constant_rank(xx, yy):  # ignores the removal: a removed point keeps its high score
        calls.append(xx.clone())
        return torch.arange(40, dtype=torch.float32).expand(4, 40)

    res = point_flipping(model, x, y, relevance=constant_rank, mode="recompute", step_size=16)
    assert res.steps == 3 and len(calls) == 3  # ceil(40 / 16), one attribution per step
    zeros = [int((inp == 0).all(-1).sum(1)[0]) for inp in model.inputs]
    assert zeros == [0, 16, 32, 40]
    assert (calls[1][:, 24:] == 0).all() and (calls[1][:, :24] != 0).any()  # step 2 sees step-1 removal


def test_random_mode_is_seeded_and_differs_from_relevance_order():
    model, x = SumX(), _clouds(b=16)
    y = torch.zeros(16, dtype=torch.long)
    a = point_flipping(model, x, y, mode="random", step_size=8, generator=torch.Generator().manual_seed(1))
    b = point_flipping(model, x, y, mode="random", step_size=8, generator=torch.Generator().manual_seed(1))
    r = point_flipping(model, x, y, relevance=lambda xx, yy: xx[..., 0], step_size=8)
    assert torch.equal(a.correct, b.correct)
    assert r.auc < a.auc  # removing the positive evidence first flips the decision sooner


def test_auc_is_the_trapezoid_over_normalized_steps_and_dataset_accumulates():
    model, x = SumX(), _clouds(b=6)
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    res = point_flipping(model, x, y, relevance=lambda xx, yy: xx[..., 0], step_size=16)
    c = res.accuracy_curve
    manual = float(((c[1:] + c[:-1]) / 2).sum() / (len(c) - 1))
    assert res.auc == pytest.approx(manual)
    data = list(zip(x, y.tolist()))
    whole = point_flipping_dataset(model, data, relevance=lambda xx, yy: xx[..., 0], step_size=16, batch_size=4)
    assert torch.equal(whole.correct, res.correct) and whole.correct.shape[0] == 6
    both = compare_point_flipping({"a": model, "b": SumX()}, data, relevance=lambda xx, yy: xx[..., 0],
                                  step_size=16, batch_size=6, max_samples=5)
    assert set(both) == {"a", "b"} and both["b"].correct.shape == (5, 5)


@pytest.mark.parametrize("kwargs, err", [({"mode": "most"}, ValueError), ({"step_size": 0}, ValueError),
                                         ({"steps": 99}, ValueError), ({"relevance": 3}, TypeError)])
def test_bad_arguments(kwargs, err):
    with pytest.raises(err):
        point_flipping(SumX(), _clouds(), torch.zeros(4, dtype=torch.long), **kwargs)
    with pytest.raises(ValueError, match="labels"):
        point_flipping(SumX(), _clouds(), torch.zeros(3, dtype=torch.long))


CLASSES = ["sphere", "cube", "cylinder", "cone", "torus", "disc"]


@pytest.fixture(scope="module")
def trained():
    """TinyPointNet2 trained briefly on 6 generated classes (128 points, upright)."""
    torch.manual_seed(0)
    p, y, _ = generate_shapes(40, 128, seed=0, classes=CLASSES, rotate="none")
    pt, yt, _ = generate_shapes(15, 128, seed=1, classes=CLASSES, rotate="none")
    p, pt = p[..., :3].contiguous(), pt[..., :3].contiguous()
    model = TinyPointNet2(len(CLASSES))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for epoch in range(12):
        model.train()
        perm = torch.randperm(len(p), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(p), 30):
            b = perm[i:i + 30]
            loss = nn.functional.cross_entropy(model(p[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), pt, yt


@pytest.mark.slow
def test_trained_model_removing_relevant_points_hurts_more_than_random(trained):
    model, pt, yt = trained
    with torch.no_grad():
        acc = (model(pt).argmax(1) == yt).float().mean()
    assert acc > 0.5, f"the briefly trained model should beat chance (1/6) clearly, got {acc:.2f}"
    rel = point_flipping(model, pt, yt, relevance="zplus_flat", mode="fixed", step_size=16)
    rnd = point_flipping(model, pt, yt, mode="random", step_size=16, generator=torch.Generator().manual_seed(0))
    assert rel.correct[:, 0].float().mean() == pytest.approx(float(acc))
    assert rel.auc < rnd.auc - 0.05, (rel.accuracy_curve, rnd.accuracy_curve)
    # after removing a quarter of the points, relevance order has cost more accuracy
    assert rel.accuracy_curve[2] < rnd.accuracy_curve[2]

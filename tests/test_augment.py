"""RelDrop (augment.py): when and to what the augmentation is applied, and the model-safety contract."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import reldrop

from helpers.model_state import assert_unchanged, snapshot


def small_resnet() -> nn.Module:
    from torchvision.models.resnet import BasicBlock, ResNet

    torch.manual_seed(0)
    m = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=5)
    m.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


class FakeAttributor:
    """Records the batches it is asked to attribute; relevance = a bright spot at a known pixel."""

    def __init__(self, spot: tuple[int, int] = (3, 5)) -> None:
        self.calls: list[torch.Tensor] = []
        self.spot = spot

    def __call__(self, x: torch.Tensor, target: torch.Tensor | str) -> torch.Tensor:
        self.calls.append(x.clone())
        r = torch.zeros_like(x)
        if x.dim() == 4:
            r[:, :, self.spot[0], self.spot[1]] = 1.0
        else:
            r[:, : x.shape[1] // 2] = 1.0  # first half of the points is "relevant"
        return r


def test_p0_and_disabled_are_identity() -> None:
    x = torch.randn(8, 3, 16, 16)
    y = torch.randint(0, 5, (8,))
    model = small_resnet()
    for fn in (reldrop.RelDrop(model, p=0.0), reldrop.RelDrop(model, p=1.0, enabled=False)):
        fn._attributor = FakeAttributor()
        out, mask = fn(x, y, return_mask=True)
        assert torch.equal(out, x) and out is not x
        assert not mask.any()
        assert fn._attributor.calls == []


def test_only_selected_samples_are_attributed_and_erased() -> None:
    torch.manual_seed(1)
    x = torch.randn(64, 3, 16, 16)
    y = torch.randint(0, 5, (64,))
    x_before = x.clone()
    fn = reldrop.RelDrop(small_resnet(), p=0.5, generator=torch.Generator().manual_seed(3))
    fake = FakeAttributor()
    fn._attributor = fake
    out, mask = fn(x, y, return_mask=True)
    assert torch.equal(x, x_before), "input must not be modified"
    erased = mask.flatten(1).any(1)
    assert len(fake.calls) == 1
    n = fake.calls[0].shape[0]
    assert n == fn.last_stats["selected"] == int(erased.sum())
    assert 16 < n < 48  # a fair coin over 64 samples
    # the attributed batch is exactly the erased samples, in order
    assert torch.equal(fake.calls[0], x[erased])
    # every erased block covers the relevance spot; pixels outside the mask are untouched
    assert mask[erased][:, 3, 5].all()
    keep = ~mask.unsqueeze(1).expand_as(x)
    assert torch.equal(out[keep], x[keep])
    assert (out[mask.unsqueeze(1).expand_as(x)] == 0).all()


def test_p1_erases_every_sample() -> None:
    x = torch.randn(6, 3, 16, 16)
    fn = reldrop.RelDrop(small_resnet(), p=1.0)
    fn._attributor = FakeAttributor()
    _, mask = fn(x, torch.zeros(6, dtype=torch.long), return_mask=True)
    assert mask.flatten(1).any(1).all()


def test_generator_makes_calls_reproducible() -> None:
    x = torch.randn(16, 3, 16, 16)
    y = torch.randint(0, 5, (16,))
    outs = []
    for _ in range(2):
        fn = reldrop.RelDrop(small_resnet(), generator=torch.Generator().manual_seed(7))
        fn._attributor = FakeAttributor()
        outs.append(fn(x, y, return_mask=True)[1])
    assert torch.equal(outs[0], outs[1])


def test_points_alpha1_skips_attribution_and_alpha0_uses_it() -> None:
    torch.manual_seed(0)
    pts = torch.randn(4, 200, 3)
    y = torch.zeros(4, dtype=torch.long)
    fn = reldrop.RelDrop(nn.Linear(3, 2), modality="points", alpha=1.0, beta=0.3,
                         generator=torch.Generator().manual_seed(0))
    fake = FakeAttributor()
    fn._attributor = fake
    out, mask = fn(pts, y, return_mask=True)
    assert fake.calls == []
    assert mask.shape == (4, 200)
    assert 0.15 < mask.float().mean() < 0.45
    assert (out[mask] == 0).all() and torch.equal(out[~mask], pts[~mask])

    fn = reldrop.RelDrop(nn.Linear(3, 2), modality="points", alpha=0.0, beta=0.15)
    fn._attributor = FakeAttributor()
    _, mask = fn(pts, y, return_mask=True)
    # alpha = 0: exactly the points with Rnorm >= 0.85, i.e. the relevant first half
    assert mask[:, :100].all() and not mask[:, 100:].any()


@pytest.mark.parametrize(
    "kwargs, exc",
    [({"p": 1.5}, ValueError), ({"p": -0.1}, ValueError), ({"alpha": 2.0}, ValueError),
     ({"beta": -1.0}, ValueError), ({"modality": "video"}, ValueError), ({"target": "max"}, ValueError),
     ({"scale": (0.5, 0.1)}, ValueError)],
)
def test_bad_constructor_arguments(kwargs: dict, exc: type) -> None:
    with pytest.raises(exc):
        reldrop.RelDrop(small_resnet(), **kwargs)


def test_bad_call_arguments() -> None:
    fn = reldrop.RelDrop(small_resnet())
    fn._attributor = FakeAttributor()
    x = torch.randn(4, 3, 16, 16)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="x"):
        fn(x[0], y)
    with pytest.raises(TypeError, match="x"):
        fn(x.to(torch.int64), y)
    with pytest.raises(TypeError, match="y"):
        fn(x, y.float())
    with pytest.raises(ValueError, match="batch"):
        fn(x, y[:3])
    with pytest.raises(ValueError, match="empty"):
        fn(x[:0], y[:0])


@pytest.mark.parametrize("backend", ["zennit", "auto"])
def test_real_attribution_leaves_training_model_unchanged(backend: str) -> None:
    model = small_resnet().train()
    model.layer1[0].bn1.eval()  # mixed modes must survive too
    model.fc.weight.requires_grad_(False)
    x = torch.randn(8, 3, 16, 16)
    y = torch.randint(0, 5, (8,))
    model(x).sum().backward()  # populate .grad and BN running stats
    before = snapshot(model)
    fn = reldrop.RelDrop(model, p=1.0, backend=backend)
    out, mask = fn(x, y, return_mask=True)
    assert_unchanged(before, model)
    assert torch.isfinite(out).all()
    assert mask.flatten(1).any(1).all()


def test_works_with_channels_last_and_wrapped_model() -> None:
    model = small_resnet()
    wrapped = nn.DataParallel(model)  # exposes .module like DDP
    x = torch.randn(4, 3, 16, 16).to(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (4,))
    out = reldrop.RelDrop(wrapped, p=1.0)(x, y)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_works_under_cpu_autocast() -> None:
    model = small_resnet()
    x = torch.randn(4, 3, 16, 16)
    y = torch.randint(0, 5, (4,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, mask = reldrop.RelDrop(model, p=1.0)(x, y, return_mask=True)
    assert out.dtype == x.dtype and mask.flatten(1).any(1).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda() -> None:
    model = small_resnet().cuda()
    x = torch.randn(4, 3, 16, 16, device="cuda")
    y = torch.randint(0, 5, (4,), device="cuda")
    out, mask = reldrop.RelDrop(model, p=1.0)(x, y, return_mask=True)
    assert out.device.type == "cuda" and mask.device.type == "cuda"


def test_per_channel_fill_value() -> None:
    fn = reldrop.RelDrop(small_resnet(), p=1.0, value=[0.1, 0.2, 0.3])
    fn._attributor = FakeAttributor()
    x = torch.randn(2, 3, 16, 16)
    out, mask = fn(x, torch.zeros(2, dtype=torch.long), return_mask=True)
    for c, v in enumerate((0.1, 0.2, 0.3)):
        assert torch.allclose(out[:, c][mask], torch.tensor(v))


def test_point_stats_are_summable_counts() -> None:
    pts = torch.randn(3, 100, 3)
    fn = reldrop.RelDrop(nn.Linear(3, 2), modality="points", alpha=1.0, beta=0.2,
                         generator=torch.Generator().manual_seed(0))
    _, mask = fn(pts, torch.zeros(3, dtype=torch.long), return_mask=True)
    assert fn.last_stats["selected"] == 3 and fn.last_stats["candidates"] == 300
    assert int(fn.last_stats["dropped"]) == int(mask.sum())


@pytest.mark.parametrize("value", ["rand", "random"])
def test_points_refuse_image_noise_fills(value: str) -> None:
    """An image noise fill has no meaning for points: refused at construction, not filled with 0."""
    from reldrop.models import build

    with pytest.raises(ValueError, match="image fill"):
        reldrop.RelDrop(build("pointnet", num_classes=4), modality="points", value=value)


def test_points_feature_fill_reaches_the_dropped_points() -> None:
    from reldrop.models import build

    fn = reldrop.RelDrop(build("pointnet", num_classes=4), modality="points", alpha=1.0, beta=0.5,
                         value=[7.0, 8.0, 9.0], generator=torch.Generator().manual_seed(0))
    out, mask = fn(torch.randn(2, 32, 3), torch.tensor([0, 1]), return_mask=True)
    assert bool(mask.any())
    assert torch.equal(out[mask], torch.tensor([7.0, 8.0, 9.0]).expand(int(mask.sum()), 3))


# ------------------------------------------------ issue 19 item 7: fallbacks are counted and reported
class _PartlyZeroAttributor(FakeAttributor):
    """The first ``zero`` samples of each batch get all-zero (degenerate) relevance."""

    def __init__(self, zero: int) -> None:
        super().__init__()
        self.zero = zero

    def __call__(self, x: torch.Tensor, target: torch.Tensor | str) -> torch.Tensor:
        r = super().__call__(x, target)
        r[: self.zero] = 0.0
        return r


def test_fallback_counts_degenerate_samples_and_warns_once() -> None:
    import warnings

    x, y = torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long)
    fn = reldrop.RelDrop(nn.Linear(3, 2), p=1.0, generator=torch.Generator().manual_seed(0))
    fn._attributor = _PartlyZeroAttributor(zero=3)
    with pytest.warns(RuntimeWarning, match=r"relevance of 3 of 4 selected samples was degenerate"):
        fn(x, y)
    assert fn.last_stats == {"selected": 4, "fallback": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once per RelDrop
        fn(x, y)
        assert fn.last_stats["fallback"] == 3
        fn._attributor.zero = 1  # half or fewer: counted, no warning
        fresh = reldrop.RelDrop(nn.Linear(3, 2), p=1.0, count=2, generator=torch.Generator().manual_seed(0))
        fresh._attributor = _PartlyZeroAttributor(zero=2)
        fresh(x, y)
        assert fresh.last_stats["fallback"] == 2  # samples, not blocks (block 2 finds only zeros, by design)
        fn(x, y)
    assert fn.last_stats == {"selected": 4, "fallback": 1}
    fn.enabled = False
    fn(x, y)
    assert fn.last_stats == {"selected": 0, "fallback": 0}


def test_fallback_with_a_real_model_whose_relevance_vanishes() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 2))
    with torch.no_grad():
        model[3].weight.zero_()  # the logits are the bias alone: relevance 0 everywhere
    fn = reldrop.RelDrop(model, p=1.0, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match="acted as random erasing"):
        fn(torch.randn(5, 3, 8, 8), torch.zeros(5, dtype=torch.long))
    assert fn.last_stats["fallback"] == 5


def test_point_fallback_counts_and_alpha1_is_not_a_fallback() -> None:
    pts, y = torch.randn(3, 50, 3), torch.zeros(3, dtype=torch.long)
    fn = reldrop.RelDrop(nn.Linear(3, 2), modality="points", alpha=0.5, generator=torch.Generator().manual_seed(0))
    fn._attributor = _PartlyZeroAttributor(zero=2)
    with pytest.warns(RuntimeWarning, match="2 of 3 selected samples"):
        fn(pts, y)
    assert fn.last_stats["fallback"] == 2
    rand = reldrop.RelDrop(nn.Linear(3, 2), modality="points", alpha=1.0, generator=torch.Generator().manual_seed(0))
    rand(pts, y)
    assert rand.last_stats["fallback"] == 0

"""reldrop.mixing: timm's Mixup/CutMix with soft targets, private NumPy randomness, odd batches."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from reldrop.mixing import MixupCutmix, soft_target_cross_entropy


def _batch(b: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, 3, 16, 16, generator=g), torch.randint(0, 10, (b,), generator=g)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mixup_is_a_convex_combination_with_the_mirrored_image_and_matching_targets() -> None:
    x, y = _batch()
    out, t = MixupCutmix("mixup", num_classes=10, p=1.0, generator=_gen(1))(x, y)
    assert t.shape == (8, 10) and torch.allclose(t.sum(1), torch.ones(8))
    lam = float(t[0, y[0]]) if y[0] != y[-1] else None
    if lam is not None:
        assert torch.allclose(out, lam * x + (1 - lam) * x.flip(0), atol=1e-6)
    assert not torch.equal(out, x)
    assert torch.equal(x, _batch()[0])  # the input batch is not modified


def test_cutmix_pastes_one_box_of_the_mirrored_image_and_lambda_is_its_area() -> None:
    x, y = _batch()
    y = torch.arange(8)  # all different: the target tells lambda
    out, t = MixupCutmix("cutmix", num_classes=10, p=1.0, generator=_gen(2))(x, y)
    own = (out == x).all(1)  # (B, H, W): pixels kept
    pasted = (out == x.flip(0)).all(1)
    assert bool((own | pasted).all())
    lam = float(t[0, 0])
    box = (~own[0]).float().mean().item()
    assert lam == pytest.approx(1 - box, abs=1e-6)
    assert float(t[0, 7]) == pytest.approx(box, abs=1e-6)


def test_randomness_is_private_reproducible_and_follows_the_generator_seed() -> None:
    x, y = _batch()
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    a = MixupCutmix("mixup", num_classes=10, generator=_gen(5))(x, y)
    assert np.array_equal(np.random.get_state()[1], before)  # NumPy's global state is untouched
    b = MixupCutmix("mixup", num_classes=10, generator=_gen(5))(x, y)
    c = MixupCutmix("mixup", num_classes=10, generator=_gen(6))(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_odd_batch_keeps_the_last_image_and_p0_changes_nothing() -> None:
    x, y = _batch(7)
    out, t = MixupCutmix("cutmix", num_classes=10, p=1.0, generator=_gen(3))(x, y)
    assert out.shape == x.shape and torch.equal(out[-1], x[-1])
    assert torch.equal(t[-1], torch.nn.functional.one_hot(y[-1], 10).float())
    out, t = MixupCutmix("mixup", num_classes=10, p=0.0, generator=_gen(3))(x, y)
    assert torch.equal(out, x) and torch.equal(t, torch.nn.functional.one_hot(y, 10).float())


def test_label_smoothing_and_soft_target_cross_entropy() -> None:
    x, y = _batch()
    _, t = MixupCutmix("mixup", num_classes=10, p=0.0, label_smoothing=0.1, generator=_gen(0))(x, y)
    assert float(t.max()) == pytest.approx(0.91) and float(t.min()) == pytest.approx(0.01)
    logits = torch.randn(8, 10, dtype=torch.float64)
    hard = torch.nn.functional.one_hot(y, 10).double()
    assert float(soft_target_cross_entropy(logits, hard)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, y)), rel=1e-12)


@pytest.mark.parametrize("kw, match", [
    (dict(kind="blend"), "kind must be"), (dict(alpha=0.0), "alpha must be > 0"), (dict(p=1.5), "p must be in"),
    (dict(alpha=float("nan")), "finite"), (dict(num_classes=1), "num_classes"),
])
def test_bad_arguments(kw: dict, match: str) -> None:
    args = dict(kind="mixup", num_classes=10) | kw
    kind = args.pop("kind")
    with pytest.raises(ValueError, match=match):
        MixupCutmix(kind, **args)


def test_refuses_non_image_batches() -> None:
    with pytest.raises(ValueError, match="image batches"):
        MixupCutmix("mixup", num_classes=10)(torch.rand(4, 3, 16), torch.zeros(4, dtype=torch.long))

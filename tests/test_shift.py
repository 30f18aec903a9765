"""Corruption suite: contract (shape, range, determinism), per-corruption known properties."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from reldrop.shift import CORRUPTIONS, SEVERITIES, corrupt, corruption_accuracy


def _images(b=4, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    # smooth-ish images with structure (a low-res random field upsampled) plus fine texture
    low = torch.rand(b, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return (0.8 * x + 0.2 * torch.rand(b, 3, h, w, generator=g)).clamp(0.05, 0.95)


def test_names_are_the_contract():
    assert set(CORRUPTIONS) == {"gaussian_noise", "shot_noise", "gaussian_blur", "contrast",
                                "brightness", "jpeg", "pixelate"}
    assert SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shape_range_determinism_and_severity_order(name):
    x = _images()
    errs = []
    for sev in SEVERITIES:
        out = corrupt(x, name, sev, seed=7)
        assert out.shape == x.shape and out.dtype == x.dtype
        assert out.min() >= 0 and out.max() <= 1
        assert torch.equal(out, corrupt(x, name, sev, seed=7))
        errs.append(float((out - x).abs().mean()))
    assert errs[0] > 1e-4, "severity 1 must change the image"
    assert errs[-1] > errs[0], f"severity 5 must corrupt more than severity 1: {errs}"
    assert torch.equal(x, _images()), "input must not be modified"


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise"])
def test_noise_depends_on_seed(name):
    x = _images()
    assert not torch.equal(corrupt(x, name, 3, seed=0), corrupt(x, name, 3, seed=1))


def test_gaussian_noise_std_matches_constant():
    x = torch.full((8, 3, 32, 32), 0.5)
    out = corrupt(x, "gaussian_noise", 5, seed=0)
    assert float((out - x).std()) == pytest.approx(0.10, rel=0.05)


def test_shot_noise_is_unbiased():
    x = torch.full((8, 3, 32, 32), 0.4)
    out = corrupt(x, "shot_noise", 5, seed=0)  # Poisson(20)/50
    assert float(out.mean()) == pytest.approx(0.4, abs=0.01)
    assert float(out.std()) == pytest.approx((0.4 * 50) ** 0.5 / 50, rel=0.05)


def test_contrast_keeps_channel_means_and_scales_deviation():
    x = _images()
    out = corrupt(x, "contrast", 1, seed=0)
    assert torch.allclose(out.mean((2, 3)), x.mean((2, 3)), atol=1e-6)
    dev_in = x - x.mean((2, 3), keepdim=True)
    assert torch.allclose(out - out.mean((2, 3), keepdim=True), 0.75 * dev_in, atol=1e-6)


def test_brightness_keeps_hue_and_saturation():
    x = _images()
    out = corrupt(x, "brightness", 2, seed=0)
    vmax = x.amax(1, keepdim=True)
    ratio_in = x / vmax
    ratio_out = out / out.amax(1, keepdim=True)
    assert torch.allclose(ratio_in, ratio_out, atol=1e-5)
    assert torch.allclose(out.amax(1, keepdim=True), (vmax + 0.1).clamp(max=1), atol=1e-6)
    black = corrupt(torch.zeros(1, 3, 4, 4), "brightness", 5)
    assert torch.allclose(black, torch.full_like(black, 0.3))


@pytest.mark.parametrize("name", ["gaussian_blur", "pixelate", "contrast"])
def test_constant_image_is_fixed_point(name):
    x = torch.full((2, 3, 32, 32), 0.3)
    assert torch.allclose(corrupt(x, name, 5), x, atol=1e-6)


def test_jpeg_close_on_flat_image():
    x = torch.full((2, 3, 16, 16), 0.5)
    assert float((corrupt(x, "jpeg", 5) - x).abs().max()) <= 2 / 255


def test_bad_arguments():
    x = _images(1)
    with pytest.raises(ValueError, match="name"):
        corrupt(x, "fog", 1)
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "contrast", 0)
    with pytest.raises(ValueError, match="severity"):
        corrupt(x, "contrast", 6)
    with pytest.raises(ValueError, match="images"):
        corrupt(x[:, :1], "contrast", 1)
    with pytest.raises(TypeError, match="images"):
        corrupt((x * 255).byte(), "contrast", 1)


class MeanBright(nn.Module):
    """Class 1 iff the mean of the (normalized) input is above 0."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        m = x.flatten(1).mean(1)
        return torch.stack([-m, m], 1) * self.w


def test_corruption_accuracy_bookkeeping():
    g = torch.Generator().manual_seed(0)
    bright = 0.75 + 0.2 * torch.rand(6, 3, 8, 8, generator=g)
    dark = 0.4 - 0.1 * torch.rand(6, 3, 8, 8, generator=g)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x = (torch.cat([bright, dark]) - 0.5) / 0.25
    y = torch.tensor([1] * 6 + [0] * 6)
    batches = [(x[:5], y[:5]), (x[5:], y[5:])]
    res = corruption_accuracy(MeanBright(), batches, mean=mean, std=std, names=("contrast", "brightness"))
    assert res["clean"] == 1.0 and res["n"] == 12
    assert res["per_corruption"]["contrast"] == {s: 1.0 for s in SEVERITIES}  # means kept
    # brightness +0.05 keeps the dark half (V <= 0.4) below 0.5; +0.3 pushes all of it above
    assert res["per_corruption"]["brightness"][1] == 1.0
    assert res["per_corruption"]["brightness"][5] == 0.5
    assert res["mean"] == pytest.approx(sum(res["per_name"].values()) / 2)

"""Property-based: any batch size / spatial size / float dtype / preset gives a finite map of x's shape
and dtype, samples are independent (attributing a sub-batch gives the same rows), and the model is
left as it was."""
from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torchvision.models.resnet import BasicBlock

from helpers.resnet_zoo import tiny_resnet
from reldrop.attribution import Attributor

MODEL = tiny_resnet(BasicBlock, seed=31, dtype=torch.float32, widths=(2, 4, 4), num_classes=3)
ATTRIBUTORS = {m: Attributor(MODEL, m, backend="zennit") for m in ("epsilon_flat", "zplus_flat", "gradient_x_input")}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.integers(1, 4),
    height=st.integers(2, 9),
    width=st.integers(2, 9),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    method=st.sampled_from(sorted(ATTRIBUTORS)),
    seed=st.integers(0, 2**16),
)
def test_shape_dtype_finite_and_per_sample(batch, height, width, dtype, method, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, height, width, generator=g).to(dtype)
    y = torch.randint(0, 3, (batch,), generator=g)
    state = {k: v.clone() for k, v in MODEL.state_dict().items()}
    R = ATTRIBUTORS[method](x, y)
    assert R.shape == x.shape and R.dtype == dtype and torch.isfinite(R.float()).all()
    # eval mode, no batch coupling: the last sample alone gives the same relevance
    R_last = ATTRIBUTORS[method](x[-1:], y[-1:])
    rtol = 1e-2 if dtype == torch.bfloat16 else 1e-4  # bf16: one rounding step of the output cast
    scale = 1 + float(R.float().abs().max())
    torch.testing.assert_close(R_last.float(), R[-1:].float(), rtol=rtol, atol=rtol * 1e-2 * scale)
    for k, v in MODEL.state_dict().items():
        assert torch.equal(v, state[k]), k

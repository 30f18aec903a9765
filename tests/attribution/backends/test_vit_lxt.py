"""Agreement with lxt (Achtibat et al.'s reference implementation) on a torchvision ViT, when lxt is installed.

lxt's efficient CP-LRP for torchvision's ``vision_transformer`` patches *classes* (GELU, LayerNorm,
MultiheadAttention) and reads relevance as gradient × input: LRP-0 on every linear map, identity on
GELU, LayerNorm's σ held constant, attention weights held constant (value path only), and LRP-0 at
the patch-embedding conv. reldrop's ``cp_lrp`` applies the same rules inside the network but ε on the
linear layers and Flat at the patch conv. So the comparison is set up where both must agree:

* ε = 0 on our side (relevance is then exactly LRP-0, as lxt's gradient × input);
* the patch conv's bias zeroed, and relevance summed per patch: Flat spreads a token's relevance
  uniformly over its patch, LRP-0 by contribution; without a conv bias both hand the patch the
  same total (the token's relevance).

lxt runs in a **subprocess**: its class-level patching must never reach this test process (it would
change every torchvision ViT, and its ``monkey_patch_zennit`` would rewrite zennit). The test skips
when lxt is not installed or does not import (lxt 2.1 needs ``transformers<5``).
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers.tolerance import assert_close_scaled

if importlib.util.find_spec("lxt") is None:
    pytest.skip("lxt is not installed (pip install lxt; it needs transformers<5)", allow_module_level=True)

from torchvision.models.vision_transformer import VisionTransformer as TvViT  # noqa: E402

from reldrop.attribution import attribute  # noqa: E402

PATCH = 4

_CHILD = r"""
import json, sys
import torch
try:
    from lxt.efficient import monkey_patch
    from torchvision.models import vision_transformer
except Exception as err:  # lxt present but unusable here (e.g. transformers >= 5)
    print(json.dumps({"skip": f"{type(err).__name__}: {err}"}))
    sys.exit(0)
state, x, y = torch.load(sys.argv[1], weights_only=True).values()
monkey_patch(vision_transformer, verbose=False)
model = vision_transformer.VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16,
                                             mlp_dim=32, num_classes=5).double()
model.load_state_dict(state)
model.eval()
x = x.clone().requires_grad_(True)
logits = model(x)
logits.gather(1, y[:, None]).sum().backward()
torch.save((x * x.grad).detach(), sys.argv[2])
print(json.dumps({"ok": True}))
"""


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    m = TvViT(image_size=16, patch_size=PATCH, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
              num_classes=5).double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():  # random everywhere (biases, LayerNorm affine, position embedding, class token)
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
        m.conv_proj.bias.zero_()
    return m.eval()


def _per_patch(r: torch.Tensor) -> torch.Tensor:
    b, c, h, w = r.shape
    return r.sum(1).reshape(b, h // PATCH, PATCH, w // PATCH, PATCH).sum((2, 4))


@pytest.mark.parametrize("seed", [0, 1])
def test_cp_lrp_agrees_with_lxt_on_a_torchvision_vit(tmp_path: Path, seed: int) -> None:
    model = _model(seed)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(10 + seed), dtype=torch.float64)
    y = torch.tensor([0, 2, 4])
    torch.save({"state": model.state_dict(), "x": x, "y": y}, tmp_path / "in.pt")
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "in.pt"), str(tmp_path / "out.pt")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    msg = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in msg:
        pytest.skip(f"lxt does not import here: {msg['skip']}")
    theirs = torch.load(tmp_path / "out.pt", weights_only=True)
    ours = attribute(model, x, y, "cp_lrp", backend="vit", seed="logit", epsilon=0.0, stabilizer=1e-12)
    assert theirs.abs().max() > 0
    # lxt's pixel map is LRP-0 at the conv, ours Flat: not the same pixels, the same patch totals
    assert (ours - theirs).abs().max() > 1e-3 * theirs.abs().max()
    assert_close_scaled(_per_patch(ours), _per_patch(theirs), 1e-8)

"""CP-LRP for Vision Transformers (reldrop.attribution.backends.vit): equality with an explicit float64
reference, conservation, the model-state contract, no global patching, torchvision and timm."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

timm = pytest.importorskip("timm")
from timm.models.vision_transformer import VisionTransformer as TimmViT  # noqa: E402
from torchvision.models.vision_transformer import VisionTransformer as TvViT  # noqa: E402

from helpers.model_state import assert_unchanged, snapshot  # noqa: E402
from helpers.tolerance import assert_close_scaled  # noqa: E402
from helpers.vit_reference import reference_cp_lrp  # noqa: E402

from reldrop.attribution.backends.vit import lrp as vit  # noqa: E402
from reldrop.attribution.backends.vit.plan import timm_classes  # noqa: E402
from reldrop.attribution.backends.vit import ViTLRP, supports, unsupported_reason  # noqa: E402


def _randomize(model: nn.Module, seed: int, std: float = 0.3) -> nn.Module:
    """Every parameter (biases, LayerNorm affine, position embedding, class token too) random,
    so no rule is checked on zeros only."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return model


def tiny_timm(pool: str = "token", *, seed: int = 0, dtype=torch.float64, std: float = 0.3, **kw) -> nn.Module:
    kw.setdefault("num_classes", 5)
    m = TimmViT(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0,
                global_pool=pool, **kw)
    return _randomize(m.to(dtype), seed, std).eval()


def tiny_torchvision(*, seed: int = 0, dtype=torch.float64, std: float = 0.3, **kw) -> nn.Module:
    m = TvViT(image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
              num_classes=5, **kw)
    return _randomize(m.to(dtype), seed, std).eval()


MODELS = {
    "timm_token": lambda **k: tiny_timm("token", **k),
    "timm_avg_layerscale": lambda **k: tiny_timm("avg", init_values=0.5, **k),
    "torchvision": lambda **k: tiny_torchvision(**k),
    "timm_pre_norm_qk_norm": lambda **k: tiny_timm("token", pre_norm=True, qk_norm=True, **k),
}
X = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
Y = torch.tensor([0, 3, 4])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_reference_recomputes_the_models_logits(name):
    model = MODELS[name]()
    _, logits = reference_cp_lrp(model, X, Y)
    with torch.no_grad():
        assert_close_scaled(logits, model(X), 1e-12)


@pytest.mark.parametrize("method", ["cp_lrp", "attnlrp"])
@pytest.mark.parametrize("seed", ["one_hot", "logit"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_equals_explicit_float64_reference(name, seed, method):
    model = MODELS[name]()
    expected, _ = reference_cp_lrp(model, X, Y, epsilon=1e-3, seed=seed, attnlrp=method == "attnlrp")
    R = ViTLRP(model, method, seed=seed)(X, Y)
    assert R.dtype == torch.float64 and R.shape == X.shape
    assert expected.abs().max() > 0
    assert_close_scaled(R, expected.detach(), 1e-9)


def test_attnlrp_differs_from_cp_lrp():
    """The two methods are not the same map (relevance through q and k changes the heatmap)."""
    model = MODELS["timm_token"]()
    cp, attn = ViTLRP(model, "cp_lrp")(X, Y), ViTLRP(model, "attnlrp")(X, Y)
    assert (cp - attn).abs().max() > 0.1 * cp.abs().max()


def test_equals_reference_with_other_epsilon_and_predicted_target():
    model = MODELS["timm_token"](seed=3)
    with torch.no_grad():
        pred = model(X).argmax(1)
    expected, _ = reference_cp_lrp(model, X, pred, epsilon=0.05, delta=1e-4)
    R = ViTLRP(model, epsilon=0.05, stabilizer=1e-4)(X, "predicted")
    assert_close_scaled(R, expected.detach(), 1e-9)


def _zero_sinks(model: nn.Module) -> nn.Module:
    """All biases, LayerNorm shifts, position embeddings, class/register tokens set to zero."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf in ("bias", "in_proj_bias", "cls_token", "reg_token", "pos_embed", "class_token",
                        "pos_embedding"):
                p.zero_()
    return model


CONSERVATION = {
    **MODELS,
    "timm_no_embed_class_registers": lambda **k: tiny_timm("avg", no_embed_class=True, reg_tokens=2, **k),
    "timm_pre_norm_qk_norm": lambda **k: tiny_timm("token", pre_norm=True, qk_norm=True, **k),
    "torchvision_tanh_pre_logits": lambda **k: tiny_torchvision(representation_size=12, **k),
}


@pytest.mark.parametrize("name", sorted(CONSERVATION))
def test_conservation_with_sinks_zeroed(name):
    """Seed "logit", all biases/shifts/pos-embeddings/class tokens zero: Σ pixel relevance is
    the target logit within 10 % (ε = 1e-3 absorbs a little), and exactly with ε = 0.
    Weights of std 0.5: logits of order 1 (ε's share grows as activations shrink)."""
    model = _zero_sinks(CONSERVATION[name](seed=2, std=0.5))
    with torch.no_grad():
        logits = model(X)
    target = logits.abs().argmax(1)  # the largest logit of each sample, of either sign
    logit = logits.gather(1, target[:, None]).squeeze(1)
    assert logit.abs().min() > 0.1  # a meaningful check, not 0 ≈ 0
    total = ViTLRP(model, seed="logit")(X, target).sum(dim=(1, 2, 3))
    assert torch.all((total - logit).abs() <= 0.1 * logit.abs()), (total, logit)
    exact = ViTLRP(model, seed="logit", epsilon=0.0, stabilizer=1e-12)(X, target).sum(dim=(1, 2, 3))
    assert_close_scaled(exact, logit, 1e-8)


def test_position_embedding_and_class_token_are_sinks():
    """With the position embedding non-zero, the pixels do not get the whole logit (documented)."""
    model = _zero_sinks(tiny_timm("token", seed=2))
    with torch.no_grad():
        model.pos_embed.normal_(0, 1.0, generator=torch.Generator().manual_seed(0))
        logit = model(X).gather(1, Y[:, None]).squeeze(1)
    total = ViTLRP(model, seed="logit", epsilon=0.0, stabilizer=1e-12)(X, Y).sum(dim=(1, 2, 3))
    assert not torch.allclose(total, logit, rtol=1e-3)


def _decorate(model: nn.Module) -> None:
    """Grads (some None), frozen params, train mode, user hooks of several kinds."""
    for i, p in enumerate(model.parameters()):
        if i % 3 == 0:
            p.grad = torch.full_like(p, 0.25 + i)
        if i % 5 == 1:
            p.requires_grad_(False)
    model.train()
    model.blocks[0].eval()
    model.register_forward_hook(lambda m, i, o: None)
    model.blocks[1].attn.register_forward_pre_hook(lambda m, i: None)
    model.head.register_full_backward_hook(lambda m, gi, go: None)


def test_model_unchanged_bit_for_bit_after_a_call():
    model = tiny_timm("token", dtype=torch.float32)
    _decorate(model)
    before = snapshot(model)
    R = ViTLRP(model)(X.float(), Y)
    assert torch.isfinite(R).all()
    assert_unchanged(before, model)


def test_model_unchanged_when_a_call_raises(monkeypatch):
    model = tiny_timm("avg", dtype=torch.float32, init_values=0.1)
    _decorate(model)
    lrp = ViTLRP(model)
    before = snapshot(model)

    def boom(*args, **kwargs):
        raise RuntimeError("injected mid-backward")

    monkeypatch.setattr(vit, "_layer_norm_back", boom)
    with pytest.raises(RuntimeError, match="injected"):
        lrp(X.float(), Y)
    assert_unchanged(before, model)
    with pytest.raises(ValueError, match="outside"):
        lrp(X.float(), torch.tensor([0, 1, 9]))
    assert_unchanged(before, model)


def _class_state() -> dict:
    """Every attribute of the classes a global patcher (e.g. lxt) would touch."""
    import zennit.core
    import zennit.rules
    from timm.layers import Mlp, PatchEmbed
    from torchvision.models import vision_transformer as tvv

    classes = [TimmViT, timm.models.vision_transformer.Block, timm_classes()["attention"], Mlp, PatchEmbed,
               TvViT, tvv.EncoderBlock, tvv.Encoder, tvv.MLPBlock, nn.MultiheadAttention, nn.LayerNorm,
               nn.GELU, nn.Linear, nn.Conv2d, nn.Module, zennit.core.BasicHook, zennit.core.Hook,
               zennit.rules.Epsilon]
    return {c: dict(vars(c)) for c in classes}


def test_training_gradients_identical_with_and_without_a_prior_attribution():
    """No global patching: after attributing, a timm ViT trains exactly as before (bit for bit),
    and no attribute of timm/torchvision/torch/zennit classes changed."""
    model = tiny_timm("token", dtype=torch.float32, seed=4)
    model.train()
    x = X.float()

    def grads() -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), Y).backward()
        return [p.grad.clone() for p in model.parameters()]

    classes_before = _class_state()
    before = grads()
    model.zero_grad(set_to_none=True)
    ViTLRP(model)(x, Y)
    ViTLRP(tiny_torchvision(dtype=torch.float32))(x, Y)
    after = grads()
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    classes_after = _class_state()
    for cls, attrs in classes_before.items():
        assert classes_after[cls].keys() == attrs.keys(), cls
        assert all(classes_after[cls][k] is v for k, v in attrs.items()), cls


def test_float32_vit_tiny_cifar_batched_autocast_and_channels_last():
    from reldrop.models import build

    torch.manual_seed(0)
    model = build("vit_tiny_cifar", num_classes=10).eval()
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([1, 2, 3, 4])
    lrp = ViTLRP(model)
    R = lrp(x, y)
    assert R.shape == x.shape and R.dtype == torch.float32 and torch.isfinite(R).all()
    # per-sample: a sample's relevance does not depend on the rest of the batch
    assert_close_scaled(lrp(x[1:3], y[1:3]), R[1:3], 1e-5)
    # autocast is suspended inside: same result
    with torch.autocast("cpu", dtype=torch.bfloat16):
        R_ac = lrp(x, y)
    assert R_ac.dtype == torch.float32
    assert_close_scaled(R_ac, R, 1e-6)
    assert_close_scaled(lrp(x.contiguous(memory_format=torch.channels_last), y), R, 1e-6)
    # the heatmap is patch-constant (Flat on the 4x4 patch embedding)
    patches = R.reshape(4, 3, 8, 4, 8, 4)
    assert torch.equal(patches, patches[:, :1, :, :1, :, :1].expand_as(patches))


@pytest.mark.parametrize("make, reason", [
    (lambda: TimmViT(img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2, global_pool="map",
                     num_classes=3), "attention pooling"),
    (lambda: TimmViT(img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2, dynamic_img_size=True,
                     num_classes=3), "dynamic_img_size"),
    (lambda: TimmViT(img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2, global_pool="max",
                     num_classes=3), "global_pool"),
    (lambda: TimmViT(img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2, num_classes=0), "head"),
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(3)), "not a timm or torchvision"),
])
def test_unsupported_models_answer_false_with_a_reason(make, reason):
    model = make()
    assert not supports(model, "cp_lrp")
    assert reason in unsupported_reason(model)
    with pytest.raises(ValueError, match="does not handle"):
        ViTLRP(model)


def test_subclass_with_own_forward_is_refused():
    class Custom(TimmViT):
        def forward(self, x):
            return super().forward(x) * 2

    model = Custom(img_size=16, patch_size=4, embed_dim=16, depth=1, num_heads=2, num_classes=3)
    assert "overrides forward" in unsupported_reason(model)
    assert supports(tiny_timm(), "cp_lrp") and not supports(tiny_timm(), "epsilon_flat")


def test_bad_inputs_raise():
    lrp = ViTLRP(tiny_timm(dtype=torch.float32))
    with pytest.raises(ValueError, match="16x16"):
        lrp(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="channels"):
        lrp(torch.randn(2, 1, 16, 16), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="seed"):
        ViTLRP(tiny_timm(), seed="ones")
    with pytest.raises(ValueError, match="epsilon"):
        ViTLRP(tiny_timm(), epsilon=-1.0)


# ------------------------------------------------------------------ through the public API
def test_attributor_picks_cp_lrp_and_the_vit_backend_for_none_and_auto():
    from reldrop.attribution import Attributor, attribute, default_method

    model = tiny_timm("token", dtype=torch.float32)
    x = X.float()
    assert default_method(model) == "cp_lrp"
    for method in (None, "auto", "cp_lrp"):
        att = Attributor(model, method, seed="logit")
        assert (att.method, att.backend) == ("cp_lrp", "vit")
        assert "method='cp_lrp'" in repr(att) and "backend='vit'" in repr(att)
    expected = ViTLRP(model, seed="logit")(x, Y)
    assert torch.equal(Attributor(model, None, seed="logit")(x, Y), expected)
    assert torch.equal(attribute(model, x, Y, "cp_lrp", backend="vit", seed="logit"), expected)
    tv = tiny_torchvision(dtype=torch.float32)
    assert Attributor(tv, "auto").backend == "vit"
    att = Attributor(model, "attnlrp", epsilon=0.01)
    assert (att.method, att.backend) == ("attnlrp", "vit")
    assert torch.equal(att(x, Y), ViTLRP(model, "attnlrp", epsilon=0.01)(x, Y))


def test_lrp_presets_on_a_vit_are_refused_with_the_way_out():
    from reldrop.attribution import attribute

    model = tiny_timm("token", dtype=torch.float32)
    before = snapshot(model)
    with pytest.raises(ValueError, match="cp_lrp"):
        attribute(model, X.float(), Y, "epsilon_flat", backend="zennit")
    # auto: the graph engine computes epsilon_flat on a ViT with CP-LRP's rules (the same numbers as cp_lrp)
    torch.testing.assert_close(attribute(model, X.float(), Y, "epsilon_flat", backend="graph"),
                               attribute(model, X.float(), Y, "cp_lrp", backend="graph"))
    with pytest.raises(ValueError, match="attention"):
        attribute(tiny_torchvision(dtype=torch.float32), X.float(), Y, "zplus_flat", backend="zennit")
    # any model holding attention modules, not only the known ViT classes
    mha_net = nn.Sequential(nn.Flatten(2), _MHA(), nn.Flatten(1), nn.LazyLinear(3))
    with pytest.raises(ValueError, match="attention"):
        attribute(mha_net, torch.randn(2, 4, 3, 3), torch.tensor([0, 1]), backend="zennit")
    # gradient methods still work on any model; the vit backend refuses cp_lrp on non-ViTs with the reason
    R = attribute(model, X.float(), Y, "gradient_x_input")
    assert R.shape == X.shape
    with pytest.raises(ValueError, match="not a timm or torchvision"):
        attribute(nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 3)), X.float(), Y, "cp_lrp", backend="vit")
    assert_unchanged(before, model)


class _MHA(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(9, 1, batch_first=True)

    def forward(self, x):
        return self.attn(x, x, x, need_weights=False)[0]


def test_reldrop_on_a_vit_uses_cp_lrp_and_leaves_the_model_unchanged():
    import reldrop

    model = tiny_timm("avg", dtype=torch.float32, init_values=0.1)
    _decorate(model)
    before = snapshot(model)
    aug = reldrop.RelDrop(model, p=1.0, generator=torch.Generator().manual_seed(0))
    assert aug.method == "cp_lrp" and aug.attributor.backend == "vit"
    x_aug, mask = aug(X.float(), Y, return_mask=True)
    assert x_aug.shape == X.shape and mask.any()
    assert_unchanged(before, model)


def test_attribute_without_a_method_on_a_timm_vit_is_cp_lrp_and_conserves():
    """``attribute(timm_vit, x, y)`` with no method: the registry picks CP-LRP; the relevance is
    finite, equals the explicit cp_lrp call, and passes the conservation check (sinks zeroed)."""
    from reldrop.attribution import attribute

    model = _zero_sinks(tiny_timm("token", seed=2, std=0.5))
    with torch.no_grad():
        logits = model(X)
    target = logits.abs().argmax(1)
    logit = logits.gather(1, target[:, None]).squeeze(1)
    assert logit.abs().min() > 0.1
    relevance = attribute(model, X, target, seed="logit")
    assert torch.isfinite(relevance).all()
    assert torch.equal(relevance, attribute(model, X, target, "cp_lrp", seed="logit"))
    total = relevance.sum(dim=(1, 2, 3))
    assert torch.all((total - logit).abs() <= 0.1 * logit.abs()), (total, logit)


def test_default_method_per_family():
    """No method given: CP-LRP for ViTs, ε/Flat for CNNs, z⁺ for reldrop's point nets."""
    from reldrop.attribution import Attributor
    from reldrop.models import build

    assert Attributor(tiny_timm("token", dtype=torch.float32)).method == "cp_lrp"
    assert Attributor(build("small_cnn", num_classes=10, in_channels=1)).method == "epsilon_flat"
    assert Attributor(build("pointnet", num_classes=4)).method == "zplus_flat"

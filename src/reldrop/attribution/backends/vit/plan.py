"""The structure of a Vision Transformer the ``vit`` backend reproduces: the timm and torchvision
classes it knows (:func:`timm_classes`, :func:`torchvision_classes`), and :func:`build_spec`, which
reads a model into a spec of its blocks or raises :class:`Unsupported` naming what is not stock."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..._wrappers import unwrap_model
from ...rules import Unsupported

__all__ = ["timm_classes", "torchvision_classes", "is_vision_transformer", "build_spec"]


# ------------------------------------------------------------------------------- the class zoo
def timm_classes() -> dict[str, Any]:
    """timm's ViT classes ({} without timm). ``Attention`` moved to ``timm.layers`` in timm 1.0."""
    try:
        from timm.layers import LayerScale, Mlp, PatchDropout, PatchEmbed
        from timm.models import vision_transformer as tv
    except Exception:  # pragma: no cover - timm is a dependency
        return {}
    attention_cls: Any
    try:
        from timm.layers.attention import Attention as attention_cls
    except Exception:  # pragma: no cover - timm < 1.0
        attention_cls = tv.Attention
    return dict(vit=tv.VisionTransformer, block=tv.Block, attention=attention_cls, mlp=Mlp,
                layer_scale=getattr(tv, "LayerScale", LayerScale), patch_embed=PatchEmbed,
                patch_dropout=PatchDropout)


def torchvision_classes() -> dict[str, Any]:
    try:
        from torchvision.models.vision_transformer import EncoderBlock, MLPBlock, VisionTransformer
    except Exception:  # pragma: no cover - torchvision is a dependency
        return {}
    return dict(vit=VisionTransformer, block=EncoderBlock, mlp=MLPBlock)


def is_vision_transformer(model: nn.Module) -> bool:
    """True for a timm or torchvision ``VisionTransformer`` (subclasses included), or any model
    holding attention modules (``nn.MultiheadAttention``, timm ``Attention``): models whose
    attention the zennit presets have no rule for."""
    vits = tuple(c["vit"] for c in (timm_classes(), torchvision_classes()) if c)
    attn: tuple[type, ...] = (nn.MultiheadAttention,)
    timm = timm_classes()
    if timm:
        attn += (timm["attention"],)
    return isinstance(model, vits) or any(isinstance(m, attn) for m in model.modules())


# --------------------------------------------------------------------------------- structure
@dataclass
class _Block:
    """One pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``+ ls2(mlp(norm2(·)))``."""

    norm1: nn.LayerNorm
    qkv_owner: nn.Module  # timm Attention.qkv (Linear) or torchvision MultiheadAttention
    qkv_names: tuple[str, str]  # ("weight", "bias") or ("in_proj_weight", "in_proj_bias")
    q_norm: nn.LayerNorm | None
    k_norm: nn.LayerNorm | None
    num_heads: int
    head_dim: int
    scale: float
    proj: nn.Linear
    ls1: nn.Parameter | None
    norm2: nn.LayerNorm
    fc1: nn.Linear
    act: Callable[[torch.Tensor], torch.Tensor]
    fc2: nn.Linear
    ls2: nn.Parameter | None


@dataclass
class _Spec:
    """Everything the forward needs, as references to the model's modules/parameters."""

    patch: nn.Conv2d
    patch_norm: nn.LayerNorm | None
    prefix: list[nn.Parameter]  # class token, register tokens (each (1, n, D)), in order
    pos_embed: nn.Parameter | None  # (1, L, D)
    pos_covers_prefix: bool  # pos_embed has rows for the prefix tokens (cat, then add)
    norm_pre: nn.LayerNorm | None
    blocks: list[_Block]
    norm: nn.LayerNorm | None
    pool: str  # "token" | "avg"
    pool_from: int  # avg pool over tokens [pool_from:]
    fc_norm: nn.LayerNorm | None
    head: list[tuple[nn.Linear, Callable[[torch.Tensor], torch.Tensor] | None]]  # Linear (+ act)
    grid: tuple[int, int] | None  # expected (H, W) of the image, if the model fixes it
    num_classes: int


def _ln(m: Any, name: str) -> nn.LayerNorm | None:
    """A LayerNorm over the last dim, or None for Identity; Unsupported otherwise."""
    if isinstance(m, nn.Identity):
        return None
    if isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1:
        if type(m).forward not in _LN_FORWARDS:
            raise Unsupported(f"{name}: LayerNorm subclass {type(m).__name__} with its own forward")
        return m
    raise Unsupported(f"{name}: {type(m).__name__} (only LayerNorm or Identity)")


def _stock_ln_forwards() -> tuple:
    fwds: list[Any] = [nn.LayerNorm.forward]
    try:
        from timm.layers import norm as timm_norm

        fwds.append(timm_norm.LayerNorm.forward)
    except Exception:  # pragma: no cover
        pass
    return tuple(fwds)


_LN_FORWARDS = _stock_ln_forwards()


def _activation(m: Any, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The elementwise function of an activation module (identity rule: only its values matter)."""
    t = type(m)
    if t is nn.GELU:
        approx = m.approximate
        return lambda z: F.gelu(z, approximate=approx)
    if t is nn.ReLU:
        return F.relu
    if t is nn.SiLU:
        return F.silu
    if t is nn.Tanh:
        return torch.tanh
    ta: Any
    try:
        from timm.layers import activations as ta
    except Exception:  # pragma: no cover
        ta = None
    if ta is not None:
        if t is ta.GELU:
            return F.gelu
        if t is ta.GELUTanh:
            return lambda z: F.gelu(z, approximate="tanh")
        if t is ta.QuickGELU:
            return lambda z: z * torch.sigmoid(1.702 * z)
    raise Unsupported(f"{name}: activation {t.__name__}")


def _inert(m: Any, name: str) -> None:
    """Dropout-like modules (identity in eval mode) or Identity."""
    if isinstance(m, (nn.Identity, nn.Dropout)):
        return
    timm = timm_classes()
    if timm:
        from timm.layers import DropPath

        if isinstance(m, (DropPath, timm["patch_dropout"])):
            return
    raise Unsupported(f"{name}: {type(m).__name__} (expected Dropout/DropPath/Identity)")


def _check_linear(m: Any, name: str) -> nn.Linear:
    if not isinstance(m, nn.Linear):
        raise Unsupported(f"{name}: {type(m).__name__} (expected Linear)")
    return m


def _check_patch_conv(m: Any, name: str) -> nn.Conv2d:
    if type(m) is not nn.Conv2d:
        raise Unsupported(f"{name}: {type(m).__name__} (expected a Conv2d patch embedding)")
    if m.padding_mode != "zeros" or isinstance(m.padding, str) or m.groups != 1:
        raise Unsupported(f"{name}: patch conv with padding {m.padding!r}/{m.padding_mode!r}, groups {m.groups}")
    return m


def _timm_spec(model: Any, c: dict[str, Any]) -> _Spec:
    vit_cls = c["vit"]
    for meth in ("forward", "forward_features", "forward_head", "pool", "_pos_embed"):
        if getattr(type(model), meth, None) is not getattr(vit_cls, meth):
            raise Unsupported(f"VisionTransformer subclass {type(model).__name__} overrides {meth}")
    if getattr(model, "dynamic_img_size", False):
        raise Unsupported("dynamic_img_size=True")
    if getattr(model, "attn_pool", None) is not None:
        raise Unsupported(f"attention pooling (global_pool={model.global_pool!r})")
    if model.global_pool not in ("token", "avg"):
        raise Unsupported(f"global_pool={model.global_pool!r} (only 'token' and 'avg')")
    pe = model.patch_embed
    if type(pe) is not c["patch_embed"] or not pe.flatten or getattr(pe, "dynamic_img_pad", False):
        raise Unsupported(f"patch_embed: {type(pe).__name__} (stock PatchEmbed with flatten=True)")
    patch = _check_patch_conv(pe.proj, "patch_embed.proj")
    patch_norm = _ln(pe.norm, "patch_embed.norm")
    grid = tuple(pe.img_size) if (pe.img_size is not None and getattr(pe, "strict_img_size", True)) else None
    _inert(model.pos_drop, "pos_drop")
    _inert(getattr(model, "patch_drop", nn.Identity()), "patch_drop")
    prefix = [p for p in (model.cls_token, getattr(model, "reg_token", None)) if p is not None]
    blocks: list[_Block] = []
    for i, blk in enumerate(model.blocks):
        name = f"blocks.{i}"
        if type(blk) is not c["block"]:
            raise Unsupported(f"{name}: {type(blk).__name__} (stock timm Block only)")
        attn = blk.attn
        if type(attn) is not c["attention"]:
            raise Unsupported(f"{name}.attn: {type(attn).__name__} (stock timm Attention only)")
        if getattr(attn, "gate", None) is not None:
            raise Unsupported(f"{name}.attn: gated attention")
        if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
            raise Unsupported(f"{name}.attn.norm: attention output norm (scale_norm)")
        _inert(attn.attn_drop, f"{name}.attn.attn_drop")
        _inert(attn.proj_drop, f"{name}.attn.proj_drop")
        mlp = blk.mlp
        if type(mlp) is not c["mlp"]:
            raise Unsupported(f"{name}.mlp: {type(mlp).__name__} (stock timm Mlp only)")
        if not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity):
            raise Unsupported(f"{name}.mlp.norm: {type(mlp.norm).__name__}")
        _inert(mlp.drop1, f"{name}.mlp.drop1")
        _inert(mlp.drop2, f"{name}.mlp.drop2")
        lss: list[Any] = []
        for j, ls in ((1, blk.ls1), (2, blk.ls2)):
            if isinstance(ls, nn.Identity):
                lss.append(None)
            elif type(ls) is c["layer_scale"]:
                lss.append(ls.gamma)
            else:
                raise Unsupported(f"{name}.ls{j}: {type(ls).__name__}")
        _inert(blk.drop_path1, f"{name}.drop_path1")
        _inert(blk.drop_path2, f"{name}.drop_path2")
        qkv = _check_linear(attn.qkv, f"{name}.attn.qkv")
        blocks.append(_Block(
            norm1=_ln(blk.norm1, f"{name}.norm1") or _need(f"{name}.norm1"),
            qkv_owner=qkv, qkv_names=("weight", "bias"),
            q_norm=_ln(attn.q_norm, f"{name}.attn.q_norm"), k_norm=_ln(attn.k_norm, f"{name}.attn.k_norm"),
            num_heads=attn.num_heads, head_dim=attn.head_dim, scale=float(attn.scale),
            proj=_check_linear(attn.proj, f"{name}.attn.proj"), ls1=lss[0],
            norm2=_ln(blk.norm2, f"{name}.norm2") or _need(f"{name}.norm2"),
            fc1=_check_linear(mlp.fc1, f"{name}.mlp.fc1"), act=_activation(mlp.act, f"{name}.mlp.act"),
            fc2=_check_linear(mlp.fc2, f"{name}.mlp.fc2"), ls2=lss[1],
        ))
    _inert(getattr(model, "head_drop", nn.Identity()), "head_drop")
    head = _check_linear(model.head, "head") if not isinstance(model.head, nn.Identity) else None
    if head is None:
        raise Unsupported("no classification head (num_classes=0)")
    return _Spec(
        patch=patch, patch_norm=patch_norm, prefix=prefix, pos_embed=model.pos_embed,
        pos_covers_prefix=not getattr(model, "no_embed_class", False),
        norm_pre=_ln(getattr(model, "norm_pre", nn.Identity()), "norm_pre"),
        blocks=blocks, norm=_ln(model.norm, "norm"), pool=model.global_pool,
        pool_from=0 if getattr(model, "pool_include_prefix", False) else model.num_prefix_tokens,
        fc_norm=_ln(model.fc_norm, "fc_norm"), head=[(head, None)], grid=grid,
        num_classes=head.out_features,
    )


def _need(name: str) -> nn.LayerNorm:
    raise Unsupported(f"{name}: Identity where the block needs a LayerNorm")


def _torchvision_spec(model: Any, c: dict[str, Any]) -> _Spec:
    vit_cls = c["vit"]
    for meth in ("forward", "_process_input"):
        if getattr(type(model), meth, None) is not getattr(vit_cls, meth):
            raise Unsupported(f"VisionTransformer subclass {type(model).__name__} overrides {meth}")
    patch = _check_patch_conv(model.conv_proj, "conv_proj")  # a conv stem is a Sequential: refused
    enc = model.encoder
    enc_cls: Any = type(enc)
    if enc_cls.forward is not enc_cls.__mro__[0].forward or type(enc).__name__ != "Encoder":
        raise Unsupported(f"encoder: {type(enc).__name__}")
    _inert(enc.dropout, "encoder.dropout")
    blocks: list[_Block] = []
    for i, blk in enumerate(enc.layers):
        name = f"encoder.layers.{i}"
        if type(blk) is not c["block"]:
            raise Unsupported(f"{name}: {type(blk).__name__} (stock EncoderBlock only)")
        mha = blk.self_attention
        if type(mha) is not nn.MultiheadAttention or not mha.batch_first or not mha._qkv_same_embed_dim \
                or mha.bias_k is not None or mha.add_zero_attn or mha.in_proj_weight is None:
            raise Unsupported(f"{name}.self_attention: not a plain batch-first self-attention")
        _inert(blk.dropout, f"{name}.dropout")
        mlp = blk.mlp
        if type(mlp) is not c["mlp"] or len(mlp) != 5:
            raise Unsupported(f"{name}.mlp: {type(mlp).__name__}")
        _inert(mlp[2], f"{name}.mlp.2")
        _inert(mlp[4], f"{name}.mlp.4")
        head_dim = mha.embed_dim // mha.num_heads
        blocks.append(_Block(
            norm1=_ln(blk.ln_1, f"{name}.ln_1") or _need(f"{name}.ln_1"),
            qkv_owner=mha, qkv_names=("in_proj_weight", "in_proj_bias"), q_norm=None, k_norm=None,
            num_heads=mha.num_heads, head_dim=head_dim, scale=1.0 / math.sqrt(head_dim),
            proj=_check_linear(mha.out_proj, f"{name}.self_attention.out_proj"), ls1=None,
            norm2=_ln(blk.ln_2, f"{name}.ln_2") or _need(f"{name}.ln_2"),
            fc1=_check_linear(mlp[0], f"{name}.mlp.0"), act=_activation(mlp[1], f"{name}.mlp.1"),
            fc2=_check_linear(mlp[3], f"{name}.mlp.3"), ls2=None,
        ))
    head_layers: list[tuple[nn.Linear, Callable | None]] = []
    mods = list(model.heads.named_children())
    k = 0
    while k < len(mods):
        nm, m = mods[k]
        lin = _check_linear(m, f"heads.{nm}")
        act = None
        if k + 1 < len(mods) and not isinstance(mods[k + 1][1], nn.Linear):
            act = _activation(mods[k + 1][1], f"heads.{mods[k + 1][0]}")
            k += 1
        head_layers.append((lin, act))
        k += 1
    if not head_layers or head_layers[-1][1] is not None:
        raise Unsupported("heads must end with a Linear")
    return _Spec(
        patch=patch, patch_norm=None, prefix=[model.class_token], pos_embed=enc.pos_embedding,
        pos_covers_prefix=True, norm_pre=None, blocks=blocks,
        norm=_ln(enc.ln, "encoder.ln") or _need("encoder.ln"), pool="token", pool_from=1,
        fc_norm=None, head=head_layers, grid=(model.image_size, model.image_size),
        num_classes=head_layers[-1][0].out_features,
    )


def build_spec(model: nn.Module) -> _Spec:
    """The structure of a supported ViT (raises :class:`Unsupported` naming what is not)."""
    model = unwrap_model(model)
    timm, tv = timm_classes(), torchvision_classes()
    if timm and isinstance(model, timm["vit"]):
        return _timm_spec(model, timm)
    if tv and isinstance(model, tv["vit"]):
        return _torchvision_spec(model, tv)
    raise Unsupported(f"{type(model).__name__} is not a timm or torchvision VisionTransformer")

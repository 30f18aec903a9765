"""CP-LRP and AttnLRP for Vision Transformers (timm ``VisionTransformer``, torchvision ``VisionTransformer``).

Methods ``"cp_lrp"`` (conservative propagation, Ali et al. ICML 2022, with AttnLRP's LayerNorm
rule, Achtibat et al. ICML 2024; the default for ViTs) and ``"attnlrp"`` (AttnLRP inside attention
as well), computed as ONE eval-mode forward that keeps what the
backward needs and a hand-written backward (like :mod:`..fast`): no autograd, no hooks, no
patched classes or modules, nothing of the model is written (parameters, buffers, modes, hooks
and ``.grad`` are only read; no submodule's ``forward`` is called).

Rules (``stab_ε(z) = z + ε·sign(z)``, ``sign(0) = +1``, zennit's ``stabilize``):

* **Linear** (qkv, attention output projection, MLP ``fc1``/``fc2``, head, torchvision's
  ``in_proj``/``out_proj``/``pre_logits``): LRP-ε, ``R_in = x ⊙ Wᵀ (R_out / stab_ε(z))``,
  ``z`` including the bias (default ε = 1e-3).
* **Elementwise activations** (GELU, tanh-GELU, QuickGELU, SiLU, ReLU; torchvision's ``Tanh``
  after ``pre_logits``): identity rule, ``R_in = R_out`` (AttnLRP eq. 9).
* **LayerNorm**: the normalization ``1/σ`` is held constant (AttnLRP); the remaining map
  ``x ↦ (x - mean(x)) ⊙ γ/σ + β`` is linear and gets LRP-0 (the shift β absorbs its share).
* **Attention**, ``cp_lrp``: the attention probabilities ``A = softmax(q kᵀ · scale)`` are held
  constant; relevance flows through the value path only (``o = A v`` is linear in ``v``, LRP-0);
  queries and keys receive none (CP-LRP). Per-head, all heads at once.
* **Attention**, ``attnlrp`` (AttnLRP): the uniform rule on the bilinear ``o = A v`` (half of the
  relevance to ``A``, half to ``v``), the softmax rule ``R_S = S ⊙ (R_A - A · ΣR_A)`` (AttnLRP
  Prop. 3.1, its bias term not redistributed) and the uniform rule on ``S = scale · q kᵀ``; a
  per-head qk-norm gets the LayerNorm rule. As in ``lxt``'s efficient implementation, this is the
  gradient through the attention with the query/key paths scaled by 1/4 and the value path by 1/2.
  Not conservative: the softmax rule absorbs/creates relevance.
* **LayerScale** (``x ⊙ γ``): a diagonal linear map, relevance passes unchanged.
* **Residual adds** (both per block, and the token + position-embedding add): the Norm rule,
  a proportional split ``R_a = a / stab_δ(a + b) · R``, δ = ``stabilizer`` (1e-6).
* **Average pool over tokens** (``global_pool="avg"``): the Norm rule (as for CNNs);
  **class-token pool**: relevance of the pooled vector goes to token 0.
* **Patch embedding** (the conv with kernel = stride = patch size): the Flat rule (the conv's
  output relevance is spread uniformly over its receptive field, all input channels).
* Dropout, DropPath, PatchDropout: inert (eval mode semantics).

**Relevance sinks** (documented, by design): the position embedding (its share of the
token + position add), the class token and register tokens (they are model parameters, not
input: the relevance they collect is not passed to pixels), and every bias and LayerNorm
shift (as in all LRP-ε / LRP-0 rules). With all of them zero, Σ pixel relevance = target
logit (``seed="logit"``) up to what ε absorbs (tested in float64).

Output relevance: ``one_hot(target)`` (``seed="one_hot"``) or ``one_hot · logit``
(``seed="logit"``), as in :mod:`reldrop.attribution.core`.

Supported models (:func:`supports`): timm ``VisionTransformer`` (the ViT / DeiT family:
class-token or average-pool head, optional register tokens, ``no_embed_class``, ``pre_norm``,
``fc_norm``, LayerScale, qk-norm; blocks made of timm's stock ``Block`` / ``Attention`` /
``Mlp``) and torchvision ``VisionTransformer`` (``vit_b_16``-style: patch conv, no conv stem).
Anything else answers False (``"attention pooling"``, ``dynamic_img_size``, gated attention,
parallel blocks, ...) and :func:`build` raises ``ValueError`` saying why.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...._checks import check_class_target, check_image_batch, check_nonnegative
from ..._wrappers import unwrap_model
from ...registry import register_backend
from ...rules import Unsupported, check_seed, flat_conv2d, stab_div, stabilize, why_unsupported
from .plan import build_spec, is_vision_transformer

__all__ = ["METHODS", "supports", "build", "unsupported_reason", "is_vision_transformer", "ViTLRP", "ViTBackend",
           "Unsupported"]

#: methods this backend computes (``cp_lrp``: attention held constant; ``attnlrp``: AttnLRP's
#: softmax and uniform rules inside attention too).
METHODS = ("cp_lrp", "attnlrp")
#: default ε of the Linear layers (as for the ResNets, paper Table 3) and δ of the Norm/Flat rules.
EPSILON = 1e-3
STABILIZER = 1e-6


def supports(model: nn.Module, method: str) -> bool:
    """True when :func:`build` handles ``model`` with ``method`` (``"cp_lrp"``, ``"attnlrp"``). Never raises."""
    return method in METHODS and isinstance(model, nn.Module) and unsupported_reason(model) is None


def unsupported_reason(model: nn.Module) -> str | None:
    """Why :func:`supports` is False for ``model`` (None when it is supported)."""
    return why_unsupported(build_spec, model)


def build(model: nn.Module, method: str = "cp_lrp", **kwargs: Any) -> "ViTLRP":
    """The attributor for ``method`` (``"cp_lrp"`` or ``"attnlrp"``); ``kwargs`` go to :class:`ViTLRP`."""
    return ViTLRP(model, method, **kwargs)


# --------------------------------------------------------------------------------- numerics
def _ratio(num: torch.Tensor, z: torch.Tensor, eps: float) -> torch.Tensor:
    """``num / stab_eps(z)``, ``stab_eps(z) = z + eps·sign(z)`` (sign(+0) = +1), a new tensor."""
    den = z.abs().add_(eps).copysign_(z)  # -0.0 gives -eps: only where num is 0 anyway (act(0) = 0)
    return torch.div(num, den, out=den)


def _layer_norm(x: torch.Tensor, m: nn.LayerNorm, dtype: torch.dtype) -> tuple[torch.Tensor, tuple]:
    """LayerNorm forward (the model's values) and what its backward needs: ``(1/σ, γ)``."""
    w = None if m.weight is None else m.weight.to(dtype)
    b = None if m.bias is None else m.bias.to(dtype)
    y, _mean, rstd = torch.native_layer_norm(x, m.normalized_shape, w, b, m.eps)
    return y, (rstd, w)


def _layer_norm_back(g: torch.Tensor, saved: tuple) -> torch.Tensor:
    """Gradient of ``(x - mean x) · r ⊙ γ`` with ``r = 1/σ`` held constant."""
    r, w = saved
    h = g * w if w is not None else g
    return (h - h.mean(dim=-1, keepdim=True)).mul_(r)


def _linear(x: torch.Tensor, m: nn.Linear, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    w = m.weight.to(dtype)
    b = None if m.bias is None else m.bias.to(dtype)
    return F.linear(x, w, b), w


class ViTLRP:
    """CP-LRP of a Vision Transformer in one forward and one hand-written backward.

    Build once per model (raises ``ValueError`` when :func:`supports` is False), then call
    ``lrp(x, target)`` with ``x`` ``(B, C, H, W)`` float and ``target`` a ``(B,)`` integer
    tensor (or ``"predicted"``). Returns the input relevance, same shape/dtype/device as ``x``,
    detached, computed in ``x``'s dtype (the caller picks float32 or float64) with autocast off.
    Eval-mode semantics (dropout, drop-path, patch-dropout off) whatever the model's mode.

    Args:
        model: a timm or torchvision ``VisionTransformer`` (DDP/DP/compile wrappers unwrapped).
        method: ``"cp_lrp"`` (attention held constant) or ``"attnlrp"``.
        epsilon: ε of the Linear layers (default 1e-3).
        stabilizer: δ of the Norm (residual adds, token pool) and Flat rules (default 1e-6).
        seed: ``"one_hot"`` (default) or ``"logit"``.
    """

    def __init__(self, model: nn.Module, method: str = "cp_lrp", *, epsilon: float = EPSILON,
                 stabilizer: float = STABILIZER, seed: str = "one_hot") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS} for the ViT backend, got {method!r}")
        for name, val in (("epsilon", epsilon), ("stabilizer", stabilizer)):
            check_nonnegative(name, val)
        check_seed(seed)
        try:
            self._spec = build_spec(model)
        except Unsupported as exc:
            raise ValueError(f"the ViT LRP backend does not handle this model ({exc})") from exc
        self.model = unwrap_model(model)
        self.method = method
        self.epsilon = float(epsilon)
        self.stabilizer = float(stabilizer)
        self.seed = seed

    def __repr__(self) -> str:
        return (f"ViTLRP({type(self.model).__name__}, method={self.method!r}, epsilon={self.epsilon}, "
                f"blocks={len(self._spec.blocks)}, pool={self._spec.pool!r})")

    def __call__(self, x: torch.Tensor, target: torch.Tensor | str) -> torch.Tensor:
        check_image_batch(x)
        spec = self._spec
        if x.shape[1] != spec.patch.in_channels:
            raise ValueError(f"x has {x.shape[1]} channels, the patch embedding expects {spec.patch.in_channels}")
        if spec.grid is not None and tuple(x.shape[-2:]) != tuple(spec.grid):
            raise ValueError(f"x must be {spec.grid[0]}x{spec.grid[1]} for this ViT, got {tuple(x.shape[-2:])}")
        check_class_target(target, x.shape[0], spec.num_classes)
        with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
            return self._run(x.detach(), target)

    # ------------------------------------------------------------------------------------
    def _run(self, x: torch.Tensor, target: torch.Tensor | str) -> torch.Tensor:
        spec, eps, delta = self._spec, self.epsilon, self.stabilizer
        attn_lrp = self.method == "attnlrp"
        dt = x.dtype
        B = x.shape[0]

        # ---- embedding ----
        conv = spec.patch
        z_patch = F.conv2d(x, conv.weight.to(dt), None if conv.bias is None else conv.bias.to(dt),
                           conv.stride, conv.padding, conv.dilation, conv.groups)
        gh, gw = z_patch.shape[-2:]
        t = z_patch.flatten(2).transpose(1, 2)  # (B, N, D)
        ln_patch = None
        if spec.patch_norm is not None:
            t, ln_patch = _layer_norm(t, spec.patch_norm, dt)
        prefix = [p.to(dt).expand(B, -1, -1) for p in spec.prefix]
        n_prefix = sum(p.shape[1] for p in prefix)
        pos_fac = None
        if spec.pos_embed is None:
            h = torch.cat(prefix + [t], dim=1) if prefix else t
        elif spec.pos_covers_prefix:
            s = torch.cat(prefix + [t], dim=1) if prefix else t
            h = s + spec.pos_embed.to(dt)
            pos_fac = stab_div(h, delta)  # Norm rule on s + pos (gradient form: ⊙ h / stab(h))
        else:
            h = t + spec.pos_embed.to(dt)
            pos_fac = stab_div(h, delta)
            if prefix:
                h = torch.cat(prefix + [h], dim=1)
        ln_pre = None
        if spec.norm_pre is not None:
            h, ln_pre = _layer_norm(h, spec.norm_pre, dt)

        # ---- blocks: forward, keeping the backward's factors ----
        saved = []
        for blk in spec.blocks:
            y, ln1 = _layer_norm(h, blk.norm1, dt)
            w_qkv = getattr(blk.qkv_owner, blk.qkv_names[0]).to(dt)
            b_qkv = getattr(blk.qkv_owner, blk.qkv_names[1])
            qkv = F.linear(y, w_qkv, None if b_qkv is None else b_qkv.to(dt))
            N = qkv.shape[1]
            H, hd = blk.num_heads, blk.head_dim
            qkv = qkv.reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4)  # (3, B, H, N, hd)
            q_raw, k_raw, v = qkv.unbind(0)
            q, k, lnq, lnk = q_raw, k_raw, None, None
            if blk.q_norm is not None:
                q, lnq = _layer_norm(q_raw, blk.q_norm, dt)
            if blk.k_norm is not None:
                k, lnk = _layer_norm(k_raw, blk.k_norm, dt)
            attn = torch.matmul(q * blk.scale, k.transpose(-2, -1)).softmax(dim=-1)  # (B, H, N, N)
            o = torch.matmul(attn, v)  # (B, H, N, hd)
            fac_v = stab_div(v, eps)  # ε at the value outputs of the qkv Linear
            attn_saved: tuple[Any, ...]
            if attn_lrp:  # and at the query/key outputs; q, k (after qk-norm) for the score gradient
                attn_saved = (attn, fac_v, v, q, k, stab_div(q_raw, eps), stab_div(k_raw, eps), lnq, lnk)
            else:
                attn_saved = (attn, fac_v)
            o = o.transpose(1, 2).reshape(B, N, H * hd)
            a, w_proj = _linear(o, blk.proj, dt)
            fac_proj = stab_div(a, eps)
            if blk.ls1 is not None:
                a = a * blk.ls1.to(dt)
            s1 = h + a
            fac_s1 = stab_div(s1, delta)  # Norm rule: R_h = h·R/stab(s1), R_a = a·R/stab(s1)
            y2, ln2 = _layer_norm(s1, blk.norm2, dt)
            z1, w1 = _linear(y2, blk.fc1, dt)
            u = blk.act(z1)
            m, w2 = _linear(u, blk.fc2, dt)
            fac1 = _ratio(u, z1, eps)  # identity rule on the activation, ε on fc1: act(z)/stab(z)
            fac2 = stab_div(m, eps)
            if blk.ls2 is not None:
                m = m * blk.ls2.to(dt)
            h = s1 + m
            fac_s2 = stab_div(h, delta)
            saved.append((ln1, w_qkv, attn_saved, w_proj, fac_proj, fac_s1, ln2, w1, fac1, w2, fac2, fac_s2))

        # ---- head ----
        ln_final = None
        if spec.norm is not None:
            h, ln_final = _layer_norm(h, spec.norm, dt)
        n_tok = h.shape[1]
        pool_fac = None
        if spec.pool == "token":
            f = h[:, 0]
        else:
            f = h[:, spec.pool_from:].mean(dim=1)
            pool_fac = stab_div(f, delta)
        ln_fc = None
        if spec.fc_norm is not None:
            f, ln_fc = _layer_norm(f, spec.fc_norm, dt)
        head_saved = []
        for lin, act in spec.head:
            z, w = _linear(f, lin, dt)
            if act is not None:
                f = act(z)
                head_saved.append((w, _ratio(f, z, eps)))
            else:
                f = z
                head_saved.append((w, z))
        logits = f
        if isinstance(target, str):
            target = logits.argmax(dim=1)
        idx = target.to(logits.device).long().unsqueeze(1)
        z_t = logits.gather(1, idx)
        top = stabilize(z_t, eps).reciprocal_()  # one_hot: R = 1
        if self.seed == "logit":
            top = top * z_t
        c = torch.zeros_like(logits).scatter_(1, idx, top)

        # ---- backward by hand ----
        w, _ = head_saved[-1]
        g = c @ w
        for w, fac in reversed(head_saved[:-1]):
            g = (g * fac) @ w
        if ln_fc is not None:
            g = _layer_norm_back(g, ln_fc)
        if spec.pool == "token":
            gt = torch.zeros(B, n_tok, g.shape[-1], dtype=dt, device=x.device)
            gt[:, 0] = g
        else:
            gt = torch.zeros(B, n_tok, g.shape[-1], dtype=dt, device=x.device)
            assert pool_fac is not None  # set for the average pool above
            gt[:, spec.pool_from:] = (g * pool_fac / (n_tok - spec.pool_from)).unsqueeze(1)
        g = gt
        if ln_final is not None:
            g = _layer_norm_back(g, ln_final)
        for blk, sv in zip(reversed(spec.blocks), reversed(saved)):
            ln1, w_qkv, attn_saved, w_proj, fac_proj, fac_s1, ln2, w1, fac1, w2, fac2, fac_s2 = sv
            g = g * fac_s2
            gm = g * blk.ls2.to(dt) if blk.ls2 is not None else g
            gm = (gm * fac2) @ w2
            gm = (gm * fac1) @ w1
            g = g + _layer_norm_back(gm, ln2)
            g = g * fac_s1
            ga = g * blk.ls1.to(dt) if blk.ls1 is not None else g
            go = (ga * fac_proj) @ w_proj  # (B, N, H*hd)
            N = go.shape[1]
            H, hd = blk.num_heads, blk.head_dim
            go = go.reshape(B, N, H, hd).transpose(1, 2)  # (B, H, N, hd)
            if not attn_lrp:  # CP-LRP: A held constant, value path only
                attn, fac_v = attn_saved
                gv = torch.matmul(attn.transpose(-2, -1), go).mul_(fac_v)
                gv = gv.transpose(1, 2).reshape(B, N, H * hd)
                g = g + _layer_norm_back(gv @ w_qkv[2 * H * hd:], ln1)
                continue
            # AttnLRP: uniform rule on o = A v and on S = scale·q kᵀ (half to each factor), the
            # softmax rule R_S = S ⊙ (R_A - A ΣR_A) = S ⊙ (softmax's gradient of g_A)
            attn, fac_v, v, q, k, fac_q, fac_k, lnq, lnk = attn_saved
            gv = torch.matmul(attn.transpose(-2, -1), go).mul_(0.5 * fac_v)
            g_a = torch.matmul(go, v.transpose(-2, -1)).mul_(0.5)
            g_s = (g_a - (g_a * attn).sum(dim=-1, keepdim=True)).mul_(attn)
            g_s = g_s.mul_(0.5 * blk.scale)
            gq = torch.matmul(g_s, k)
            gk = torch.matmul(g_s.transpose(-2, -1), q)
            if lnq is not None:
                gq = _layer_norm_back(gq, lnq)
            if lnk is not None:
                gk = _layer_norm_back(gk, lnk)
            g_qkv = torch.stack((gq.mul_(fac_q), gk.mul_(fac_k), gv), dim=2)  # (B, H, 3, N, hd)
            g_qkv = g_qkv.permute(0, 3, 2, 1, 4).reshape(B, N, 3 * H * hd)
            g = g + _layer_norm_back(g_qkv @ w_qkv, ln1)
        if ln_pre is not None:
            g = _layer_norm_back(g, ln_pre)
        if pos_fac is not None and spec.pos_covers_prefix:
            g = g * pos_fac
        g = g[:, n_prefix:]  # the class/register tokens are sinks
        if pos_fac is not None and not spec.pos_covers_prefix:
            g = g * pos_fac
        if ln_patch is not None:
            g = _layer_norm_back(g, ln_patch)
        g = g.transpose(1, 2).reshape(B, -1, gh, gw)
        r_patch = z_patch * g  # relevance at the patch-embedding output
        return flat_conv2d(conv, r_patch, x.shape, delta)



class ViTBackend:
    """Registry entry ``"vit"`` (:mod:`reldrop.attribution.registry`): CP-LRP of supported ViTs.

    ``supports`` answers True for ``method="cp_lrp"``/``"attnlrp"`` on a model :func:`supports`
    accepts, and a reason otherwise; ``default_method`` is ``"cp_lrp"`` for every supported ViT (so
    ``method=None``/``"auto"`` picks it). Custom ``canonizers``/``first_layers`` are refused
    (there is nothing to canonize; the first-layer rule is Flat on the patch embedding).
    """

    name = "vit"

    def supports(self, model: nn.Module, method: str, *, canonizers: Any = None, first_layers: Any = None,
                 **opts: Any) -> bool | str:
        if method not in METHODS:
            return f"computes only {', '.join(METHODS)}"
        if canonizers is not None or first_layers is not None:
            return f"{method} takes no custom canonizers/first_layers (Flat on the patch embedding is fixed)"
        reason = unsupported_reason(model)
        return True if reason is None else reason

    def build(self, model: nn.Module, method: str, *, canonizers: Any = None, first_layers: Any = None,
              **kwargs: Any) -> ViTLRP:
        return ViTLRP(model, method, **kwargs)

    def default_method(self, model: nn.Module) -> str | None:
        return "cp_lrp" if supports(model, "cp_lrp") else None

    def __repr__(self) -> str:
        return "ViTBackend()"


register_backend("vit", ViTBackend())  # CP-LRP of timm/torchvision ViTs, ahead of the fallback

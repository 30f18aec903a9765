"""An explicit CP-LRP reference for small Vision Transformers, written independently of the backend.

Relevance tensors ``R`` are propagated layer by layer with the textbook rules, each written out
through its contribution tensor ``z_ij`` (``R_i = Σ_j z_ij / z_j · R_j``), materialized in full
(fine for the tiny models of the tests, float64):

* Linear: LRP-ε, ``z_ij = x_i W_ji``, denominator ``z_j + b_j + ε·sign``;
* activation: identity (``R_in = R_out``); LayerScale: identity (diagonal map);
* LayerNorm with σ held constant: ``z_ij = x_i · (δ_ij - 1/D) · γ_j/σ``, denominator ``y_j``
  (the output, shift β included: LRP-0);
* attention with A held constant: ``z_{k→q} = A_qk v_k`` per head and channel, denominator
  ``o_q``; queries and keys get nothing;
* residual / position-embedding adds and the token average pool: Norm (proportional) rule;
* patch embedding: Flat over each patch (non-overlapping patches only);
* ``attnlrp=True``: inside attention AttnLRP instead: the uniform rule on the bilinear maps
  ``o = A v`` and ``S = scale·q kᵀ`` (half of each output's relevance to each factor) and the
  softmax rule ``R_S = S ⊙ (R_A - A ΣR_A)``; per-head qk-norms get the LayerNorm rule.

The forward is recomputed here from the parameters (LayerNorm, softmax, GELU from their
formulas) and checked against ``model(x)`` by the tests. Supports the timm ``VisionTransformer``
(Block/Attention/Mlp, class-token or average-pool head, LayerScale, ``pre_norm``, qk-norm) and
torchvision's.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def _sign_stab(z: torch.Tensor, eps: float) -> torch.Tensor:
    return z + eps * torch.where(z >= 0, torch.ones_like(z), -torch.ones_like(z))


def _gelu(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * z * (1.0 + torch.erf(z / math.sqrt(2.0)))


def lrp_linear(x, weight, bias, r_out, eps):
    """x (..., I), weight (O, I) -> (z, R_in) with the explicit contributions x_i W_ji."""
    contrib = x.unsqueeze(-2) * weight  # (..., O, I)
    z = contrib.sum(-1) + (0 if bias is None else bias)
    if r_out is None:
        return z
    return (contrib / _sign_stab(z, eps).unsqueeze(-1) * r_out.unsqueeze(-1)).sum(-2)


def ln_forward(x, ln):
    d = x.shape[-1]
    mu = x.sum(-1, keepdim=True) / d
    var = ((x - mu) ** 2).sum(-1, keepdim=True) / d
    sigma = torch.sqrt(var + ln.eps)
    gamma = ln.weight if ln.weight is not None else torch.ones(d, dtype=x.dtype)
    beta = ln.bias if ln.bias is not None else torch.zeros(d, dtype=x.dtype)
    y = (x - mu) / sigma * gamma + beta
    return y, sigma, gamma


def ln_lrp(x, ln, r_out):
    """LRP-0 through LayerNorm with σ constant: contributions x_i (δ_ij - 1/D) γ_j / σ, denominator y_j."""
    y, sigma, gamma = ln_forward(x, ln)
    d = x.shape[-1]
    centre = torch.eye(d, dtype=x.dtype) - 1.0 / d  # [i, j]
    contrib = x.unsqueeze(-1) * centre * (gamma / sigma).unsqueeze(-2)  # (..., i, j)
    return (contrib / y.unsqueeze(-2) * r_out.unsqueeze(-2)).sum(-1)


def norm_split(parts, r_out, delta):
    """Norm rule on a sum of ``parts``: each gets ``part / stab_δ(Σ parts) · R``."""
    total = sum(parts)
    den = _sign_stab(total, delta)
    return [p / den * r_out for p in parts]


def attention_lrp(v, attn, r_o):
    """o[b,h,q,d] = Σ_k A[b,h,q,k] v[b,h,k,d]; A constant: R_v[k,d] = Σ_q A_qk v_kd / o_qd R_o[q,d]."""
    contrib = attn.unsqueeze(-1) * v.unsqueeze(-3)  # (B, H, q, k, d)
    o = contrib.sum(-2)
    return (contrib / o.unsqueeze(-2) * r_o.unsqueeze(-2)).sum(-3)


def bilinear_uniform_lrp(a, b, r_out, equation_contrib, out_dims):
    """Uniform rule on a bilinear map (AttnLRP eq. 7): half of each output's relevance to each factor.

    ``equation_contrib(a, b)`` returns the contributions tensor ``z`` whose sum over the reduced
    axis gives the outputs; ``out_dims`` is that axis. Returns ``(R_a_contrib, R_b_contrib)``: the
    per-contribution relevance ``z / (2 out) · R_out``, summed by the caller onto each factor.
    """
    z = equation_contrib(a, b)
    out = z.sum(out_dims, keepdim=True)
    return z / (2 * out) * r_out.unsqueeze(out_dims)


def attnlrp_attention(q, k, v, attn, scale, r_o):
    """AttnLRP inside one attention (per head, explicit): returns ``(R_q, R_k, R_v)``.

    o[q,d] = Σ_k A[q,k] v[k,d] (uniform rule), A = softmax(S) (softmax rule
    R_S = S ⊙ (R_A - A ΣR_A)), S[q,k] = Σ_d scale·q[q,d] k[k,d] (uniform rule).
    """
    per = bilinear_uniform_lrp(attn, v, r_o, lambda a, b: a.unsqueeze(-1) * b.unsqueeze(-3), -2)  # (B,H,q,k,d)
    r_a = per.sum(-1)  # onto A[q,k]
    r_v = per.sum(-3)  # onto v[k,d]
    scores = scale * torch.einsum("bhqd,bhkd->bhqk", q, k)
    r_s = scores * (r_a - attn * r_a.sum(-1, keepdim=True))
    per = bilinear_uniform_lrp(q, k, r_s, lambda a, b: scale * a.unsqueeze(-2) * b.unsqueeze(-3), -1)  # (B,H,q,k,d)
    return per.sum(-2), per.sum(-3), r_v


def _qk_norms(blk):
    """The per-head query/key LayerNorms of a timm block (None where absent)."""
    attn = getattr(blk, "attn", None)
    norms = [getattr(attn, n, None) for n in ("q_norm", "k_norm")]
    return [m if isinstance(m, nn.LayerNorm) else None for m in norms]


def _block_params(blk):
    """(norm1, (Wqkv, bqkv), heads, scale, (Wproj, bproj), ls1, norm2, fc1, fc2, ls2) of a timm or torchvision block."""
    if hasattr(blk, "attn"):
        a = blk.attn
        gamma1 = getattr(blk.ls1, "gamma", None)
        gamma2 = getattr(blk.ls2, "gamma", None)
        return (blk.norm1, (a.qkv.weight, a.qkv.bias), a.num_heads, a.scale, (a.proj.weight, a.proj.bias),
                gamma1, blk.norm2, blk.mlp.fc1, blk.mlp.fc2, gamma2)
    m = blk.self_attention
    hd = m.embed_dim // m.num_heads
    return (blk.ln_1, (m.in_proj_weight, m.in_proj_bias), m.num_heads, hd ** -0.5,
            (m.out_proj.weight, m.out_proj.bias), None, blk.ln_2, blk.mlp[0], blk.mlp[3], None)


def reference_cp_lrp(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, epsilon: float = 1e-3,
                     delta: float = 1e-6, seed: str = "one_hot", attnlrp: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R, logits)``: explicit CP-LRP relevance (shape of ``x``) and the recomputed logits.
    ``attnlrp=True``: AttnLRP inside attention (:func:`attnlrp_attention`) instead of CP-LRP."""
    tv = hasattr(model, "conv_proj")
    conv = model.conv_proj if tv else model.patch_embed.proj
    B, C, Hh, Ww = x.shape
    p = conv.kernel_size[0]
    gh, gw = Hh // p, Ww // p
    # patch embedding as a Linear on flattened patches
    patches = x.reshape(B, C, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, C * p * p)
    w_patch = conv.weight.reshape(conv.out_channels, -1)
    t = patches @ w_patch.T + (0 if conv.bias is None else conv.bias)  # (B, N, D)
    if tv:
        cls, pos, pool, blocks = model.class_token, model.encoder.pos_embedding, "token", list(model.encoder.layers)
        final, fc_norm, heads = model.encoder.ln, None, [model.heads.head]
        n_prefix, pos_all = 1, True
    else:
        cls, pos, pool, blocks = model.cls_token, model.pos_embed, model.global_pool, list(model.blocks)
        final = None if isinstance(model.norm, nn.Identity) else model.norm
        fc_norm = None if isinstance(model.fc_norm, nn.Identity) else model.fc_norm
        heads = [model.head]
        n_prefix, pos_all = model.num_prefix_tokens, not model.no_embed_class
    prefix = [cls.expand(B, -1, -1)] if cls is not None else []
    tokens = torch.cat(prefix + [t], 1)
    assert pos_all or not prefix
    pos_b = pos.expand(B, -1, -1)
    h_embed = tokens + pos_b
    norm_pre = None if tv or isinstance(model.norm_pre, nn.Identity) else model.norm_pre
    h0 = ln_forward(h_embed, norm_pre)[0] if norm_pre is not None else h_embed

    hs, caches = [h0], []
    h = h0
    for blk in blocks:
        n1, (wqkv, bqkv), H, scale, (wp, bp), g1, n2, fc1, fc2, g2 = _block_params(blk)
        y1, _, _ = ln_forward(h, n1)
        qkv = lrp_linear(y1, wqkv, bqkv, None, epsilon)
        N, D = qkv.shape[1], qkv.shape[2] // 3
        hd = D // H
        q_raw, k_raw, v = (qkv[..., i * D:(i + 1) * D].reshape(B, N, H, hd).transpose(1, 2) for i in range(3))
        qn, kn = _qk_norms(blk)
        q = ln_forward(q_raw, qn)[0] if qn is not None else q_raw
        k = ln_forward(k_raw, kn)[0] if kn is not None else k_raw
        scores = torch.einsum("bhqd,bhkd->bhqk", q, k) * scale
        e = torch.exp(scores - scores.max(-1, keepdim=True).values)
        attn = e / e.sum(-1, keepdim=True)
        o = torch.einsum("bhqk,bhkd->bhqd", attn, v)
        o_flat = o.transpose(1, 2).reshape(B, N, D)
        a = lrp_linear(o_flat, wp, bp, None, epsilon)
        a_ls = a * g1 if g1 is not None else a
        s1 = h + a_ls
        y2, _, _ = ln_forward(s1, n2)
        z1 = lrp_linear(y2, fc1.weight, fc1.bias, None, epsilon)
        u = _gelu(z1)
        m = lrp_linear(u, fc2.weight, fc2.bias, None, epsilon)
        m_ls = m * g2 if g2 is not None else m
        h = s1 + m_ls
        caches.append((y1, (q_raw, k_raw, q, k, v), attn, o_flat, a, a_ls, s1, y2, u, m, m_ls))
        hs.append(h)
    hf = ln_forward(h, final)[0] if final is not None else h
    if pool == "token":
        f = hf[:, 0]
    else:
        f = hf[:, n_prefix:].mean(1)
    ff = ln_forward(f, fc_norm)[0] if fc_norm is not None else f
    logits = lrp_linear(ff, heads[-1].weight, heads[-1].bias, None, epsilon)

    # ---- relevance, top down ----
    onehot = torch.zeros_like(logits).scatter_(1, target[:, None], 1.0)
    r_out = onehot * logits if seed == "logit" else onehot
    r = lrp_linear(ff, heads[-1].weight, heads[-1].bias, r_out, epsilon)
    if fc_norm is not None:
        r = ln_lrp(f, fc_norm, r)
    r_h = torch.zeros_like(hf)
    if pool == "token":
        r_h[:, 0] = r
    else:
        n = hf.shape[1] - n_prefix
        parts = hf[:, n_prefix:] / n  # contributions to the mean
        r_h[:, n_prefix:] = parts / _sign_stab(f, delta).unsqueeze(1) * r.unsqueeze(1)
    r = ln_lrp(h, final, r_h) if final is not None else r_h
    for blk, (h_in, cache) in zip(reversed(blocks), zip(reversed(hs[:-1]), reversed(caches))):
        n1, (wqkv, bqkv), H, scale, (wp, bp), g1, n2, fc1, fc2, g2 = _block_params(blk)
        y1, (q_raw, k_raw, q, k, v), attn, o_flat, a, a_ls, s1, y2, u, m, m_ls = cache
        r_s1, r_m = norm_split([s1, m_ls], r, delta)
        r_u = lrp_linear(u, fc2.weight, fc2.bias, r_m, epsilon)  # LayerScale: identity
        r_y2 = lrp_linear(y2, fc1.weight, fc1.bias, r_u, epsilon)  # GELU: identity
        r_s1 = r_s1 + ln_lrp(s1, n2, r_y2)
        r_h, r_a = norm_split([h_in, a_ls], r_s1, delta)
        r_o = lrp_linear(o_flat, wp, bp, r_a, epsilon)
        N, D = o_flat.shape[1], o_flat.shape[2]
        hd = D // H
        r_o_heads = r_o.reshape(B, N, H, hd).transpose(1, 2)
        if attnlrp:
            r_q, r_k, r_v = attnlrp_attention(q, k, v, attn, scale, r_o_heads)
            qn, kn = _qk_norms(blk)
            r_q = ln_lrp(q_raw, qn, r_q) if qn is not None else r_q  # qk-norm: the LayerNorm rule
            r_k = ln_lrp(k_raw, kn, r_k) if kn is not None else r_k
            r_q, r_k, r_v = (t.transpose(1, 2).reshape(B, N, D) for t in (r_q, r_k, r_v))
            r_qkv = torch.cat([r_q, r_k, r_v], -1)
        else:
            r_v = attention_lrp(v, attn, r_o_heads).transpose(1, 2).reshape(B, N, D)
            # only the value rows of the qkv Linear receive relevance
            r_qkv = torch.cat([torch.zeros_like(r_v), torch.zeros_like(r_v), r_v], -1)
        r_y1 = lrp_linear(y1, wqkv, bqkv, r_qkv, epsilon)
        r = r_h + ln_lrp(h_in, n1, r_y1)
    if norm_pre is not None:
        r = ln_lrp(h_embed, norm_pre, r)
    r_tokens, _pos = norm_split([tokens, pos_b], r, delta)
    r_patch = r_tokens[:, n_prefix:]  # (B, N, D): relevance of the conv outputs
    # Flat: each patch's total relevance spread uniformly over its C·p·p pixels
    per_patch = r_patch.sum(-1) / (C * p * p + delta)  # (B, N)
    R = per_patch.reshape(B, gh, 1, gw, 1).expand(B, gh, p, gw, p).reshape(B, 1, Hh, Ww).expand(B, C, Hh, Ww)
    return R.contiguous(), logits

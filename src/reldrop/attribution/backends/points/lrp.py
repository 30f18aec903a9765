"""Fast LRP-z⁺ (Flat input layers) for the point-cloud models: PointNet++ SSG/MSG and PointNet.

Same maths as the zennit backend with the ``zplus_flat`` composite and the point canonizers of
:mod:`reldrop.attribution.canonizers.points` (BN merged into each Linear with ``eps`` included, centroids held constant
in ``xyz - centre``, T-Net transforms held constant with the ε-rule, ε = 1e-6, across ``x @ T``):

* **z⁺** (zennit ``ZPlus``, every Linear except the input layers): with ``c = R_out / (z⁺ + δ)``
  and ``z⁺ = x⁺W⁺ᵀ + b⁺ + x⁻W⁻ᵀ`` (``δ`` = ``stabilizer``, z⁺ >= 0 so the sign is +1),
  ``R_in = x⁺ ⊙ (c W⁺) + x⁻ ⊙ (c W⁻)``. Inputs that come out of a ReLU are non-negative, so the
  ``x⁻`` terms are computed only for the columns that can be negative (grouped coordinates,
  PointNet's max-pooled features without ReLU, feature-T-Net outputs).
* **Flat** (the first layer of every level-1 shared MLP): each input column of a row receives
  ``Σ_j R_j / (D_in + δ)``.
* ReLU, dropout and the merged BN pass relevance unchanged; max pooling over a group sends it
  to the winning row; gathers (``index_points``) scatter-add it back to the gathered points.

Why it is faster than zennit: one eval-mode forward without autograd that keeps each Linear's
input, then a hand-written backward that recomputes ``z⁺`` layer by layer (one GEMM) and
applies ``c W⁺`` (one GEMM): no hooks, no modified-module copies, no autograd graph of the
two modified forwards zennit builds per layer, no parameter gradients. BN is folded
functionally per call; nothing of the model is modified (parameters, buffers, modes, hooks and
``.grad`` are only read; no submodule is called). Sampling (FPS, ball query) uses the model's own
functions with eval-mode semantics (deterministic FPS start).

Supported: :class:`~reldrop.models.pointnet2.PointNet2Classifier` (``layout="rows"``, SSG and
MSG, any ``in_channels``) and :class:`~reldrop.models.pointnet.PointNetClassifier` (with or
without T-Nets), as built by :mod:`reldrop.models` (exact classes, stock forwards). Anything else
(``layout="conv2d"``, subclasses, swapped modules): :func:`supports` is False and ``auto``
uses zennit.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...._checks import check_class_target, check_nonnegative, check_point_cloud
from ..._wrappers import unwrap_model
from ...registry import HandWrittenBackend, register_backend
from ...rules import Unsupported, check_seed, fold_batchnorm, stabilize, why_unsupported
from .plan import Dense, TNetPlan, parse_point_model

__all__ = ["supports", "FastPointLRP", "PointsBackend", "METHODS"]

METHODS = ("zplus_flat",)
#: ε of the ε-rule across the T-Net products ``x @ T`` (as in :mod:`reldrop.attribution.canonizers.points`).
TRANSFORM_EPSILON = 1e-6


def supports(model: nn.Module, method: str) -> bool:
    """True when :class:`FastPointLRP` reproduces the zennit backend for ``model``/``method``."""
    return (method in METHODS and isinstance(model, nn.Module)
            and why_unsupported(parse_point_model, unwrap_model(model)) is None)


# ------------------------------------------------------------------------------------- maths
def _fold(layer: Dense, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight ``(O, I)`` and bias ``(O,)`` with the BN merged, same arithmetic as the canonizer."""
    w, b = fold_batchnorm(layer.linear.weight, layer.linear.bias, layer.bn)
    return w.to(dtype), b.to(dtype)


def _plain(lin: nn.Linear, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    w = lin.weight
    b = lin.bias if lin.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
    return w.to(dtype), b.to(dtype)


Signed = slice | None  # columns of a layer input that may be negative (None: all >= 0)


class _Scratch:
    """Tensors that died during one call, reused as outputs of later ops of the same call.

    Fresh CPU memory is expensive: glibc hands every large tensor back to the OS when it is
    freed, and the next one page-faults on first touch (for a 100 MB output about as long as the
    GEMM that fills it). The backward recycles the forward's tensors instead. Only contiguous
    tensors that nothing else references are given; ``take`` returns a view of one.
    """

    def __init__(self) -> None:
        self.free: list[torch.Tensor] = []

    def take(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        n = 1
        for d in shape:
            n *= d
        best = -1
        for i, t in enumerate(self.free):
            if t.numel() >= n and t.dtype == like.dtype and t.device == like.device and (
                    best < 0 or t.numel() < self.free[best].numel()):
                best = i
        if best < 0:
            return torch.empty(shape, dtype=like.dtype, device=like.device)
        return self.free.pop(best).view(-1)[:n].view(shape)

    def give(self, *tensors: torch.Tensor | None) -> None:
        self.free += [t for t in tensors if t is not None and t.is_contiguous()]


def _zplus_back(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, r: torch.Tensor, delta: float,
                signed: Signed, scratch: _Scratch) -> torch.Tensor:
    """LRP-z⁺ through ``z = x Wᵀ + b``: relevance ``(M, I)`` at the input from ``r (M, O)`` at the output.

    ``signed`` names the input columns that may be negative; the others are >= 0 by construction
    (ReLU outputs), so ``x⁺ = x`` there and their ``x⁻`` terms vanish. ``x`` and ``r`` are consumed:
    the result is written into ``x``'s memory and ``r``'s goes to ``scratch``.
    """
    M, O = r.shape
    wp, bp = w.clamp(min=0), b.clamp(min=0)
    if signed is None:
        xp = x
    else:
        xn = x[:, signed].clamp(max=0)
        wn = w[:, signed].clamp(max=0)
        xp = x.clamp_(min=0)
    zp = torch.addmm(bp, xp, wp.t(), out=scratch.take((M, O), r))
    if signed is not None:
        zp += xn @ wn.t()
    c = r.div_(zp.add_(delta))  # z⁺ >= 0: zennit's stabilizer adds +δ
    scratch.give(zp)
    g = torch.mm(c, wp, out=scratch.take(tuple(x.shape), c))
    rin = xp.mul_(g)
    if signed is not None:
        rin[:, signed] += xn * (c @ wn)
    scratch.give(c, g)
    return rin


def _flat_back(r: torch.Tensor, d_in: int, delta: float) -> torch.Tensor:
    """Flat rule: every one of the ``d_in`` input columns of a row gets ``Σ_j R_j / (d_in + δ)``: ``(M,)``."""
    return r.sum(1) / (float(d_in) + delta)


def _run(layers: list[tuple[torch.Tensor, torch.Tensor]], relus: list[bool], x: torch.Tensor,
         tape: list[torch.Tensor] | None, pool: tuple[int, int, int] | None = None
         ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Forward of an MLP on rows ``x (M, I)``; keeps each layer's input in ``tape``.

    ``pool = (B, S, K)``: max over K after the last Linear (its ReLU, if any, after the max, as the
    model does in ``layout="rows"``); returns ``(out (B, S, O), argmax (B, S, O))``, and with a
    ``tape`` the pre-pool rows ``(M, O)`` are appended to it too (memory for the backward).
    """
    n = len(layers)
    for j, ((w, b), relu) in enumerate(zip(layers, relus)):
        if tape is not None:
            tape.append(x)
        x = F.linear(x, w, b)
        if relu and (j < n - 1 or pool is None):
            x = x.relu_()
    if pool is None:
        return x, None
    B, S, K = pool
    vals, arg = x.view(B, S, K, -1).max(2)
    if tape is not None:
        tape.append(x)
    if relus[-1]:
        vals = vals.relu_()
    return vals, arg


def _back(layers: list[tuple[torch.Tensor, torch.Tensor]], tape: list[torch.Tensor], r: torch.Tensor,
          delta: float, signed_first: Signed, flat_first: bool, scratch: _Scratch) -> torch.Tensor:
    """Backward of :func:`_run` from relevance ``r`` at the last Linear's output (rows ``(M, O)``).

    Consumes ``tape`` (its tensors are overwritten or recycled).
    """
    for j in range(len(layers) - 1, -1, -1):
        if j == 0 and flat_first:
            out = _flat_back(r, tape[0].shape[1], delta)
            scratch.give(r, tape[0])
            tape.clear()
            return out
        w, b = layers[j]
        r = _zplus_back(tape[j], w, b, r, delta, signed_first if j == 0 else None, scratch)
    tape.clear()
    return r


def _unpool(r: torch.Tensor, arg: torch.Tensor, K: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Winner-take-all: relevance ``(B, S, O)`` of a max over K → rows ``(B·S·K, O)`` (into ``out``)."""
    B, S, O = r.shape
    out = r.new_zeros(B, S, K, O) if out is None else out.view(B, S, K, O).zero_()
    out.scatter_(2, arg.unsqueeze(2), r.unsqueeze(2))
    return out.view(B * S * K, O)


def _scatter_rows(r: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """Backward of ``index_points``: ``r (B, *I, C)`` of gathered rows ``idx (B, *I)`` → ``(B, n, C)``."""
    B = idx.shape[0]
    C = r.shape[-1]
    offsets = (torch.arange(B, device=idx.device) * n).view(B, *([1] * (idx.dim() - 1)))
    out = r.new_zeros(B * n, C)
    out.index_add_(0, (idx + offsets).reshape(-1), r.reshape(-1, C))
    return out.view(B, n, C)


def _eps_bmm_back(x: torch.Tensor, trans: torch.Tensor, r: torch.Tensor, eps: float) -> torch.Tensor:
    """ε-rule across ``z = x @ T`` (``x (B, N, k)``, constant ``T (B, k, k)``): relevance at ``x``."""
    z = torch.bmm(x, trans)
    return x * torch.bmm(r / stabilize(z, eps), trans.transpose(1, 2))


# ------------------------------------------------------------------------------------- backend
class FastPointLRP:
    """LRP-z⁺ with Flat input layers for reldrop's PointNet++ / PointNet, in one hand-written pass.

    Build once per model (raises ``ValueError`` when :func:`supports` is False), then call
    ``lrp(points, target)`` with ``points (B, N, D)`` float and ``target`` a ``(B,)`` integer tensor
    (or ``"predicted"``). Returns the relevance ``(B, N, D)`` (same dtype/device), detached; a
    point's relevance is the sum over its D channels. Eval-mode semantics always (BN running
    statistics, dropout off, deterministic FPS start) without changing the model's mode.

    Args:
        model: ``PointNet2Classifier`` (``layout="rows"``) or ``PointNetClassifier``.
        method: ``"zplus_flat"``.
        stabilizer: δ of the z⁺ and Flat denominators (zennit's default 1e-6).
        seed: output relevance, ``"one_hot"`` (default) or ``"logit"`` (``one_hot · logit``).
    """

    def __init__(self, model: nn.Module, method: str = "zplus_flat", *, stabilizer: float = 1e-6,
                 seed: str = "one_hot") -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS} for the fast point backend, got {method!r}")
        check_nonnegative("stabilizer", stabilizer, positive=True)
        check_seed(seed)
        self.model: Any = unwrap_model(model)  # a PointNet2Classifier or PointNetClassifier (parsed below)
        try:
            self._kind, self._arch = parse_point_model(self.model)
        except Unsupported as exc:
            raise ValueError(f"the fast LRP backend does not handle method {method!r} on this model "
                             f"({exc}); use backend='zennit'") from exc
        self.method = method
        self.stabilizer = float(stabilizer)
        self.seed = seed

    def __repr__(self) -> str:
        return (f"FastPointLRP({type(self.model).__name__}, method={self.method!r}, "
                f"stabilizer={self.stabilizer})")

    def __call__(self, points: torch.Tensor, target: torch.Tensor | str) -> torch.Tensor:
        check_point_cloud("points", points, self.model.in_channels)
        if points.shape[0] == 0 or points.shape[1] == 0:
            raise ValueError(f"points must have shape (B, N, D) with B, N >= 1, got {tuple(points.shape)}")
        check_class_target(target, points.shape[0], self.model.fc.out_features)  # one sync, before any work
        with torch.no_grad(), torch.autocast(device_type=points.device.type, enabled=False):
            if self._kind == "pointnet2":
                return self._pointnet2(points.detach(), target)
            return self._pointnet(points.detach(), target)

    # ----------------------------------------------------------------------------------- head
    def _head(self, h: torch.Tensor, head: list[Dense], fc: nn.Linear, target: torch.Tensor | str,
              signed_first: Signed, scratch: _Scratch) -> torch.Tensor:
        """Logits from the pooled features ``h (B, F)``, then relevance back to ``h``."""
        dtype, delta = h.dtype, self.stabilizer
        params = [_fold(layer, dtype) for layer in head]
        tape: list[torch.Tensor] = []
        x, _ = _run(params, [layer.relu for layer in head], h, tape)
        wf, bf = _plain(fc, dtype)
        logits = F.linear(x, wf, bf)
        if isinstance(target, str):
            target = logits.argmax(1)
        index = target.to(logits.device).long().unsqueeze(1)
        value = logits.gather(1, index) if self.seed == "logit" else torch.ones_like(index, dtype=dtype)
        r = torch.zeros_like(logits).scatter_(1, index, value)
        r = _zplus_back(x, wf, bf, r, delta, None, scratch)
        return _back(params, tape, r, delta, signed_first, False, scratch)

    # ------------------------------------------------------------------------------ PointNet++
    def _pointnet2(self, points: torch.Tensor, target: torch.Tensor | str) -> torch.Tensor:
        levels, head, fc = self._arch
        saved, feats = self._pointnet2_forward(points, levels)
        # ---- head, then relevance back through the levels ----
        scratch = _Scratch()
        r_f = self._head(feats.reshape(points.shape[0], -1), head, fc, target, None, scratch)  # (B, C3)
        return self._pointnet2_backward(points, saved, r_f, scratch)

    def _pointnet2_forward(self, points: torch.Tensor, levels: list[Any]) -> tuple[list[Any], torch.Tensor]:
        """Eval-semantics forward through the set abstractions: per level ``(level, fps, branches, n_src)``
        (what the backward needs) and the group-all level's features ``(B, 1, C3)``."""
        from ....models import pointnet2 as pn2

        dtype = points.dtype
        B, N, D = points.shape
        xyz = points[..., :3]
        feats = points[..., 3:] if D > 3 else None

        # ---- forward (eval semantics), keeping what the backward needs ----
        saved: list[Any] = []  # per level: (level, fps, branches, n_src)
        cur_xyz, cur_f = xyz, feats
        for lvl in levels:
            n_src = cur_xyz.shape[1]
            if lvl.npoint is None:  # group all: one group of the uncentred points
                branch = lvl.branches[0]
                rows = cur_xyz if cur_f is None else torch.cat([cur_xyz, cur_f], -1)
                params = [_fold(layer, dtype) for layer in branch.layers]
                tape: list[torch.Tensor] = []
                out, arg = _run(params, [layer.relu for layer in branch.layers],
                                rows.reshape(B * n_src, -1), tape, (B, 1, n_src))
                saved.append((lvl, None, [(params, tape, arg, None, rows.shape[-1])], n_src))
                cur_f = out
                break
            fps = pn2.farthest_point_sample(cur_xyz, lvl.npoint)
            new_xyz = pn2.index_points(cur_xyz, fps)
            sqdist = pn2.square_distance(new_xyz, cur_xyz) if lvl.msg else None
            outs: list[torch.Tensor] = []
            per_branch: list[Any] = []  # (params, tape, arg, idx, width)
            for branch in lvl.branches:
                assert branch.radius is not None and branch.nsample is not None
                idx = pn2.ball_query(branch.radius, branch.nsample, cur_xyz, new_xyz, sqdist)
                grouped = pn2.group(cur_xyz, cur_f, new_xyz, idx, branch.xyz_first)
                S, K = idx.shape[1], idx.shape[2]
                params = [_fold(layer, dtype) for layer in branch.layers]
                tape = []
                out, arg = _run(params, [layer.relu for layer in branch.layers],
                                grouped.reshape(B * S * K, -1), tape, (B, S, K))
                outs.append(out)
                per_branch.append((params, tape, arg, idx, grouped.shape[-1]))
            saved.append((lvl, fps, per_branch, n_src))
            cur_xyz = new_xyz
            cur_f = outs[0] if len(outs) == 1 else torch.cat(outs, -1)

        assert cur_f is not None  # the group-all level's features
        return saved, cur_f

    def _pointnet2_backward(self, points: torch.Tensor, saved: list[Any], r_f: torch.Tensor, scratch: _Scratch
                            ) -> torch.Tensor:
        """Relevance ``r_f`` of the group-all features back through the levels to the input points ``(B, N, D)``."""
        dtype, delta = points.dtype, self.stabilizer
        B, N, D = points.shape
        r_xyz: torch.Tensor | None = None  # relevance of the current level's centre coordinates
        r_pts: torch.Tensor | None = None  # Flat relevance per input point (every channel)
        n_levels = len(saved)
        for li in range(n_levels - 1, -1, -1):
            lvl, fps, per_branch, n_src = saved[li]
            first_level = li == 0
            r_f = r_f.view(B, -1, r_f.shape[-1])
            src_xyz = torch.zeros(B, n_src, 3, dtype=dtype, device=points.device)
            src_f: torch.Tensor | None = None
            start = 0
            for params, tape, arg, idx, width in per_branch:
                c_out = params[-1][0].shape[0]
                r_b = r_f[..., start:start + c_out]
                start += c_out
                K = tape[0].shape[0] // (B * r_b.shape[1])
                rows = _unpool(r_b, arg, K, out=tape.pop())  # into the pre-pool rows' memory
                xyz_cols = slice(0, 3) if (lvl.npoint is None or lvl.branches[0].xyz_first) else \
                    slice(width - 3, width)
                r_in = _back(params, tape, rows, delta, None if first_level else xyz_cols, first_level, scratch)
                if first_level:  # Flat: one value per grouped row, the same for each of its D channels
                    r_rows = r_in.view(B, -1, K, 1)
                    gathered = _scatter_rows(r_rows, idx, n_src) if idx is not None else r_rows.view(B, n_src, 1)
                    r_pts = gathered if r_pts is None else r_pts + gathered
                    continue
                r_in = r_in.view(B, -1, K, width)
                if idx is None:  # group all: rows are the source points themselves
                    r_src = r_in.view(B, n_src, width)
                else:
                    r_src = _scatter_rows(r_in, idx, n_src)
                f_cols = slice(3, width) if xyz_cols.start == 0 else slice(0, width - 3)
                src_xyz += r_src[..., xyz_cols]
                src_f = r_src[..., f_cols] if src_f is None else src_f + r_src[..., f_cols]
            # centres of this level are points of the source level, picked by FPS
            if r_xyz is not None and fps is not None:
                src_xyz += _scatter_rows(r_xyz, fps, n_src)
            elif r_xyz is not None:  # pragma: no cover - group-all has no centres to route
                raise RuntimeError("relevance on the centres of a group-all level")
            r_xyz = src_xyz
            if not first_level:
                assert src_f is not None
                r_f = src_f
        assert r_pts is not None and r_xyz is not None
        out = r_pts.expand(B, N, D).clone()
        out[..., :3] += r_xyz
        return out

    # -------------------------------------------------------------------------------- PointNet
    def _tnet(self, tnet: TNetPlan, x: torch.Tensor) -> torch.Tensor:
        """The T-Net's transform ``(B, k, k)`` (eval semantics, BN folded); no relevance."""
        B, N, C = x.shape
        mlp = [_fold(layer, x.dtype) for layer in tnet.mlp]
        f, _ = _run(mlp, [layer.relu for layer in tnet.mlp], x.reshape(B * N, C), None, (B, 1, N))
        head = [_fold(layer, x.dtype) for layer in tnet.head]
        h, _ = _run(head, [layer.relu for layer in tnet.head], f.reshape(B, -1), None)
        w, b = _plain(tnet.fc, x.dtype)
        delta = F.linear(h, w, b).view(B, tnet.k, tnet.k)
        return delta + torch.eye(tnet.k, dtype=x.dtype, device=x.device)

    def _pointnet(self, points: torch.Tensor, target: torch.Tensor | str) -> torch.Tensor:
        stn, inp, fstn, mlp2, head, fc = self._arch
        dtype, delta = points.dtype, self.stabilizer
        B, N, D = points.shape
        x = points
        trans = None
        if stn is not None:
            trans = self._tnet(stn, points)
            xyz_t = torch.bmm(points[..., :3], trans)
            x = torch.cat([xyz_t, points[..., 3:]], -1) if D > 3 else xyz_t
        w1, b1 = _fold(inp, dtype)
        h = F.linear(x.reshape(B * N, D), w1, b1)
        if inp.relu:
            h = h.relu_()
        ftrans = None
        h_in = h
        if fstn is not None:
            ftrans = self._tnet(fstn, h.view(B, N, -1))
            h = torch.bmm(h.view(B, N, -1), ftrans).reshape(B * N, -1)
        params = [_fold(layer, dtype) for layer in mlp2]
        tape: list[torch.Tensor] = []
        pooled, arg = _run(params, [layer.relu for layer in mlp2], h, tape, (B, 1, N))
        assert arg is not None  # pooled over the N points
        signed_pool = None if mlp2[-1].relu else slice(None)
        scratch = _Scratch()
        r = self._head(pooled.view(B, -1), head, fc, target, signed_pool, scratch)
        rows = _unpool(r.view(B, 1, -1), arg, N, out=tape.pop())
        signed_h = None if (fstn is None and inp.relu) else slice(None)
        r = _back(params, tape, rows, delta, signed_h, False, scratch)  # (B·N, 64)
        if ftrans is not None:
            r = _eps_bmm_back(h_in.view(B, N, -1), ftrans, r.view(B, N, -1), TRANSFORM_EPSILON).reshape(B * N, -1)
        s = _flat_back(r, D, delta).view(B, N, 1)
        out = s.expand(B, N, D).clone()
        if trans is not None:
            out[..., :3] = _eps_bmm_back(points[..., :3], trans, out[..., :3].contiguous(), TRANSFORM_EPSILON)
        return out


class PointsBackend(HandWrittenBackend):
    """Registry entry ``"points"`` (:mod:`reldrop.attribution.registry`): :class:`FastPointLRP` for
    the models :func:`supports` accepts; ``default_method`` is ``"zplus_flat"`` for them. Also
    answers an explicit ``backend="fast"`` (registered with ``aliases=("fast",)``) on such a model.

    Custom ``canonizers``/``first_layers`` are refused (the pass hard-codes the point canonizers
    and the Flat input layers).
    """

    name = "points"
    methods = METHODS
    title = "the fast point backend"

    def accepts(self, model: nn.Module, method: str) -> bool:
        return supports(model, method)

    def build(self, model: nn.Module, method: str, *, canonizers: Any = None, first_layers: Any = None,
              **kwargs: Any) -> FastPointLRP:
        return FastPointLRP(model, method, **kwargs)

    def default_method(self, model: nn.Module) -> str | None:
        return "zplus_flat" if supports(model, "zplus_flat") else None


register_backend("points", PointsBackend(), aliases=("fast",))  # ahead of the general fallback

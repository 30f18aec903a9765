"""Point-cloud preprocessing and train-time augmentation (PointNet++ style), in torch.

Every function works on one cloud ``(N, D)`` or a batch ``(B, N, D)``; the first three features
are the coordinates x, y, z, the optional next three the normals. Nothing here modifies its input.

* :func:`normalize_unit_sphere` - centre xyz at the mean, scale into the unit ball (normals untouched).
* :func:`farthest_point_sample` - iterative farthest point sampling, vectorized over the batch.
* :func:`subsample` - ``"fps"``, ``"uniform"`` (random subset) or ``"first"`` (the first ``npoints``).
* :class:`PointAugment` - random anisotropic scale, shift and clipped jitter of the coordinates.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .._checks import check_float_tensor

__all__ = ["normalize_unit_sphere", "farthest_point_sample", "subsample", "PointAugment", "SAMPLINGS"]

SAMPLINGS = ("fps", "uniform", "first")


def _as_batch(points: torch.Tensor, name: str = "points") -> tuple[torch.Tensor, bool]:
    check_float_tensor(name, points, (2, 3), "(N, D) or (B, N, D) with D >= 3")
    if points.shape[-1] < 3:
        raise ValueError(f"{name} must have at least 3 features (x, y, z) in its last dim, got shape "
                         f"{tuple(points.shape)}")
    if points.shape[-2] < 1:
        raise ValueError(f"{name} must hold at least one point, got shape {tuple(points.shape)}")
    return (points, False) if points.dim() == 3 else (points.unsqueeze(0), True)


def normalize_unit_sphere(points: torch.Tensor) -> torch.Tensor:
    """Centre the coordinates at their mean and divide by the largest point norm.

    ``points``: ``(N, D)`` or ``(B, N, D)``; returns the same shape. Features beyond xyz (normals)
    are returned unchanged. A cloud whose points all coincide is only centred (no division by 0).
    """
    p, single = _as_batch(points)
    xyz = p[..., :3]
    xyz = xyz - xyz.mean(dim=-2, keepdim=True)
    scale = xyz.norm(dim=-1).amax(dim=-1, keepdim=True).unsqueeze(-1)  # (B, 1, 1)
    xyz = xyz / torch.where(scale > 0, scale, torch.ones_like(scale))
    out = torch.cat([xyz, p[..., 3:]], dim=-1)
    return out.squeeze(0) if single else out


def farthest_point_sample(xyz: torch.Tensor, npoint: int, *, start: torch.Tensor | int = 0) -> torch.Tensor:
    """Indices of ``npoint`` points chosen by iterative farthest point sampling.

    ``xyz``: ``(B, N, >=3)`` (only the first 3 features are used); ``start``: the first index (an
    int for every cloud, or a LongTensor ``(B,)``). Returns a LongTensor ``(B, npoint)``. The loop
    runs over the ``npoint`` picks (inherently sequential) and is vectorized over the batch.
    Requires ``npoint <= N``.
    """
    p, _ = _as_batch(xyz, "xyz")
    if p.dim() != 3 or xyz.dim() != 3:
        raise ValueError(f"xyz must have shape (B, N, D), got {tuple(xyz.shape)}")
    b, n, _ = p.shape
    if isinstance(npoint, bool) or not isinstance(npoint, int) or not 1 <= npoint <= n:
        raise ValueError(f"npoint must be an int in [1, N={n}], got {npoint!r}")
    pts = p[..., :3]
    idx = torch.empty(b, npoint, dtype=torch.long, device=p.device)
    dist = torch.full((b, n), float("inf"), dtype=pts.dtype, device=p.device)
    if isinstance(start, torch.Tensor):
        far = start.to(device=p.device, dtype=torch.long).reshape(b)
    else:
        far = torch.full((b,), int(start), dtype=torch.long, device=p.device)
    rows = torch.arange(b, device=p.device)
    for i in range(npoint):
        idx[:, i] = far
        centroid = pts[rows, far].unsqueeze(1)  # (B, 1, 3)
        dist = torch.minimum(dist, ((pts - centroid) ** 2).sum(-1))
        far = dist.argmax(dim=-1)
    return idx


def subsample(points: torch.Tensor, npoints: int, method: str = "fps", *,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Reduce (or pad) a cloud to ``npoints`` points.

    ``points``: ``(N, D)`` or ``(B, N, D)``. ``method``: ``"fps"`` (farthest point sampling from
    index 0, deterministic), ``"uniform"`` (a uniformly random subset without replacement, drawn
    from ``generator``) or ``"first"`` (the first ``npoints`` points, as the reference loader does
    without FPS). A cloud with fewer than ``npoints`` points is padded by repeating randomly chosen
    points of its own (duplicates leave a max-pooling model's output unchanged).
    """
    p, single = _as_batch(points)
    if isinstance(npoints, bool) or not isinstance(npoints, int) or npoints < 1:
        raise ValueError(f"npoints must be a positive int, got {npoints!r}")
    if method not in SAMPLINGS:
        raise ValueError(f"method must be one of {SAMPLINGS}, got {method!r}")
    b, n, _ = p.shape
    if n < npoints:
        extra = torch.randint(0, n, (b, npoints - n), generator=generator, device="cpu").to(p.device)
        idx = torch.cat([torch.arange(n, device=p.device).expand(b, n), extra], dim=1)
    elif n == npoints:
        return points.clone()
    elif method == "fps":
        idx = farthest_point_sample(p, npoints)
    elif method == "uniform":
        keys = torch.rand(b, n, generator=generator, device="cpu").to(p.device)
        idx = keys.argsort(dim=1)[:, :npoints].sort(dim=1).values
    else:
        idx = torch.arange(npoints, device=p.device).expand(b, npoints)
    out = torch.gather(p, 1, idx.unsqueeze(-1).expand(-1, -1, p.shape[-1]))
    return out.squeeze(0) if single else out


@dataclass
class PointAugment:
    """Train-time augmentation of the coordinates (PointNet++ ``provider`` style).

    Per cloud: multiply xyz by a scale drawn from ``U(scale)`` (one factor per axis if
    ``anisotropic``, else one for all), add a shift drawn from ``U(-shift, shift)`` per axis, add
    Gaussian jitter ``N(0, jitter_sigma)`` clipped to ``±jitter_clip`` per coordinate. Normals
    (features 3:6) are left as they are (for an anisotropic scale they are re-normalized after
    multiplying by the inverse scale, which is the exact normal transform). Called as
    ``aug(points, generator=None)`` on ``(N, D)`` or ``(B, N, D)``; returns a new tensor.
    Defaults follow the reference code: scale (0.8, 1.25), shift 0.1, jitter 0.01 clipped at 0.05.
    """

    scale: tuple[float, float] = (0.8, 1.25)
    shift: float = 0.1
    jitter_sigma: float = 0.01
    jitter_clip: float = 0.05
    anisotropic: bool = False

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.scale)
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be a pair (low, high) with 0 < low <= high, got {self.scale!r}")
        for name in ("shift", "jitter_sigma", "jitter_clip"):
            if float(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")

    def __call__(self, points: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        p, single = _as_batch(points)
        b, n, _ = p.shape
        lo, hi = self.scale
        dev, dt = p.device, p.dtype

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=generator, dtype=dt).to(dev)

        s = lo + (hi - lo) * rand(b, 1, 3 if self.anisotropic else 1)
        s = s.expand(b, 1, 3)
        t = (2 * rand(b, 1, 3) - 1) * self.shift
        xyz = p[..., :3] * s + t
        if self.jitter_sigma > 0:
            noise = torch.randn(b, n, 3, generator=generator, dtype=dt).to(dev) * self.jitter_sigma
            xyz = xyz + noise.clamp(-self.jitter_clip, self.jitter_clip)
        rest = p[..., 3:]
        if self.anisotropic and rest.shape[-1] >= 3:
            nrm = rest[..., :3] / s
            nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            rest = torch.cat([nrm, rest[..., 3:]], dim=-1)
        out = torch.cat([xyz, rest], dim=-1)
        return out.squeeze(0) if single else out

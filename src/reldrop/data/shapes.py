"""An embedded generator of labelled 3D shapes: the zero-download default of the point-cloud pipeline.

Eleven classes, sampled on their surfaces (roughly area-uniform) with analytic normals:
sphere, cube, cylinder, cone, torus, pyramid, ellipsoid, capsule, two_spheres, disc, helix.
Each shape gets class-internal random proportions, then a random anisotropic scale
(``U(aniso)`` per object axis), a random rotation (``rotate``: ``"so3"``, ``"z"`` or ``"none"``),
Gaussian noise with a per-shape sigma from ``U(noise)``, and with probability ``occlusion`` a
partial occlusion: the points beyond a random plane (10-35 % of the shape) are removed and the cloud
is refilled to N by repeating kept points (as a partial scan would look). Finally every cloud is
centred and scaled to the unit sphere. Sphere vs. ellipsoid vs. capsule vs. two_spheres and
cylinder vs. capsule under anisotropic scale and occlusion overlap enough that a small model does not
reach 100 %. Everything is seeded: the same arguments give the same tensors.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from .modelnet import PointArrayDataset, PointPrep, make_augment, point_info
from .points_transforms import normalize_unit_sphere
from .registry import DatasetInfo, register_dataset
from .tensor_dataset import class_balanced_subset

__all__ = ["SHAPE_CLASSES", "generate_shapes", "build_shapes"]

Sampler = Callable[[int, int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def _u(g: torch.Generator, lo: float, hi: float, *shape: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


def _unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _choose(g: torch.Generator, weights: torch.Tensor, s: int, n: int) -> torch.Tensor:
    """Part index per point, ``(S, N)``, drawn with per-shape ``weights`` ``(S, K)``."""
    return torch.multinomial(weights, n, replacement=True, generator=g)


def _pick(mask_parts: Sequence[tuple[torch.Tensor, torch.Tensor]], part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p = torch.zeros(*part.shape, 3)
    nrm = torch.zeros(*part.shape, 3)
    for k, (pk, nk) in enumerate(mask_parts):
        m = (part == k).unsqueeze(-1)
        p = torch.where(m, pk, p)
        nrm = torch.where(m, nk, nrm)
    return p, nrm


def _sphere(s: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    d = _unit(torch.randn(s, n, 3, generator=g))
    return d, d


def _ellipsoid(s: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    d = _unit(torch.randn(s, n, 3, generator=g))
    axes = torch.stack([torch.ones(s), _u(g, 0.3, 0.55, s), _u(g, 0.15, 0.4, s)], -1).unsqueeze(1)
    return d * axes, _unit(d / axes)


def _cube(s: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    face = torch.randint(0, 6, (s, n), generator=g)
    axis, sign = face // 2, (face % 2).float() * 2 - 1
    p = _u(g, -1, 1, s, n, 3)
    onehot = torch.nn.functional.one_hot(axis, 3).bool()
    p = torch.where(onehot, sign.unsqueeze(-1).expand_as(p), p)
    return p, onehot.float() * sign.unsqueeze(-1)


def _disc_points(g: torch.Generator, s: int, n: int, r: torch.Tensor, z: torch.Tensor, up: float) -> tuple[torch.Tensor, torch.Tensor]:
    rho = r * torch.sqrt(torch.rand(s, n, generator=g))
    th = _u(g, 0, 2 * math.pi, s, n)
    p = torch.stack([rho * th.cos(), rho * th.sin(), z.expand(s, n)], -1)
    nrm = torch.zeros(s, n, 3)
    nrm[..., 2] = up
    return p, nrm


def _cylinder(s: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    r, h = _u(g, 0.35, 0.6, s, 1), _u(g, 0.8, 1.2, s, 1)  # radius, half height
    th, z = _u(g, 0, 2 * math.pi, s, n), _u(g, -1, 1, s, n) * h
    side = (torch.stack([r * th.cos(), r * th.sin(), z], -1), torch.stack([th.cos(), th.sin(), 0 * z], -1))
    top, bot = _disc_points(g, s, n, r, h, 1.0), _disc_points(g, s, n, r, -h, -1.0)
    w = torch.cat([4 * math.pi * r * h, math.pi * r ** 2, math.pi * r ** 2], 1)
    return _pick([side, top, bot], _choose(g, w, s, n))


def _cone(s: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    r, h = _u(g, 0.6, 0.9, s, 1), _u(g, 1.2, 1.8, s, 1)
    t = torch.sqrt(torch.rand(s, n, generator=g))  # distance fraction from the apex, area-uniform
    th = _u(g, 0, 2 * math.pi, s, n)
    lat = torch.stack([t * r * th.cos(), t * r * th.sin(), h / 2 - t * h], -1)
    lat_n = _unit(torch.stack([h * th.cos(), h * th.sin(), r.expand(s, n)], -1))
    base = _disc_points(g, s, n, r, -h / 2, -1.0)
    w = torch.cat([math.pi * r * torch.sqrt(r ** 2 + h ** 2), math.pi * r ** 2], 1)
    return _pick([(lat, lat_n), base], _choose(g, w, s, n))


def _torus(s: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    big, small = _u(g, 0.6, 0.8, s, 1), _u(g, 0.15, 0.35, s, 1)
    u, v = _u(g, 0, 2 * math.pi, s, n), _u(g, 0, 2 * math.pi, s, n)
    nrm = torch.stack([v.cos() * u.cos(), v.cos() * u.sin(), v.sin()], -1)
    centre = torch.stack([big * u.cos(), big * u.sin(), 0 * u], -1)
    return centre + small.unsqueeze(-1) * nrm, nrm


def _triangles(g: torch.Generator, s: int, n: int, tris: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-uniform points on triangles ``tris`` ``(S, K, 3, 3)``."""
    a, b, c = tris[:, :, 0], tris[:, :, 1], tris[:, :, 2]
    cross = torch.linalg.cross(b - a, c - a)
    area = cross.norm(dim=-1) / 2
    k = _choose(g, area, s, n)
    idx = k.unsqueeze(-1).expand(s, n, 3)
    a, b, c, nrm = (torch.gather(t, 1, idx) for t in (a, b, c, _unit(cross)))
    u1, u2 = torch.rand(s, n, 1, generator=g), torch.rand(s, n, 1, generator=g)
    flip = (u1 + u2) > 1
    u1, u2 = torch.where(flip, 1 - u1, u1), torch.where(flip, 1 - u2, u2)
    return a + u1 * (b - a) + u2 * (c - a), nrm


def _pyramid(s: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    h = _u(g, 1.2, 1.8, s)
    z0 = -h / 3
    corners = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    base = torch.cat([corners.expand(s, 4, 2), z0.view(s, 1, 1).expand(s, 4, 1)], -1)  # (S, 4, 3)
    apex = torch.stack([torch.zeros(s), torch.zeros(s), z0 + h], -1)
    tris = [torch.stack([base[:, i], base[:, (i + 1) % 4], apex], 1) for i in range(4)]  # outward (ccw)
    tris += [torch.stack([base[:, 0], base[:, 2], base[:, 1]], 1), torch.stack([base[:, 0], base[:, 3], base[:, 2]], 1)]
    return _triangles(g, s, n, torch.stack(tris, 1))


def _capsule(s: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    r, half = _u(g, 0.3, 0.45, s, 1), _u(g, 0.5, 0.8, s, 1)
    th, z = _u(g, 0, 2 * math.pi, s, n), _u(g, -1, 1, s, n) * half
    side = (torch.stack([r * th.cos(), r * th.sin(), z], -1), torch.stack([th.cos(), th.sin(), 0 * z], -1))
    d = _unit(torch.randn(s, n, 3, generator=g))
    shift = torch.zeros(s, n, 3)
    shift[..., 2] = torch.where(d[..., 2] >= 0, half, -half)
    caps = (d * r.unsqueeze(-1) + shift, d)
    w = torch.cat([4 * math.pi * r * half, 4 * math.pi * r ** 2], 1)
    return _pick([side, caps], _choose(g, w, s, n))


def _two_spheres(s: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    r1, r2 = _u(g, 0.35, 0.6, s, 1), _u(g, 0.35, 0.6, s, 1)
    gap = _u(g, 1.0, 1.3, s, 1) * (r1 + r2)
    d = _unit(torch.randn(s, n, 3, generator=g))
    part = _choose(g, torch.cat([r1 ** 2, r2 ** 2], 1), s, n).unsqueeze(-1)
    r = torch.where(part == 0, r1.unsqueeze(-1), r2.unsqueeze(-1))
    cx = torch.where(part == 0, -gap.unsqueeze(-1) / 2, gap.unsqueeze(-1) / 2)
    p = d * r
    p = torch.cat([p[..., :1] + cx, p[..., 1:]], -1)
    return p, d


def _disc(s: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    p, nrm = _disc_points(g, s, n, torch.ones(s, 1), torch.zeros(s, 1), 1.0)
    side = torch.where(torch.rand(s, n, 1, generator=g) < 0.5, -1.0, 1.0)
    return p, nrm * side


def _helix(s: int, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    big, turns = _u(g, 0.5, 0.8, s, 1), _u(g, 1.5, 3.0, s, 1)
    pitch, a = _u(g, 0.25, 0.45, s, 1), _u(g, 0.08, 0.15, s, 1)
    t = torch.rand(s, n, generator=g) * 2 * math.pi * turns
    phi = _u(g, 0, 2 * math.pi, s, n)
    k = pitch / (2 * math.pi)
    c = torch.stack([big * t.cos(), big * t.sin(), k * t - k * math.pi * turns], -1)
    tangent = _unit(torch.stack([-big * t.sin(), big * t.cos(), k.expand(s, n)], -1))
    normal = torch.stack([-t.cos(), -t.sin(), 0 * t], -1)
    binormal = torch.linalg.cross(tangent, normal)
    nrm = phi.cos().unsqueeze(-1) * normal + phi.sin().unsqueeze(-1) * binormal
    return c + a.unsqueeze(-1) * nrm, nrm


_SAMPLERS: dict[str, Sampler] = {
    "sphere": _sphere, "cube": _cube, "cylinder": _cylinder, "cone": _cone, "torus": _torus,
    "pyramid": _pyramid, "ellipsoid": _ellipsoid, "capsule": _capsule, "two_spheres": _two_spheres,
    "disc": _disc, "helix": _helix,
}
SHAPE_CLASSES: tuple[str, ...] = tuple(_SAMPLERS)


def _rotations(g: torch.Generator, s: int, mode: str) -> torch.Tensor:
    if mode == "none":
        return torch.eye(3).expand(s, 3, 3)
    if mode == "z":
        a = _u(g, 0, 2 * math.pi, s)
        c, si, z, o = a.cos(), a.sin(), torch.zeros(s), torch.ones(s)
        return torch.stack([torch.stack([c, -si, z], -1), torch.stack([si, c, z], -1), torch.stack([z, z, o], -1)], 1)
    q, r = torch.linalg.qr(torch.randn(s, 3, 3, generator=g))  # Haar-uniform after the sign fix
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    det = torch.linalg.det(q)
    q[:, :, 0] = q[:, :, 0] * det.sign().unsqueeze(-1)
    return q


def _occlude(g: torch.Generator, p: torch.Tensor, nrm: torch.Tensor, prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    s, n, _ = p.shape
    d = _unit(torch.randn(s, 1, 3, generator=g))
    proj = (p * d).sum(-1)  # (S, N)
    frac = _u(g, 0.10, 0.35, s)
    active = torch.rand(s, generator=g) < prob
    kth = (n - (frac * n).long()).clamp(1, n)
    thr = proj.sort(dim=1).values.gather(1, (kth - 1).unsqueeze(1))
    keep = (proj <= thr) | ~active.unsqueeze(1)
    keys = torch.rand(s, n, generator=g) + (~keep).float() * 2  # kept points first, in random order
    order = keys.argsort(dim=1)
    count = keep.sum(1, keepdim=True)
    idx = order.gather(1, torch.arange(n).unsqueeze(0) % count)
    take = idx.unsqueeze(-1).expand(s, n, 3)
    return p.gather(1, take), nrm.gather(1, take)


def generate_shapes(num_per_class: int, npoints: int = 1024, *, seed: int = 0,
                    classes: Sequence[str] | None = None, rotate: str = "so3",
                    aniso: tuple[float, float] = (0.75, 1.33), noise: tuple[float, float] = (0.005, 0.03),
                    occlusion: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Generate ``num_per_class`` clouds of each class.

    Returns ``points`` ``(M, npoints, 6)`` (xyz in the unit sphere + unit normals), ``labels`` ``(M,)``
    and the class names (label order). Deterministic in ``seed``.
    """
    names = list(SHAPE_CLASSES if classes is None else classes)
    unknown = [c for c in names if c not in _SAMPLERS]
    if unknown or not names:
        raise ValueError(f"classes must be a non-empty subset of {SHAPE_CLASSES}, got {classes!r}")
    for nm, v in (("num_per_class", num_per_class), ("npoints", npoints)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{nm} must be a positive int, got {v!r}")
    if rotate not in ("so3", "z", "none"):
        raise ValueError(f"rotate must be 'so3', 'z' or 'none', got {rotate!r}")
    if not 0.0 <= occlusion <= 1.0:
        raise ValueError(f"occlusion must be a probability in [0, 1], got {occlusion!r}")
    pts, labels = [], []
    for label, name in enumerate(names):
        g = torch.Generator().manual_seed(int(seed) * 7919 + SHAPE_CLASSES.index(name) * 104729 + 1)
        p, nrm = _SAMPLERS[name](num_per_class, npoints, g)
        scale = _u(g, aniso[0], aniso[1], num_per_class, 1, 3)
        rot = _rotations(g, num_per_class, rotate)
        p = (p * scale) @ rot.transpose(1, 2)
        nrm = _unit((nrm / scale) @ rot.transpose(1, 2))
        p = p + torch.randn(p.shape, generator=g) * _u(g, noise[0], noise[1], num_per_class, 1, 1)
        if occlusion > 0:
            p, nrm = _occlude(g, p, nrm, occlusion)
        pts.append(torch.cat([p, nrm], -1))
        labels.append(torch.full((num_per_class,), label, dtype=torch.long))
    return normalize_unit_sphere(torch.cat(pts)), torch.cat(labels), names


@register_dataset("shapes")
def build_shapes(root: Path, split: str, *, train_transform: bool, num_per_class: int | None = None,
                 npoints: int = 1024, use_normals: bool = False, seed: int = 0,
                 classes: Sequence[str] | None = None, rotate: str = "so3",
                 occlusion: float = 0.5, augment: Any = None, subset: int | None = None,
                 **unused: Any) -> DatasetInfo:
    """The generated shapes (``root`` is ignored): ``num_per_class`` defaults to 200 (train) / 50 (test).

    The test split uses a different seed stream from the train split, so no cloud appears in both.
    """
    unused.pop("cache", None)
    unused.pop("sampling", None)
    unused.pop("normalize", None)
    if unused:
        raise TypeError(f"shapes: unknown keyword argument(s) {sorted(unused)}")
    if num_per_class is None:
        num_per_class = 200 if split == "train" else 50
    points, labels, names = generate_shapes(num_per_class, npoints, seed=2 * int(seed) + (split == "test"),
                                            classes=classes, rotate=rotate, occlusion=occlusion)
    if subset is not None and split == "train":
        keep = class_balanced_subset(labels, int(subset), seed)
        points, labels = points[keep], labels[keep]
    prep = PointPrep(npoints, "first", use_normals, True, seed)
    ds = PointArrayDataset(points[..., : prep.dim], labels, make_augment(augment, train_transform))
    return point_info(ds, labels, names, prep, split=split, generator="shapes")

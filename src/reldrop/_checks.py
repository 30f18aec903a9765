"""Small argument checks shared by the public functions.

Every check raises ``TypeError`` (wrong kind of object/dtype) or ``ValueError`` (wrong
shape or value) with a message that names the argument and the expected form.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Any, Sequence

import torch

__all__ = [
    "check_int",
    "check_tensor",
    "check_float_tensor",
    "check_finite",
    "check_probability",
    "check_nonnegative",
    "check_range_pair",
    "check_batch_match",
    "check_class_target",
    "check_point_cloud",
    "parse_fill_value",
]


def check_tensor(name: str, x: object, ndims: Sequence[int], form: str) -> torch.Tensor:
    """``x`` must be a tensor whose rank is one of ``ndims``; ``form`` describes it, e.g. '(B, C, H, W)'."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {form}, got {type(x).__name__}")
    if x.dim() not in tuple(ndims):
        raise ValueError(f"{name} must have shape {form}, got a {x.dim()}-d tensor of shape {tuple(x.shape)}")
    return x


def check_float_tensor(name: str, x: object, ndims: Sequence[int], form: str) -> torch.Tensor:
    """Like :func:`check_tensor`, and the dtype must be floating point."""
    check_tensor(name, x, ndims, form)
    assert isinstance(x, torch.Tensor)
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor of shape {form}, got dtype {x.dtype}")
    return x


def check_finite(name: str, x: torch.Tensor) -> torch.Tensor:
    """Raise if ``x`` holds NaN or inf (one host sync; call once per public call, never in a loop)."""
    if x.numel() == 0:
        return x
    lo, hi = torch.aminmax(x.detach())  # NaN and +-inf propagate to min/max: one read, one sync
    if not bool(torch.isfinite(torch.stack([lo, hi])).all()):
        raise ValueError(f"{name} contains NaN or inf values; expected finite numbers")
    return x


def check_probability(name: str, v: object) -> float:
    """``v`` must be a real number in [0, 1]."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a float in [0, 1], got {type(v).__name__}")
    v = float(v)
    if not (0.0 <= v <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {v}")
    return v


def check_nonnegative(name: str, v: object, *, positive: bool = False) -> float:
    """``v`` must be a finite real number >= 0 (> 0 with ``positive``); ``ValueError`` otherwise
    (also for a non-number: a rule's ε or δ)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0 or v == float("inf") \
            or (positive and v == 0):
        raise ValueError(f"{name} must be a finite float {'>' if positive else '>='} 0, got {v!r}")
    return float(v)


def check_range_pair(name: str, v: object, *, positive: bool = True) -> tuple[float, float]:
    """``v`` must be a pair ``(low, high)`` of finite numbers with ``low <= high`` (and ``low > 0`` if positive)."""
    try:
        low, high = (float(t) for t in v)  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (low, high) of numbers, got {v!r}") from None
    if not (torch.isfinite(torch.tensor([low, high])).all()):
        raise ValueError(f"{name} must hold finite numbers, got {v!r}")
    if low > high:
        raise ValueError(f"{name} must satisfy low <= high, got {v!r}")
    if positive and low <= 0:
        raise ValueError(f"{name} must hold positive numbers, got {v!r}")
    return low, high


def check_batch_match(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> None:
    """The leading (batch) dimensions of ``a`` and ``b`` must agree."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{name_b} must have the same batch size as {name_a}: got {b.shape[0]} and {a.shape[0]}"
        )


def check_class_target(target: object, batch: int, num_classes: int | None) -> None:
    """``target`` must be ``"predicted"`` or a ``(batch,)`` integer tensor of indices in
    ``[0, num_classes)`` (range not checked when ``num_classes`` is None; one host sync)."""
    if isinstance(target, str):
        if target != "predicted":
            raise ValueError(f"target must be a (B,) integer tensor or 'predicted', got {target!r}")
        return
    if not isinstance(target, torch.Tensor):
        raise TypeError(f"target must be a (B,) integer tensor or 'predicted', got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.shape != (batch,):
        raise ValueError(f"target must have shape (B,) = ({batch},), got {tuple(target.shape)}")
    if num_classes is not None and bool(((target < 0) | (target >= num_classes)).any()):
        raise ValueError(f"target holds class indices outside [0, {num_classes})")


def check_image_batch(x: object) -> torch.Tensor:
    """``x`` as a non-empty floating-point ``(B, C, H, W)`` tensor, else TypeError/ValueError."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (B, C, H, W), got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (B, C, H, W), got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (B, C, H, W) with B >= 1, got {tuple(x.shape)}")
    return x


def check_point_cloud(name: str, points: object, in_channels: int) -> torch.Tensor:
    """``points`` must be a floating-point ``(B, N, in_channels)`` tensor (a model's input clouds)."""
    check_float_tensor(name, points, (3,), "(B, N, D)")
    assert isinstance(points, torch.Tensor)
    if points.shape[-1] != in_channels:
        raise ValueError(f"{name} must have shape (B, N, {in_channels}) for in_channels={in_channels}, "
                         f"got {tuple(points.shape)}")
    return points


def parse_fill_value(name: str, value: object, n: int, form: str) -> tuple[str, Any]:
    """A fill value: ``("scalar", float)`` or ``("sequence", [n floats])``, all finite.

    Accepts a real number, a 0-/1-d tensor or a sequence of ``n`` numbers; ``form`` describes
    what is accepted in the error messages. Strings and bools are refused (``TypeError``).
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be {form}, got bool")
    if isinstance(value, torch.Tensor):
        if value.dim() > 1:
            raise ValueError(f"{name} must be {form}, got a tensor of shape {tuple(value.shape)}")
        value = value.item() if value.dim() == 0 else value.tolist()
    if isinstance(value, Real):
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {v}")
        return "scalar", v
    if isinstance(value, str):
        raise TypeError(f"{name} must be {form}, got {value!r}")
    try:
        vals = [float(t) for t in value]  # type: ignore[attr-defined]
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be {form}, got {type(value).__name__}") from None
    if len(vals) != n:
        raise ValueError(f"{name} must be {form}, got a sequence of length {len(vals)}")
    if not all(math.isfinite(t) for t in vals):
        raise ValueError(f"{name} must hold finite numbers, got {vals}")
    return "sequence", vals


def check_device(spec: object, *, flag: str = "--device") -> torch.device:
    """``torch.device`` for ``cpu`` / ``cuda`` / ``cuda:N`` / ``mps`` (and anything else torch parses);
    ValueError naming ``flag`` for a string torch does not know (``gpu``) or a CUDA device without CUDA."""
    if isinstance(spec, torch.device):
        dev = spec
    else:
        if not isinstance(spec, str):
            raise ValueError(f"{flag} must be a device string such as cpu, cuda or cuda:0, got {spec!r}")
        try:
            dev = torch.device(spec)
        except (RuntimeError, ValueError):
            raise ValueError(f"{flag} {spec!r} is not a device; use cpu, cuda or cuda:N (or auto where allowed)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{flag} {spec!s} requested but CUDA is not available; use {flag} cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{flag} {spec!s}: only {torch.cuda.device_count()} CUDA device(s) present")
    return dev


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` when it is an int (not a bool) >= ``minimum``; TypeError / ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return value

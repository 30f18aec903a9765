"""Random numbers for the masks: drawn on the generator's device, returned on the data's device
(a :class:`torch.Generator` lives on one device), and small cached device constants for fills."""
from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["Device", "draw_device", "out_device", "draw_uniform", "draw_normal", "draw_integers", "cached_constant"]

Device = torch.device | str | None


def draw_device(generator: torch.Generator | None, device: Device) -> torch.device:
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


def out_device(generator: torch.Generator | None, device: Device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return generator.device if generator is not None else torch.device("cpu")


def draw_uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: Device) -> Tensor:
    """U[0, 1) float32 of ``shape`` drawn on the generator's device, returned on ``device``."""
    out = torch.rand(shape, generator=generator, device=draw_device(generator, device))
    return out.to(out_device(generator, device))


def draw_normal(shape: tuple[int, ...], generator: torch.Generator | None, device: Device) -> Tensor:
    """N(0, 1) float32 of ``shape`` drawn on the generator's device, returned on ``device``."""
    out = torch.randn(shape, generator=generator, device=draw_device(generator, device))
    return out.to(out_device(generator, device))


def draw_integers(high: int, shape: tuple[int, ...], generator: torch.Generator | None, device: Device) -> Tensor:
    out = torch.randint(0, high, shape, generator=generator, device=draw_device(generator, device))
    return out.to(out_device(generator, device))


@functools.lru_cache(maxsize=64)
def cached_constant(values: tuple[float, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """A small constant tensor on ``device``, cached so a CUDA fill value is copied to the GPU once."""
    return torch.tensor(values, dtype=dtype, device=device)

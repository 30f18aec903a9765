"""Tolerances that scale with the values compared (``from tolerance import assert_close_scaled``).

Reduction order differs between machines and BLAS builds, so an absolute ``atol`` set by hand
(1e-9 on gradients of magnitude 1e1, say) passes on one machine and fails on the next. Here the
absolute tolerance is ``rel`` times the largest magnitude of the expected tensor, so the check means
"equal to ``rel`` of the tensor's scale" wherever it runs.
"""
from __future__ import annotations

import torch


def scaled_atol(expected: torch.Tensor, rel: float, floor: float = 0.0) -> float:
    """``rel * max|expected|`` (at least ``floor``); 0-size tensors give ``floor``."""
    if expected.numel() == 0:
        return floor
    return max(rel * float(expected.detach().abs().max()), floor)


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, rel: float,
                        floor: float = 0.0, msg: str | None = None) -> None:
    """``assert_close`` with ``atol = rel * max|expected|`` and ``rtol = rel``."""
    torch.testing.assert_close(actual, expected, atol=scaled_atol(expected, rel, floor), rtol=rel,
                               msg=msg)

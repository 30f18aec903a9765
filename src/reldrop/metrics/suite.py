"""Compatibility module: the evaluation suite behind ``reldrop evaluate`` lives in
:mod:`reldrop.commands.evaluation` (orchestration is not a metric) and :func:`load_run` in
:mod:`reldrop.train.load`. The names this module had are served from there on first use.
"""
from __future__ import annotations

from typing import Any

__all__ = ["METRICS", "DEFAULT_METRICS", "LoadedRun", "load_run", "evaluate_run"]  # noqa: F822 (served by __getattr__)


def __getattr__(name: str) -> Any:  # PEP 562: metrics must not import commands at import time
    from ..commands import evaluation

    if hasattr(evaluation, name):
        return getattr(evaluation, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

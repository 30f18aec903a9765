"""Compatibility module: building the ``reldrop report`` tables and figures from run directories is
orchestration, not a metric; it lives in :mod:`reldrop.commands.reporting`. The names this module
had are served from there on first use.
"""
from __future__ import annotations

from typing import Any

__all__ = ["collect", "markdown_table", "write_figures", "statistics_rows", "statistics_table",  # noqa: F822
           "write_statistics_csv", "COLUMNS", "STAT_COLUMNS"]


def __getattr__(name: str) -> Any:  # PEP 562: metrics must not import commands at import time
    from ..commands import reporting

    if name in __all__:
        return getattr(reporting, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

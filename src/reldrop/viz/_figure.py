"""The two things every figure module needs: a headless pyplot and a save that makes the folder."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (imported lazily: ``import reldrop`` stays light)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, *, dpi: int = 110, tight: bool = True) -> Path:
    """``tight_layout`` (if ``tight``), create the parent folder, write the PNG, close ``fig``; returns the path."""
    path = Path(path)
    if tight:
        fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path

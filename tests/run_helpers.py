"""Tiny digits configs and CLI arguments for the run-folder / fault tests outside tests/train
(a uniquely named module: ``from run_helpers import tiny_cfg, CLI``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from reldrop.train.config import load_config

#: ``reldrop train`` arguments of a tiny digits run (append ``--out DIR``)
CLI = ["train", "--epochs", "1", "--set", "data.subset=60", "data.test_subset=30", "model.kwargs={width: 4}",
       "train.batch_size=30", "train.threads=1", "--quiet"]


def tiny_cfg(out: Path, *overrides: str, epochs: int = 1) -> dict[str, Any]:
    """digits, 60 train / 30 test images, small_cnn width 4, batch 30, ``out`` as the run directory."""
    return load_config("digits", ["data.subset=60", "data.test_subset=30", "model.kwargs={width: 4}",
                                  "train.batch_size=30", "train.progress=false", "train.threads=1",
                                  f"train.epochs={epochs}", f"out={out}", *overrides])


def one_line_error(err: str) -> bool:
    """stderr of a CLI call holds a single error line (no traceback)."""
    lines = [ln for ln in err.splitlines() if "error" in ln or "Traceback" in ln]
    return "Traceback" not in err and len(lines) == 1

"""Load a trained run directory back: the model of its best (or last) checkpoint, its config and test data.

Run directory (written by :func:`reldrop.train.train`)::

    config.yaml            the resolved config (also stored inside the checkpoints)
    best.pt / last.pt      {"model": state_dict, "config": cfg, "epoch": ..., ...}
"""
from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..models.checkpoint import strip_wrapper_prefixes
from ..runs import CheckpointError, load_checkpoint
from ..runs.files import UnsafeCheckpointError
from .factory import build_model

__all__ = ["LoadedRun", "load_run"]


@dataclass
class LoadedRun:
    """A trained model restored from a run directory, with its config and test data."""

    run_dir: Path
    name: str
    model: nn.Module
    config: dict[str, Any]
    test: Any  # reldrop.data.DatasetInfo of the test split (eval transform)
    checkpoint: Path
    epoch: int | None
    data_root: Path | None = None  # the dataset root the test data was loaded from (--data-root, config, env)


def _best_of_killed_run(path: Path, ckpt: Any) -> tuple[Path, Any]:
    """``(path, ckpt)``, or ``last.pt`` when a run was killed between writing ``last.pt`` and ``best.pt``
    of a new best epoch: last.pt then records ``best_epoch == epoch`` and holds the best model, while
    best.pt still holds an older epoch (``reldrop train --resume`` repairs best.pt)."""
    last_path = path.with_name("last.pt")
    if path.name != "best.pt" or not last_path.is_file() or not isinstance(ckpt, dict):
        return path, ckpt
    last = load_checkpoint(last_path)
    if int(last.get("best_epoch", -1)) == int(last.get("epoch", -2)) != int(ckpt.get("epoch", -3)):
        warnings.warn(f"{path} holds epoch {ckpt.get('epoch')} but {last_path} records epoch {last['epoch']} as "
                      f"the best (run killed between the two writes): using {last_path}", stacklevel=3)
        return last_path, last
    return path, ckpt


def _load_or_fall_back(path: Path, *, explicit: bool) -> tuple[Path, Any]:
    """Load ``path``; an unreadable ``best.pt`` (0 bytes, truncated) of a run directory falls back to
    ``last.pt`` with a warning (``explicit``: the user named the file, no fallback)."""
    try:
        return path, load_checkpoint(path)
    except CheckpointError as err:
        last = path.with_name("last.pt")
        if explicit or isinstance(err, UnsafeCheckpointError) or path.name != "best.pt" or not last.is_file():
            raise  # a crafted (pickled-code) best.pt is refused outright, never quietly replaced
        warnings.warn(f"{err}; using {last} instead (reldrop train --resume repairs best.pt where it can)",
                      stacklevel=3)
        return last, load_checkpoint(last)


def load_run(run_dir: str | Path, *, checkpoint: str = "best", device: str | torch.device = "cpu",
             data_root: str | Path | None = None) -> LoadedRun:
    """Restore the model of a run directory (``best.pt``, falling back to ``last.pt``).

    Args:
        run_dir: the run directory, or a ``.pt`` checkpoint inside one.
        checkpoint: "best" or "last" (the other is used when the first is missing).
        device: where the model goes (eval mode).
        data_root: overrides the config's ``data.root`` (else ``$RELDROP_DATA_DIR``/``./data``).
    """
    from ..data import build_dataset
    from ..data import data_root as resolve_root

    path = Path(run_dir)
    if path.suffix == ".pt":
        ckpt_path, run = path, path.parent
    else:
        run = path
        if not run.is_dir():
            raise FileNotFoundError(f"run directory not found: {run}")
        if checkpoint not in ("best", "last"):
            raise ValueError(f"checkpoint must be 'best' or 'last', got {checkpoint!r}")
        other = "last" if checkpoint == "best" else "best"
        ckpt_path = next((run / f"{c}.pt" for c in (checkpoint, other) if (run / f"{c}.pt").is_file()),
                         run / f"{checkpoint}.pt")
        if not ckpt_path.is_file():
            raise FileNotFoundError(f"no best.pt or last.pt in {run} (not a finished run directory?)")
    ckpt_path, ckpt = _load_or_fall_back(ckpt_path, explicit=path.suffix == ".pt")
    ckpt_path, ckpt = _best_of_killed_run(ckpt_path, ckpt)
    cfg = ckpt.get("config") if isinstance(ckpt, dict) else None
    if cfg is None:
        import yaml

        cfg_path = run / "config.yaml"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{ckpt_path} holds no config and {cfg_path} is missing")
        cfg = yaml.safe_load(cfg_path.read_text())
    cfg = copy.deepcopy(dict(cfg))
    data_cfg = cfg.get("data", {})
    root = resolve_root(data_root or data_cfg.get("root"))
    kwargs = dict(data_cfg.get("kwargs") or {})
    test = build_dataset(data_cfg["name"], root, "test", train_transform=False, **kwargs)
    cfg.setdefault("model", {})["init"] = None  # weights come from the checkpoint, not the init file
    model = build_model(cfg, test)
    state = ckpt["model"] if isinstance(ckpt, dict) and "model" in ckpt else ckpt
    model.load_state_dict(strip_wrapper_prefixes(state))
    model.to(device).eval()
    name = run.name if run.name not in ("", ".") else str(run)
    if name.startswith("seed") and run.parent.name:
        name = f"{run.parent.name}/{run.name}"
    return LoadedRun(run, name, model, cfg, test, ckpt_path, ckpt.get("epoch") if isinstance(ckpt, dict) else None,
                     data_root=Path(root))


"""Where datasets live: ``--data-root``, else ``$RELDROP_DATA_DIR``, else ``./data``."""
from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "RELDROP_DATA_DIR"


def data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``explicit`` if given, else ``$RELDROP_DATA_DIR``, else ``./data``."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path("data")


def cache_dir() -> Path:
    """Where derived files (preprocessed point clouds, ...) are cached: never inside the data folder.

    ``$RELDROP_CACHE_DIR``, else ``$XDG_CACHE_HOME/reldrop``, else ``~/.cache/reldrop``.
    """
    env = os.environ.get("RELDROP_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reldrop"

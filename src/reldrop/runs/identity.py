"""The identity of a run's config: a hash that ignores where things are and how they are shown,
the keys two configs differ in, and the config a run directory was trained with."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from .files import PathLike, load_checkpoint

__all__ = ["CONFIG_HASH_IGNORED", "config_hash", "config_diff", "RunConfigMismatchError", "saved_config"]


#: keys (and sections) that say where things are, how they are shown or what else a comparison
#: holds - not what this run trains
CONFIG_HASH_IGNORED = ("out", "data.root", "train.progress", "compare")


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in CONFIG_HASH_IGNORED)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out if out or not prefix else {prefix: {}}
    return {prefix: obj}


def _canonical(cfg: Mapping[str, Any]) -> dict[str, Any]:
    flat = _flatten(json.loads(json.dumps(cfg, default=str)))
    return {k: v for k, v in flat.items() if not _ignored(k)}


def config_hash(cfg: Mapping[str, Any]) -> str:
    """sha256 (16 hex digits) of the resolved config without the :data:`CONFIG_HASH_IGNORED` keys
    (recorded as ``config_hash`` in a run's ``env.json``)."""
    blob = json.dumps(_canonical(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` for keys that differ (missing keys show as ``None``)."""
    a, b = _canonical(old), _canonical(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


class RunConfigMismatchError(ValueError):
    """An existing run directory was trained with another config than the one asked for now."""


def saved_config(run_dir: PathLike) -> dict[str, Any] | None:
    """The config a run directory was trained with (``config.yaml``, else ``last.pt``'s), or None."""
    import yaml

    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if path.is_file():
        try:
            cfg = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"{path} is not valid YAML ({err})") from err
        if isinstance(cfg, dict):
            return cfg
    if (run_dir / "last.pt").is_file():
        cfg = load_checkpoint(run_dir / "last.pt").get("config")
        return dict(cfg) if isinstance(cfg, Mapping) else None
    return None

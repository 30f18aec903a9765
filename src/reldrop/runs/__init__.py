"""Everything of a run on disk (the one home of reldrop's run-state writes):

* :mod:`.files` - atomic writes (temp file + ``os.replace``), checkpoints saved atomically and
  loaded with ``torch.load(weights_only=True)``, stale temp files of killed processes, RNG states;
* :mod:`.identity` - the config hash recorded in ``env.json``, config diffs, a run's saved config;
* :mod:`.directory` - the run directory: its name, ``env.json``, seeding, the best/last repair,
  the metrics log.

Every name is re-exported here (``reldrop.runs.save_checkpoint`` etc.).
"""
from __future__ import annotations

from .directory import MetricsLogger, environment, read_env, repair_best, resolve_run_dir, seed_all
from .files import (
    CheckpointError,
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    clean_stale_temps,
    load_checkpoint,
    read_json,
    rng_state,
    save_checkpoint,
    set_rng_state,
    temp_path,
)
from .identity import CONFIG_HASH_IGNORED, RunConfigMismatchError, config_diff, config_hash, saved_config

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_open", "save_checkpoint",
           "load_checkpoint", "read_json", "clean_stale_temps", "temp_path", "config_hash", "config_diff",
           "rng_state", "set_rng_state", "CheckpointError", "RunConfigMismatchError",
           "saved_config", "CONFIG_HASH_IGNORED", "resolve_run_dir", "environment", "seed_all", "repair_best",
           "read_env", "MetricsLogger"]

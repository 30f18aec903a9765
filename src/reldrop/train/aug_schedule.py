"""When the augmentation is on, and with which ``p``, as a function of the epoch only.

Config keys (section ``aug``)::

    start_epoch: 0          # off for epochs < start_epoch
    stop_epoch: null        # off from this epoch on (timm's --mixup-off-epoch); null = never
    p_schedule: null        # or {start: 0.0, end: 0.5, epochs: 10}: p ramps linearly from `start`
                            # to `end` over `epochs` epochs counted from start_epoch, then stays at `end`

Epochs are 0-based here (the metrics rows number them from 1). Because the state is a pure function
of ``(aug config, epoch)``, a run resumed from a checkpoint at any epoch gets exactly the state an
uninterrupted run has at that epoch.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple

__all__ = ["AugState", "aug_state", "validate_aug_schedule"]


class AugState(NamedTuple):
    enabled: bool  #: the augmentation is applied in this epoch
    p: float | None  #: the scheduled probability (None: no ``p_schedule``, keep the augmentation's own p)


def aug_state(aug_cfg: Mapping[str, Any], epoch: int) -> AugState:
    """The augmentation's state in 0-based ``epoch`` for the ``aug`` config section."""
    start = int(aug_cfg.get("start_epoch") or 0)
    stop = aug_cfg.get("stop_epoch")
    enabled = epoch >= start and (stop is None or epoch < int(stop))
    sched = aug_cfg.get("p_schedule")
    if not sched:
        return AugState(enabled, None)
    p0, p1, n = float(sched["start"]), float(sched["end"]), int(sched["epochs"])
    t = 1.0 if n <= 0 else min(max(epoch - start, 0) / n, 1.0)
    return AugState(enabled, p0 + (p1 - p0) * t)


def validate_aug_schedule(aug_cfg: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the key for a malformed ``count`` / ``max_count`` / ``stop_epoch`` /
    ``p_schedule`` (a missing key, as in configs saved before these keys existed, means its default)."""
    count, max_count = aug_cfg.get("count", 1), aug_cfg.get("max_count")
    for key, v in (("count", count), ("max_count", max_count)):
        if v is None and key == "max_count":
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"config aug.{key} must be a positive int{' or null' if key == 'max_count' else ''}, "
                             f"got {v!r}")
    if max_count is not None and max_count < count:
        raise ValueError(f"config aug.max_count must be null or >= aug.count ({count}), got {max_count!r}")
    stop = aug_cfg.get("stop_epoch")
    if stop is not None:
        if isinstance(stop, bool) or not isinstance(stop, int) or stop < 0:
            raise ValueError(f"config aug.stop_epoch must be null or a non-negative int, got {stop!r}")
        if stop <= int(aug_cfg.get("start_epoch") or 0):
            raise ValueError(f"config aug.stop_epoch ({stop}) must be greater than aug.start_epoch "
                             f"({aug_cfg.get('start_epoch')}), or the augmentation never runs")
    sched = aug_cfg.get("p_schedule")
    if sched is None:
        return
    form = "null or a mapping {start: p0, end: p1, epochs: n} with p0, p1 in [0, 1] and n >= 0"
    if not isinstance(sched, Mapping) or set(sched) != {"start", "end", "epochs"}:
        raise ValueError(f"config aug.p_schedule must be {form}, got {sched!r}")
    for key in ("start", "end"):
        v = sched[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
            raise ValueError(f"config aug.p_schedule.{key} must be a probability in [0, 1], got {v!r}")
    n = sched["epochs"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"config aug.p_schedule.epochs must be a non-negative int, got {n!r}")

"""CPU thread policy of the ``reldrop`` command line (the library is left alone: ``import reldrop``
and the library functions never change process-global OpenMP settings).

Why (issue 10 item 12): torch runs one OpenMP thread per core by default, and OpenMP threads
spin-wait between parallel regions. With two such threads on two cores next to one other busy
process, each small op waits for a descheduled spinning thread: ``reldrop demo`` took 9.7 s alone
and 185 s beside one single-threaded training process. The command line therefore

1. sets ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep instead of spinning) before torch is
   loaded, unless the variable is already set - :func:`prefer_passive_openmp`, called first thing by
   :func:`reldrop.cli.main`;
2. runs the small jobs on one thread by default (``train.threads: 1`` in every config, ``reldrop
   demo --threads 1``); ``--threads N`` / ``train.threads: N`` (``null``: torch's default) opt in to more;
3. warns when more than one thread is asked for while the load average says the cores are busy
   (:func:`warn_if_busy`).
"""
from __future__ import annotations

import os
import sys

__all__ = ["prefer_passive_openmp", "available_cores", "busy_message", "warn_if_busy"]


def prefer_passive_openmp(environ: "os._Environ[str] | dict[str, str] | None" = None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` when it is unset and torch is not imported yet (OpenMP reads
    it once, when torch loads it). Returns True when it was set. Does nothing inside a process that
    already imported torch (e.g. tests calling :func:`reldrop.cli.main`), so it never changes a
    running library user's settings."""
    env = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in env or "torch" in sys.modules:
        return False
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except (AttributeError, OSError):
        return max(os.cpu_count() or 1, 1)


def busy_message(threads: int, load: float | None = None, cores: int | None = None) -> str | None:
    """A warning when ``threads > 1`` torch threads would share cores that the 1-minute load average
    already fills (``load >= cores - 0.5``); None otherwise or when the load is unknown."""
    if threads <= 1:
        return None
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            return None
    cores = available_cores() if cores is None else cores
    if load < cores - 0.5:
        return None
    return (f"reldrop: warning: the load average is {load:.1f} on {cores} core(s) and this job asks for {threads} "
            "torch threads; OpenMP threads that share busy cores can make it many times slower (measured: "
            "19x for `reldrop demo` beside one training process). Consider --threads 1 (train.threads: 1).")


def warn_if_busy(threads: int) -> None:
    """Print :func:`busy_message` to stderr when there is one."""
    msg = busy_message(threads)
    if msg:
        print(msg, file=sys.stderr, flush=True)

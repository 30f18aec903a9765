"""Fault injection for the reliability tests: a simulated kill in the middle of a file write, and
crafted pickles whose unpickling would create a marker file.

``kill_during_write(monkeypatch, "metrics.jsonl")`` patches ``open`` (builtins and ``io``, so
``Path.write_text``, ``torch.save`` and plain ``open`` are all covered) so that the first write to a
file whose name contains the given text writes half of its data, then raises :class:`SimulatedKill`
- the state a ``kill -9`` inside that write leaves on disk, whichever way the code writes the file
(in place or through a temp file).
"""
from __future__ import annotations

import builtins
import io
from pathlib import Path
from typing import Any


class SimulatedKill(BaseException):
    """Raised at an injected kill point (BaseException: ``except Exception`` does not swallow it)."""


class _HalfWriter:
    def __init__(self, f: Any, state: dict[str, Any]) -> None:
        self._f, self._state = f, state

    def write(self, data: Any) -> int:
        if self._state["armed"]:
            self._state["armed"] = False
            self._state["hits"] += 1
            self._f.write(data[: max(len(data) // 2, 0)])
            self._f.flush()
            raise SimulatedKill(f"killed while writing {self._f.name}")
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> "_HalfWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()

    def __iter__(self):
        return iter(self._f)


def kill_during_write(monkeypatch: Any, name_part: str, *, times: int = 1) -> dict[str, Any]:
    """Arm a simulated kill for the next ``times`` write-mode opens of a file whose name contains
    ``name_part``. Returns a dict whose ``"hits"`` counts the kills that happened (assert it, so the
    test cannot pass without the fault)."""
    state: dict[str, Any] = {"armed": False, "hits": 0, "left": times}
    real_open = builtins.open

    def fake_open(file: Any, mode: str = "r", *args: Any, **kw: Any) -> Any:
        f = real_open(file, mode, *args, **kw)
        if state["left"] > 0 and any(c in mode for c in "wax") and isinstance(file, (str, Path)) \
                and name_part in Path(file).name:
            state["left"] -= 1
            state["armed"] = True
            return _HalfWriter(f, state)
        return f

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    return state


class MarkerPayload:
    """Unpickling this creates ``marker`` (``open(marker, "w")``): proof that a loader ran pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (open, (self.marker, "w"))

"""Test-wide settings: point the data root at the shared real data when it exists."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

if "RELDROP_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["RELDROP_DATA_DIR"] = str(SHARED_DATA)

# One thread: the suite runs many tiny ops, and OpenMP spin-waiting made them up to ~50x slower
# on a loaded 2-core machine (measured by the attribution tests).
torch.set_num_threads(1)


def shared_data(*parts: str) -> Path:
    """Path under the data root; skips the test with a clear reason when it is absent."""
    root = Path(os.environ.get("RELDROP_DATA_DIR", "data"))
    path = root.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real dataset not found at {path} (set RELDROP_DATA_DIR)")
    return path


@pytest.fixture
def cifar10_root() -> Path:
    return shared_data("cifar10")


@pytest.fixture
def modelnet10_root() -> Path:
    return shared_data("modelnet10")

"""Make the helper modules of this directory (lrp_reference, resnet_zoo) importable by name."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny convolutions: one intra-op thread is faster, and on a shared 2-core machine OpenMP's
    spin-waiting with 2 threads made these tests ~50x slower. Restored after each test."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

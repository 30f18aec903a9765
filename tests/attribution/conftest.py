"""One intra-op thread for every attribution test."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny convolutions: one intra-op thread is faster, and on a shared 2-core machine OpenMP's
    spin-waiting with 2 threads made these tests ~50x slower. Restored after each test."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

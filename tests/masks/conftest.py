"""Mask tests run single-threaded: their tensors are tiny, and on the shared, oversubscribed CPU
OpenMP barriers made them ~2x slower with 2 threads. The thread count is restored afterwards."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

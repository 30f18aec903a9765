"""Fixtures for the point-cloud tests; the models live in point_models.py."""
from __future__ import annotations

import pytest

from point_models import TinyPointNet2


@pytest.fixture
def tiny_factory():
    return TinyPointNet2

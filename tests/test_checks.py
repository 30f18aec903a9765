"""reldrop._checks: the shared argument checks (here: check_nonnegative, the ε/δ check of the LRP backends)."""
from __future__ import annotations

import math

import pytest

from reldrop._checks import check_nonnegative


def test_check_nonnegative_accepts_finite_reals_and_returns_a_float():
    assert check_nonnegative("epsilon", 0) == 0.0 and isinstance(check_nonnegative("epsilon", 0), float)
    assert check_nonnegative("epsilon", 1e-3) == 1e-3
    assert check_nonnegative("stabilizer", 2, positive=True) == 2.0


@pytest.mark.parametrize("value", [-1e-9, math.nan, math.inf, True, "1e-3", None])
def test_check_nonnegative_refuses_everything_else_by_name(value):
    with pytest.raises(ValueError, match=r"epsilon must be a finite float >= 0, got"):
        check_nonnegative("epsilon", value)


def test_check_nonnegative_positive_refuses_zero():
    with pytest.raises(ValueError, match=r"stabilizer must be a finite float > 0, got 0"):
        check_nonnegative("stabilizer", 0.0, positive=True)

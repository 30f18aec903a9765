"""Relevance Rank Accuracy: known answers, tie/NaN/empty-mask policy, Quantus cross-check."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from reldrop.metrics import RRAMeter, relevance_rank_accuracy, summarize_rra


def test_known_answer_single_sample():
    r = torch.tensor([[[5.0, 4.0, 3.0], [2.0, 1.0, 0.0]]])
    m = torch.tensor([[[True, False, True], [False, False, True]]])  # K = 3
    # top-3 pixels: (0,0) (0,1) (0,2) -> 2 of them in the mask
    assert relevance_rank_accuracy(r, m).tolist() == pytest.approx([2 / 3])


def test_perfect_and_worst_localisation():
    g = torch.Generator().manual_seed(0)
    m = torch.rand(4, 8, 8, generator=g) > 0.7
    r_good = m.float() + 0.1 * torch.rand(4, 8, 8, generator=g)
    r_bad = -m.float() + 0.1 * torch.rand(4, 8, 8, generator=g)
    assert torch.allclose(relevance_rank_accuracy(r_good, m), torch.ones(4))
    # bad: mask pixels rank last; hits only if K > HW - K
    k = m.flatten(1).sum(1).float()
    expected = (k - (64 - k)).clamp_min(0) / k
    assert torch.allclose(relevance_rank_accuracy(r_bad, m), expected)


def test_channels_are_summed():
    g = torch.Generator().manual_seed(1)
    r = torch.randn(3, 3, 6, 6, generator=g)
    m = torch.rand(3, 6, 6, generator=g) > 0.5
    assert torch.equal(relevance_rank_accuracy(r, m), relevance_rank_accuracy(r.sum(1), m))


def test_ties_broken_by_position_top_left_first():
    r = torch.zeros(1, 2, 2)
    m_first = torch.tensor([[[True, False], [False, False]]])
    m_last = torch.tensor([[[False, False], [False, True]]])
    assert relevance_rank_accuracy(r, m_first).item() == 1.0
    assert relevance_rank_accuracy(r, m_last).item() == 0.0


def test_nan_ranks_last_and_result_is_finite():
    r = torch.tensor([[[float("nan"), 1.0], [0.5, 0.0]]])
    m = torch.tensor([[[True, False], [False, False]]])
    out = relevance_rank_accuracy(r, m)
    assert torch.isfinite(out).all() and out.item() == 0.0
    m2 = torch.tensor([[[False, True], [False, False]]])
    assert relevance_rank_accuracy(r, m2).item() == 1.0


def test_empty_masks_zero_and_skipped_in_summary():
    r = torch.randn(3, 4, 4, generator=torch.Generator().manual_seed(2))
    m = torch.zeros(3, 4, 4, dtype=torch.bool)
    m[0, 0, 0] = True
    r[0, 0, 0] = 10.0
    m[2, 1, 1] = True
    r[2, 1, 1] = -10.0
    scores = relevance_rank_accuracy(r, m)
    assert scores.tolist() == [1.0, 0.0, 0.0] and torch.isfinite(scores).all()
    s = summarize_rra(scores, m)
    assert (s.mean, s.n_valid, s.n_skipped) == (0.5, 2, 1)
    meter = RRAMeter()
    meter.update(r[:2], m[:2])
    meter.update(r[2:], m[2:])
    assert meter.compute() == s
    assert summarize_rra(scores, torch.zeros_like(m)).n_valid == 0


def test_bad_input_errors():
    r = torch.randn(2, 4, 4)
    with pytest.raises(TypeError, match="mask"):
        relevance_rank_accuracy(r, torch.ones(2, 4, 4))
    with pytest.raises(ValueError, match="mask"):
        relevance_rank_accuracy(r, torch.ones(2, 4, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="relevance"):
        relevance_rank_accuracy(r.long(), torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="relevance"):
        relevance_rank_accuracy(torch.randn(4, 4), torch.ones(2, 4, 4, dtype=torch.bool))


def test_matches_quantus_relevance_rank_accuracy():
    quantus = pytest.importorskip("quantus", reason="quantus (test extra) not installed")
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        b, h, w = 16, 12, 10
        r = torch.randn(b, 3, h, w, generator=g, dtype=torch.float64)
        m = torch.rand(b, h, w, generator=g) < torch.rand(b, 1, 1, generator=g)
        m[0] = False  # one empty mask: Quantus gives NaN there, we give 0.0 and skip it
        m[1] = True   # one full mask: RRA = 1
        ours = relevance_rank_accuracy(r, m).numpy()
        metric = quantus.RelevanceRankAccuracy(abs=False, normalise=False, disable_warnings=True)
        a = r.sum(1, keepdim=True).numpy()
        s = m[:, None].numpy().astype(np.float64)
        x = np.zeros((b, 3, h, w))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = np.asarray(metric(model=None, x_batch=x, y_batch=np.zeros(b, dtype=int), a_batch=a,
                                    s_batch=s, channel_first=True), dtype=np.float64)
        assert np.isnan(ref[0]) and ours[0] == 0.0
        np.testing.assert_allclose(ours[1:], ref[1:], atol=1e-6, rtol=0)
        assert summarize_rra(torch.from_numpy(ours), m).mean == pytest.approx(np.nanmean(ref), abs=1e-6)


def _reference_rra(r2d: torch.Tensor, m: torch.Tensor) -> float:
    """Plain-Python RRA of one sample: rank by (-value, row-major position), NaN last."""
    vals = r2d.flatten().tolist()
    key = [(float("inf") if v != v else -v, i) for i, v in enumerate(vals)]
    ranked = [i for _, i in sorted(key)]
    mflat = m.flatten().tolist()
    k = sum(mflat)
    return sum(mflat[i] for i in ranked[:k]) / k if k else 0.0


def test_matches_plain_reference_with_ties():
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=30, deadline=None)
    @given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**31 - 1))
    def check(b, h, w, seed):
        g = torch.Generator().manual_seed(seed)
        r = torch.randint(-2, 3, (b, h, w), generator=g).float()  # many ties
        r[torch.rand(b, h, w, generator=g) < 0.1] = float("nan")
        m = torch.rand(b, h, w, generator=g) < 0.4
        out = relevance_rank_accuracy(r, m)
        assert torch.isfinite(out).all()
        for i in range(b):
            assert out[i].item() == pytest.approx(_reference_rra(r[i], m[i]))

    check()

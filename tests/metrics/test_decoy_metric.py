"""Relevance on the decoy: hand-computed shares, and `reldrop evaluate` on a decoy_digits run."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from reldrop.metrics.decoy import decoy_relevance_share, summarize_decoy_share


def test_share_hand_computed() -> None:
    r = torch.zeros(3, 2, 4, 4, dtype=torch.float64)
    m = torch.zeros(3, 4, 4, dtype=torch.bool)
    m[:, :2, :2] = True
    # sample 0: +3 on the patch (split over two channels), +1 and -5 outside -> 3 / (3 + 1)
    r[0, 0, 0, 0], r[0, 1, 0, 0], r[0, 0, 3, 3], r[0, 0, 2, 2] = 2.0, 1.0, 1.0, -5.0
    # sample 1: channels cancel on the patch (2 - 2 = 0), +4 outside -> 0
    r[1, 0, 1, 1], r[1, 1, 1, 1], r[1, 0, 3, 0] = 2.0, -2.0, 4.0
    # sample 2: only negative relevance -> undefined (skipped)
    r[2, 0, 0, 0] = -1.0
    share, valid = decoy_relevance_share(r, m)
    assert share.tolist() == pytest.approx([0.75, 0.0, 0.0], abs=1e-12)
    assert valid.tolist() == [True, True, False]
    s = summarize_decoy_share(share, valid)
    assert s["mean"] == pytest.approx(0.375) and s["n_valid"] == 2 and s["n_skipped"] == 1
    # no patch -> not valid; NaN relevance counts as 0
    r2 = torch.tensor([[[float("nan"), 1.0], [1.0, 1.0]]])
    sh, va = decoy_relevance_share(r2, torch.tensor([[[True, True], [False, False]]]))
    assert sh.item() == pytest.approx(1 / 3) and bool(va)
    assert not decoy_relevance_share(r2, torch.zeros(1, 2, 2, dtype=torch.bool))[1].any()
    with pytest.raises(TypeError, match="bool"):
        decoy_relevance_share(r2, torch.zeros(1, 2, 2))
    with pytest.raises(ValueError):
        decoy_relevance_share(r2, torch.zeros(1, 3, 2, dtype=torch.bool))


def test_evaluate_decoy_metric_on_decoy_digits(tmp_path, capsys) -> None:
    from reldrop.cli import main
    from reldrop.data import build_dataset, data_root
    from reldrop.metrics import evaluate_accuracy
    from reldrop.train.config import DEFAULTS
    from reldrop.train.factory import build_model

    cfg = copy.deepcopy(DEFAULTS)
    cfg["data"]["name"] = "decoy_digits"
    cfg["data"]["kwargs"] = {"decoy_test": "none"}
    runs = []
    for k in range(2):
        info = build_dataset("decoy_digits", data_root(), "test", train_transform=False, decoy_test="same")
        torch.manual_seed(k)
        model = build_model(cfg, info)
        d = tmp_path / f"v{k}" / "seed0"
        d.mkdir(parents=True)
        torch.save({"model": model.state_dict(), "config": cfg, "epoch": 1}, d / "last.pt")
        runs.append((d, model, info))
    d, model, info = runs[0]
    # default metrics for a decoy run: acc + decoy
    assert main(["evaluate", "--checkpoint", str(d), "--limit", "40", "--batch-size", "16",
                 "--heatmap-samples", "3", "--compare", str(runs[1][0])]) == 0
    assert "relevance on decoy" in capsys.readouterr().out
    m = json.loads((d / "eval" / "metrics.json").read_text())
    assert set(m) >= {"acc", "decoy"} and "rra" not in m
    dec = m["decoy"]
    x, y = info.dataset.get_batch(torch.arange(len(info.dataset)))
    assert dec["same"]["accuracy"] == pytest.approx(100 * evaluate_accuracy(model, [(x, y)])["accuracy"])
    assert dec["none"]["accuracy"] == pytest.approx(m["acc"]["accuracy"])  # the run's own test split is "none"
    for mode in ("same", "random"):
        e = dec[mode]
        assert 0 <= e["relevance_share"] <= 100 and 0 <= e["rra"] <= 100
        assert e["n_relevance"] + e["n_skipped"] == 40 and e["chance"] == pytest.approx(100 * 4 / 64)
    assert "relevance_share" not in dec["none"]
    assert (d / "eval" / "decoy_heatmaps.png").is_file()
    # on a non-decoy run the metric refuses clearly
    cfg2 = copy.deepcopy(DEFAULTS)
    torch.save({"model": model.state_dict(), "config": cfg2}, tmp_path / "plain.pt")
    with pytest.raises(SystemExit, match="decoy dataset"):
        main(["evaluate", "--checkpoint", str(tmp_path / "plain.pt"), "--metrics", "decoy"])

"""`reldrop evaluate` / `reldrop report` end to end on tiny run directories written here."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from reldrop.cli import main


def _write_run(path, data_name, model_name, seed=0, **model_kwargs):
    from reldrop.data import build_dataset, data_root
    from reldrop.train.config import DEFAULTS
    from reldrop.train.factory import build_model

    cfg = copy.deepcopy(DEFAULTS)
    cfg["data"]["name"] = data_name
    cfg["model"]["name"] = model_name
    cfg["model"]["kwargs"] = dict(model_kwargs)
    info = build_dataset(data_name, data_root(), "test", train_transform=False)
    torch.manual_seed(seed)
    model = build_model(cfg, info)
    path.mkdir(parents=True)
    # a DDP-style prefixed state dict must load too
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"model": state, "config": cfg, "epoch": 3}, path / "best.pt")
    return model, info


def test_evaluate_and_report_on_digits(tmp_path, capsys):
    from reldrop.metrics import evaluate_accuracy

    model, info = _write_run(tmp_path / "base" / "seed0", "digits", "small_cnn", seed=0)
    _write_run(tmp_path / "other" / "seed0", "digits", "small_cnn", seed=1)
    for run, metrics in (("base", "acc,morf,channel_auc,heatmaps"), ("other", "morf,channel_auc")):
        assert main(["evaluate", "--checkpoint", str(tmp_path / run / "seed0"), "--metrics", metrics,
                     "--limit", "6", "--steps", "3", "--patch-size", "2", "--heatmap-samples", "2",
                     "--channel-samples", "4", "--batch-size", "16"]) == 0
    ev = tmp_path / "base" / "seed0" / "eval"
    m = json.loads((ev / "metrics.json").read_text())
    x = torch.stack([info.dataset[i][0] for i in range(len(info.dataset))])
    y = torch.tensor([info.dataset[i][1] for i in range(len(info.dataset))])
    expected = evaluate_accuracy(model, [(x, y)])
    assert m["acc"]["accuracy"] == pytest.approx(100 * expected["accuracy"])
    assert m["epoch"] == 3 and m["morf"]["n"] == 6
    assert m["method"] == "epsilon_gamma_box"  # "auto" on a CNN: the paper's evaluation preset
    assert m["options"]["limit"] == 6 and m["options"]["steps"] == 3 and m["options"]["patch_size"] == 2
    assert len(m["morf"]["morf"]["accuracy"]) == 4 and m["morf"]["morf"]["fractions"][1] == pytest.approx(1 / 16)
    assert m["channel_auc"]["layers"] and all(0 <= v["auc"] <= 1 for v in m["channel_auc"]["layers"].values())
    assert (ev / "heatmaps.png").is_file() and (ev / "perturbation.png").is_file()
    # a second evaluate with other metrics (same checkpoint and options) keeps the first ones
    assert main(["evaluate", "--checkpoint", str(tmp_path / "base" / "seed0"), "--metrics", "acc", "--limit", "6",
                 "--steps", "3", "--patch-size", "2", "--heatmap-samples", "2", "--channel-samples", "4"]) == 0
    assert "morf" in json.loads((ev / "metrics.json").read_text())
    capsys.readouterr()
    out_md = tmp_path / "table.md"
    assert main(["report", str(tmp_path / "base" / "seed0"), str(tmp_path / "other" / "seed0"),
                 "--out", str(out_md), "--figures", str(tmp_path / "fig")]) == 0
    table = out_md.read_text()
    assert table.splitlines()[0].startswith("| run | n | test acc (%)")
    assert "| base | 1 | " + f"{m['acc']['accuracy']:.2f}" in table and "| other | 1 | - |" in table
    assert "flipping" not in table
    assert (tmp_path / "fig" / "perturbation_all.png").is_file()
    assert (tmp_path / "fig" / "channel_auc_change.png").is_file()


def test_evaluate_errors(tmp_path):
    with pytest.raises(SystemExit, match="reldrop evaluate: error: run directory not found"):
        main(["evaluate", "--checkpoint", str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="reldrop evaluate: error: no best.pt"):
        main(["evaluate", "--checkpoint", str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="reldrop report"):
        main(["report", str(tmp_path / "empty")])


@pytest.mark.data
def test_evaluate_corruption_and_rra_on_cifar10(tmp_path, cifar10_root):
    _write_run(tmp_path / "c10", "cifar10", "resnet8_cifar")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "c10"), "--metrics", "corruption,rra",
                 "--limit", "2", "--rra-size", "2", "--batch-size", "2"]) == 0
    m = json.loads((tmp_path / "c10" / "eval" / "metrics.json").read_text())
    assert set(m["corruption"]["per_name"]) == {"gaussian_noise", "shot_noise", "gaussian_blur", "contrast",
                                                "brightness", "jpeg", "pixelate"}
    assert 0 <= m["corruption"]["mean"] <= 100 and m["corruption"]["n"] == 2
    assert m["rra"]["n_valid"] == 2 and 0 <= m["rra"]["mean"] <= 100
    assert m["rra"]["chance"] == pytest.approx(100 * 32 * 32 / (64 * 64))
    assert (tmp_path / "c10" / "eval" / "rra_heatmaps.png").is_file()


@pytest.mark.data
def test_evaluate_extra_test_sets_use_the_given_data_root(tmp_path, cifar10_root, monkeypatch):
    """--data-root reaches every dataset evaluate loads (the RRA tiles too), not only the run's test
    split: no $RELDROP_DATA_DIR, no data.root in the config, another working directory."""
    _write_run(tmp_path / "c10", "cifar10", "resnet8_cifar")
    monkeypatch.delenv("RELDROP_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "c10"), "--metrics", "rra", "--rra-size", "2",
                 "--batch-size", "2", "--data-root", str(cifar10_root.parent)]) == 0
    m = json.loads((tmp_path / "c10" / "eval" / "metrics.json").read_text())
    assert m["rra"]["n_valid"] == 2


@pytest.mark.data
def test_evaluate_vit_defaults_to_cp_lrp_and_skips_what_it_cannot_take(tmp_path, cifar10_root, capsys):
    """A ViT run: method "auto" -> cp_lrp for morf/heatmaps; rra (64x64 canvases into a 32x32 ViT)
    and channel_auc (epsilon_gamma_box through zennit, no rule for attention/LayerNorm) are skipped
    with their reasons; an explicit epsilon_gamma_box runs on the graph engine (it has the rules)."""
    _write_run(tmp_path / "vit", "cifar10", "vit_tiny_cifar", depth=1, embed_dim=24, num_heads=2)
    assert main(["evaluate", "--checkpoint", str(tmp_path / "vit"), "--limit", "2", "--steps", "2",
                 "--heatmap-samples", "2", "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "skipping rra" in out and "skipping channel_auc" in out
    m = json.loads((tmp_path / "vit" / "eval" / "metrics.json").read_text())
    assert m["method"] == "cp_lrp"
    assert "64x64" in m["skipped"]["rra"] and "Attention" in m["skipped"]["channel_auc"]
    assert m["morf"]["n"] == 2 and "corruption" in m and (tmp_path / "vit" / "eval" / "heatmaps.png").is_file()
    assert main(["evaluate", "--checkpoint", str(tmp_path / "vit"), "--metrics", "morf", "--method",
                 "epsilon_gamma_box", "--limit", "2", "--steps", "2", "--batch-size", "2"]) == 0
    m = json.loads((tmp_path / "vit" / "eval" / "metrics.json").read_text())
    assert m["method"] == "epsilon_gamma_box" and m["morf"]["n"] == 2


def test_report_groups_seeds_mean_std(tmp_path):
    from reldrop.commands.report import collect, markdown_table, write_figures

    runs = []
    for variant, accs in (("baseline", (40.0, 42.0)), ("RelDrop", (45.0, 45.0))):
        for seed, a in enumerate(accs):
            d = tmp_path / variant / f"seed{seed}"
            (d / "eval").mkdir(parents=True)
            m = {"name": f"{variant}/seed{seed}", "acc": {"accuracy": a}, "rra": {"mean": a / 2},
                 "morf": {o: {"accuracy_auc": a, "fractions": [0, 0.5, 1], "accuracy": [a, a / 2, 0]}
                          for o in ("morf", "lerf", "random")},
                 "channel_auc": {"layers": {"l1": {"auc": a / 100}, "l2": {"auc": 0.5}}}}
            (d / "eval" / "metrics.json").write_text(json.dumps(m))
            runs.append(d)
    table = markdown_table(collect(runs))
    lines = table.splitlines()
    assert lines[2].startswith("| baseline | 2 | 41.00 ± 1.41 |")
    assert lines[3].startswith("| RelDrop | 2 | 45.00 ± 0.00 |")
    assert "corruption" not in lines[0]  # no run has it: column left out
    files = write_figures(collect(runs), tmp_path / "fig")
    assert [f.name for f in files] == ["perturbation_all.png", "channel_auc_change.png"]


def test_evaluate_points_run_defaults_to_flipping(tmp_path):
    cfg_extra = {"npoints": 64, "rotate": "z"}
    from reldrop.data import build_dataset, data_root
    from reldrop.train.config import DEFAULTS
    from reldrop.train.factory import build_model

    cfg = copy.deepcopy(DEFAULTS)
    cfg["data"].update(name="shapes", kwargs=cfg_extra)
    cfg["model"]["name"] = "pointnet"
    info = build_dataset("shapes", data_root(), "test", train_transform=False, **cfg_extra)
    torch.manual_seed(0)
    model = build_model(cfg, info)
    (tmp_path / "pts").mkdir()
    torch.save({"model": model.state_dict(), "config": cfg}, tmp_path / "pts" / "last.pt")
    assert main(["evaluate", "--checkpoint", str(tmp_path / "pts"), "--limit", "4", "--batch-size", "4"]) == 0
    m = json.loads((tmp_path / "pts" / "eval" / "metrics.json").read_text())
    assert set(m) >= {"acc", "flipping"} and "morf" not in m
    assert len(m["flipping"]["fixed"]["accuracy"]) == 64 // 32 + 1 and m["flipping"]["random"]["n"] == 4
    assert (tmp_path / "pts" / "eval" / "flipping.png").is_file()
    with pytest.raises(SystemExit, match="do not apply"):
        main(["evaluate", "--checkpoint", str(tmp_path / "pts"), "--metrics", "rra"])


def test_report_statistics_pairs_seed_folders(tmp_path, capsys):
    import csv

    from reldrop.commands.report import collect, statistics_rows
    from reldrop.stats import describe, paired_t_test, sign_flip_test

    accs = {"baseline": ("none", [40.0, 42.0, 41.0]), "RE": ("re", [41.0, 42.5, 41.0]),
            "RelDrop": ("reldrop", [44.0, 45.0, 46.5])}
    runs = []
    for variant, (aug, vals) in accs.items():
        for seed, a in enumerate(vals):
            d = tmp_path / variant / f"seed{seed}"
            (d / "eval").mkdir(parents=True)
            (d / "eval" / "metrics.json").write_text(json.dumps({"aug": aug, "acc": {"accuracy": a}}))
            runs.append(d)
    st = {(r["metric"], r["group"]): r for r in statistics_rows(collect(runs))}
    rd = st[("test acc (%)", "RelDrop")]
    s = describe(accs["RelDrop"][1])
    assert rd["n"] == 3 and rd["ci95_low"] == pytest.approx(s.ci95_low) and rd["ci95_high"] == pytest.approx(s.ci95_high)
    assert rd["p_vs_baseline"] == pytest.approx(paired_t_test(accs["RelDrop"][1], accs["baseline"][1])[2])
    assert rd["p_vs_re"] == pytest.approx(paired_t_test(accs["RelDrop"][1], accs["RE"][1])[2])
    assert rd["p_perm_vs_re"] == sign_flip_test(accs["RelDrop"][1], accs["RE"][1]) == 0.25
    assert st[("test acc (%)", "baseline")]["p_vs_baseline"] is None and st[("test acc (%)", "RE")]["p_vs_re"] is None
    assert main(["report", *map(str, runs), "--csv", str(tmp_path / "stats.csv")]) == 0
    out = capsys.readouterr().out
    assert "95 % CI" in out and "sign-flip" in out
    with open(tmp_path / "stats.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"ci95_low", "ci95_high", "p_vs_baseline", "p_vs_re", "p_holm_vs_baseline", "p_holm_vs_re"} <= set(rows[0])
    assert len(rows) == 3 and rows[0]["p_vs_re"] == "" and float(rows[2]["p_vs_re"]) == pytest.approx(rd["p_vs_re"])

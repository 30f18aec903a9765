"""Engine: run directory contents, metrics, exact resume, checkpoints, DataLoader path."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

import reldrop
from reldrop.data.tensor_dataset import TensorImageDataset
from reldrop.runs import load_checkpoint, save_checkpoint
from reldrop.train.evaluate import evaluate
from reldrop.train.loop import METRIC_KEYS, train



def _rows(run_dir: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_run_directory_contents_and_metrics(digits_cfg: dict[str, Any]) -> None:
    res = train(digits_cfg, quiet=True)
    run = Path(res["run_dir"])
    assert {"config.yaml", "env.json", "metrics.jsonl", "metrics.csv", "last.pt", "best.pt"} <= {p.name for p in run.iterdir()}
    assert not [p for p in run.iterdir() if "tmp" in p.name]  # atomic writes leave no temp files
    env = json.loads((run / "env.json").read_text())
    for key in ("git_commit", "torch", "zennit", "python", "device", "numpy"):
        assert key in env
    assert env["torch"] == torch.__version__
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert set(METRIC_KEYS) <= set(r) and {"throughput", "aug_time", "epoch_time"} <= set(r)
        assert 0 <= r["test_acc"] <= r["test_top5"] <= 100 and r["throughput"] > 0
        assert r["gap"] == pytest.approx(r["train_acc"] - r["test_acc"])
    assert rows[0]["lr"] == digits_cfg["optim"]["lr"] and rows[1]["lr"] < rows[0]["lr"]  # cosine steps per epoch
    with open(run / "metrics.csv") as f:
        csv_rows = list(csv.DictReader(f))
    assert [float(r["test_acc"]) for r in csv_rows] == [r["test_acc"] for r in rows]
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["epoch"] == 2 and ckpt["best_acc"] == max(r["test_acc"] for r in rows)
    assert res["final"]["test_acc"] == rows[-1]["test_acc"]
    # the same out dir is not silently overwritten
    with pytest.raises(FileExistsError, match="--resume"):
        train(digits_cfg, quiet=True)


def test_env_records_the_attribution_backend(tmp_path: Path, make_cfg: Any) -> None:
    none = train(make_cfg(tmp_path / "none", aug__name="none", train__epochs=1), quiet=True)
    assert "attribution" not in json.loads((Path(none["run_dir"]) / "env.json").read_text())
    cfg = make_cfg(tmp_path / "rd", aug__name="reldrop", train__epochs=1)
    res = train(cfg, quiet=True)
    env = json.loads((Path(res["run_dir"]) / "env.json").read_text())
    expected = reldrop.attribution.Attributor(reldrop.models.build("small_cnn", num_classes=10, width=8),
                                              cfg["aug"]["method"] or "epsilon_flat").backend
    assert env["attribution"] == {"method": "epsilon_flat", "backend": expected}


def test_training_learns_digits(tmp_path: Path, make_cfg: Any) -> None:
    cfg = make_cfg(tmp_path, train__epochs=6, data__subset=None, data__test_subset=None)
    res = train(cfg, quiet=True)
    assert res["final"]["test_acc"] > 80.0  # chance is 10 %


@pytest.mark.parametrize("aug", ["re", "reldrop"])
def test_resume_reproduces_uninterrupted_run_exactly(tmp_path: Path, make_cfg: Any, aug: str) -> None:
    over = dict(aug__name=aug, data__subset=150, data__test_subset=60)
    full = train(make_cfg(tmp_path / "full", **over), quiet=True)
    half_cfg = make_cfg(tmp_path / "half", **over)
    train(half_cfg, quiet=True, stop_after=1)  # "killed" after epoch 1
    assert [r["epoch"] for r in _rows(half_cfg["out"])] == [1]
    resumed = train(half_cfg, resume=True, quiet=True)
    a, b = _rows(full["run_dir"]), _rows(resumed["run_dir"])
    assert len(a) == len(b) == 2
    for ra, rb in zip(a, b):
        assert {k: ra[k] for k in METRIC_KEYS} == {k: rb[k] for k in METRIC_KEYS}
    ma = load_checkpoint(Path(full["run_dir"]) / "last.pt")["model"]
    mb = load_checkpoint(Path(resumed["run_dir"]) / "last.pt")["model"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    if aug == "reldrop":
        assert a[0]["aug_time"] > 0 and a[0].get("aug_selected", 0) > 0


def test_resume_on_dataloader_path_with_points(tmp_path: Path, make_cfg: Any) -> None:
    over = dict(data__name="_test_blobs", model__name="_test_point_mlp", model__kwargs={}, aug__name="random",
                aug__beta=0.3, data__subset=None, data__test_subset=None, train__batch_size=16, train__epochs=3,
                optim__lr=0.1)
    full = train(make_cfg(tmp_path / "full", **over), quiet=True)
    cfg = make_cfg(tmp_path / "half", **over)
    train(cfg, quiet=True, stop_after=2)
    resumed = train(cfg, resume=Path(cfg["out"]), quiet=True)  # resume from a run-dir path
    a, b = _rows(full["run_dir"]), _rows(resumed["run_dir"])
    assert [{k: r[k] for k in METRIC_KEYS} for r in a] == [{k: r[k] for k in METRIC_KEYS} for r in b]
    assert a[-1]["test_acc"] > 50  # three separable blobs; chance is 33 %


def test_resume_after_kill_between_metrics_and_checkpoint(tmp_path: Path, make_cfg: Any) -> None:
    cfg = make_cfg(tmp_path, train__epochs=2)
    train(cfg, quiet=True, stop_after=1)
    run = Path(cfg["out"])
    # simulate a crash after the metrics line of epoch 2 was written but before last.pt was replaced
    rows = _rows(run)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + [dict(rows[0], epoch=2)]))
    train(cfg, resume=True, quiet=True)
    assert [r["epoch"] for r in _rows(run)] == [1, 2]


def test_save_checkpoint_is_atomic_replace(tmp_path: Path, make_cfg: Any) -> None:
    p = tmp_path / "last.pt"
    save_checkpoint({"a": torch.ones(2)}, p)
    save_checkpoint({"a": torch.zeros(2)}, p)
    assert torch.equal(load_checkpoint(p)["a"], torch.zeros(2))
    assert [q.name for q in tmp_path.iterdir()] == ["last.pt"]
    (tmp_path / "bad.pt").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


class _Lookup(nn.Module):
    """Logits = the input itself (B, K, 1, 1) -> (B, K): predictions are fixed by the data."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


def test_evaluate_top1_top5_macro_against_hand_counts() -> None:
    torch.manual_seed(0)
    k, n = 6, 40
    logits = torch.randn(n, k)
    labels = torch.cat([torch.zeros(30, dtype=torch.long), torch.randint(1, k, (10,))])  # imbalanced
    ds = TensorImageDataset(logits.view(n, k, 1, 1), labels, lambda x, g: x)
    out = evaluate(_Lookup(), ds, k, device=torch.device("cpu"), batch_size=7)
    pred = logits.argmax(1)
    assert out["test_acc"] == pytest.approx(100 * (pred == labels).float().mean().item())
    top5 = (logits.topk(5, 1).indices == labels[:, None]).any(1).float().mean().item()
    assert out["test_top5"] == pytest.approx(100 * top5)
    recalls = [(pred[labels == c] == c).float().mean().item() for c in range(k) if (labels == c).any()]
    assert out["test_macro"] == pytest.approx(100 * sum(recalls) / len(recalls))
    ce = torch.nn.functional.cross_entropy(logits, labels).item()
    assert out["test_loss"] == pytest.approx(ce, rel=1e-5)
    sub = evaluate(_Lookup(), ds, k, device=torch.device("cpu"), index=torch.arange(10), prefix="x_")
    assert sub["x_n"] == 10 and sub["x_acc"] == pytest.approx(100 * (pred[:10] == labels[:10]).float().mean().item())


def test_aug_start_epoch_turns_augmentation_on_later(tmp_path: Path, make_cfg: Any) -> None:
    cfg = make_cfg(tmp_path, aug__name="re", aug__start_epoch=1)
    rows = _rows(train(cfg, quiet=True)["run_dir"])
    assert rows[0]["aug_time"] == 0.0 and rows[1]["aug_time"] > 0.0


def test_init_from_state_dict_and_eval_train_clean(tmp_path: Path, make_cfg: Any) -> None:
    first = train(make_cfg(tmp_path / "a"), quiet=True)
    weights = tmp_path / "w.pt"
    torch.save(load_checkpoint(Path(first["run_dir"]) / "last.pt")["model"], weights)
    cfg = make_cfg(tmp_path / "b", train__epochs=1, train__eval_train_samples=50)
    cfg["model"]["init"] = str(weights)
    cfg["optim"]["lr"] = cfg["sched"]["min_lr"] = 0.0  # no update: the finetuned model is the loaded one
    res = train(cfg, quiet=True)
    row = _rows(res["run_dir"])[0]
    loaded = torch.load(weights, weights_only=True)
    after = load_checkpoint(Path(res["run_dir"]) / "last.pt")["model"]
    params = [k for k in loaded if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert params and all(torch.equal(after[k], loaded[k]) for k in params)  # started from the file (lr 0)
    fresh = load_checkpoint(Path(first["run_dir"]) / "last.pt")["model"]
    assert torch.equal(after[params[0]], fresh[params[0]])
    assert 0 <= row["train_clean_acc"] <= 100 and row["gap_clean"] == pytest.approx(row["train_clean_acc"] - row["test_acc"])


def test_tensorboard_events_or_clear_warning(tmp_path: Path, make_cfg: Any) -> None:
    cfg = make_cfg(tmp_path, train__epochs=1, train__tensorboard=True, data__subset=100)
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.warns(UserWarning, match="tensorboard"):
            train(cfg, quiet=True)
        assert not (Path(cfg["out"]) / "tb").exists()
    else:
        train(cfg, quiet=True)
        assert list((Path(cfg["out"]) / "tb").glob("events.out.tfevents.*"))


def test_cli_train_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from reldrop.cli import main

    out = tmp_path / "cli_run"
    common = ["--set", "data.subset=100", "data.test_subset=50", "model.kwargs={width: 4}"]
    assert main(["train", *common, "--epochs", "1", "--out", str(out), "--aug", "re", "--quiet"]) == 0
    assert f"run directory: {out}" in capsys.readouterr().out
    assert main(["train", *common, "--epochs", "1", "--out", str(out), "--quiet"]) == 2  # refuses to overwrite
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0
    rows = _rows(out)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert load_checkpoint(out / "last.pt")["config"]["aug"]["name"] == "re"  # the saved config was kept
    assert main(["train", "--resume", str(tmp_path / "nothing"), "--quiet"]) == 2

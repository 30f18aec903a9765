"""Issue 21 items 6, 7, 9: compare's variants never share a folder or leave --out; "finished" comes
from the checkpoint, so the table, metrics and checkpoints agree; a run without metrics is refused."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.faults import SimulatedKill, kill_during_write

from reldrop.runs.files import load_checkpoint
from reldrop.train.compare import run_compare
from reldrop.train.loop import train


def _cfg(make_cfg: Any, tmp_path: Path, variants: list[dict[str, Any]], epochs: int = 2) -> dict[str, Any]:
    cfg = make_cfg(tmp_path, train__epochs=epochs)
    cfg["compare"]["variants"] = variants
    return cfg


@pytest.mark.parametrize("names", [["RE p=0.5", "RE/p=0.5"], ["RelDrop", "reldrop"]])
def test_variants_mapping_to_one_folder_are_refused(tmp_path: Path, make_cfg: Any, names: list[str]) -> None:
    cfg = _cfg(make_cfg, tmp_path, [{"name": names[0], "aug": {"name": "re"}}, {"name": names[1]}])
    with pytest.raises(ValueError, match=r"map to the same run folder"):
        run_compare(cfg, out=tmp_path / "cmp", seeds=[0], quiet=True, plot=False)
    assert not any((tmp_path / "cmp").rglob("last.pt"))


@pytest.mark.parametrize("name", ["..", "."])
def test_a_variant_folder_outside_out_is_refused(tmp_path: Path, make_cfg: Any, name: str) -> None:
    cfg = _cfg(make_cfg, tmp_path, [{"name": "baseline"}, {"name": name}])
    with pytest.raises(ValueError, match=r"would not be a folder inside"):
        run_compare(cfg, out=tmp_path / "cmp" / "inner", seeds=[0], quiet=True, plot=False)
    assert not any(tmp_path.rglob("last.pt"))


def test_a_kill_between_metrics_and_last_pt_is_not_counted_as_finished(tmp_path: Path, make_cfg: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """train writes metrics.jsonl before last.pt: a kill between the two in the last epoch leaves a
    metrics row that last.pt does not hold; compare must finish the run, not tabulate it."""
    cfg = _cfg(make_cfg, tmp_path, [{"name": "baseline"}])
    run = tmp_path / "cmp" / "baseline" / f"seed{cfg['seed']}"
    rcfg = {**cfg, "out": str(run)}
    train(rcfg, quiet=True, stop_after=1)
    hits = kill_during_write(monkeypatch, "last.pt")
    with pytest.raises(SimulatedKill):
        train(rcfg, resume=True, quiet=True)
    monkeypatch.undo()
    assert hits["hits"] == 1 and load_checkpoint(run / "last.pt")["epoch"] == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2  # the state the issue describes
    res = run_compare(cfg, out=tmp_path / "cmp", seeds=[cfg["seed"]], quiet=True, plot=False)
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 2  # resumed and finished, not reused
    row = res["runs"][0]["metrics"][-1]
    assert row["epoch"] == 2 and row["test_acc"] == last["metrics"]["test_acc"]
    assert res["rows"][0]["final_test_acc_mean"] == last["metrics"]["test_acc"]


def test_a_finished_run_without_metrics_is_refused_not_dropped(tmp_path: Path, make_cfg: Any) -> None:
    cfg = _cfg(make_cfg, tmp_path, [{"name": "baseline"}], epochs=1)
    run_compare(cfg, out=tmp_path / "cmp", seeds=[0, 1], quiet=True, plot=False)
    (tmp_path / "cmp" / "baseline" / "seed1" / "metrics.jsonl").unlink()
    with pytest.raises(ValueError, match=r"seed1.*last\.pt holds epoch 1 but metrics\.jsonl is missing"):
        run_compare(cfg, out=tmp_path / "cmp", seeds=[0, 1], quiet=True, plot=False)

"""Issue 10: checkpoints never run code; a kill at any write boundary loses no history and leaves
last.pt/best.pt consistent; stale temp files are cleaned; resuming a finetuning run needs no --init file."""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from helpers.faults import MarkerPayload, SimulatedKill, kill_during_write
from reldrop import runs
from reldrop.models import build
from reldrop.models.checkpoint import load_init
from reldrop.train import loop
from reldrop.runs import load_checkpoint
from reldrop.train.load import load_run
from reldrop.train.loop import train


def _epochs(run: Path) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------ item 2: safe loading


def _crafted_checkpoint(path: Path, marker: Path, base: dict[str, Any] | None = None) -> None:
    state = dict(base or {"model": {}, "epoch": 1})
    state["evil"] = MarkerPayload(marker)
    torch.save(state, path)


def test_load_checkpoint_refuses_pickled_code(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    _crafted_checkpoint(tmp_path / "last.pt", marker)
    with pytest.raises(runs.CheckpointError, match=r"last\.pt.*weights_only=True"):
        load_checkpoint(tmp_path / "last.pt")
    with pytest.raises(ValueError, match=r"last\.pt"):
        load_init(build("small_cnn", num_classes=10, in_channels=1, width=8), tmp_path / "last.pt")
    assert not marker.exists()


def test_resume_evaluate_and_compare_refuse_a_crafted_run(tmp_path: Path, make_cfg: Any) -> None:
    cfg = make_cfg(tmp_path, train__epochs=2)
    train(cfg, quiet=True, stop_after=1)
    run, marker = Path(cfg["out"]), tmp_path / "PWNED"
    good = load_checkpoint(run / "last.pt")
    for name in ("last.pt", "best.pt"):
        _crafted_checkpoint(run / name, marker, good)
    with pytest.raises(ValueError, match=r"last\.pt"):
        train(cfg, resume=True, quiet=True)
    with pytest.raises(ValueError, match=r"best\.pt"):
        load_run(run)  # reldrop evaluate --checkpoint RUN
    from reldrop.cli import main

    assert main(["train", "--resume", str(run), "--quiet"]) == 2
    assert not marker.exists()


def test_compare_refuses_to_resume_a_crafted_run(tmp_path: Path, make_cfg: Any) -> None:
    """compare resumes the unfinished runs it finds: that resume loads safely too."""
    from reldrop.train.compare import run_compare

    cfg = make_cfg(tmp_path, train__epochs=2)
    cfg["compare"]["variants"] = [{"name": "baseline"}]
    cfg["out"] = str(tmp_path / "cmp" / "baseline" / f"seed{cfg['seed']}")
    train(cfg, quiet=True, stop_after=1)
    run, marker = Path(cfg["out"]), tmp_path / "PWNED"
    _crafted_checkpoint(run / "last.pt", marker, load_checkpoint(run / "last.pt"))
    with pytest.raises(ValueError, match=r"last\.pt"):
        run_compare(cfg, out=tmp_path / "cmp", seeds=[cfg["seed"]], quiet=True, plot=False)
    assert not marker.exists()


def test_init_accepts_reldrops_own_last_pt(tmp_path: Path, make_cfg: Any) -> None:
    res = train(make_cfg(tmp_path, train__epochs=1), quiet=True)
    model = build("small_cnn", num_classes=10, in_channels=1, width=8)
    report = load_init(model, Path(res["run_dir"]) / "last.pt")
    saved = load_checkpoint(Path(res["run_dir"]) / "last.pt")["model"]
    assert report.loaded and all(torch.equal(model.state_dict()[k], saved[k]) for k in report.loaded)


def test_rng_state_roundtrips_through_weights_only(tmp_path: Path) -> None:
    random.seed(3), np.random.seed(4), torch.manual_seed(5)
    np.random.randn()  # a cached gaussian in the numpy state
    runs.save_checkpoint({"rng": [runs.rng_state()]}, tmp_path / "s.pt")
    want = (random.random(), np.random.randn(), torch.rand(1))
    random.seed(0), np.random.seed(0), torch.manual_seed(0)
    runs.set_rng_state(runs.load_checkpoint(tmp_path / "s.pt")["rng"][0])
    got = (random.random(), np.random.randn(), torch.rand(1))
    assert got[:2] == want[:2] and torch.equal(got[2], want[2])


def test_old_format_checkpoint_with_numpy_rng_still_resumes(tmp_path: Path, make_cfg: Any) -> None:
    """Checkpoints written before issue 10 pickled numpy/python RNG tuples; numpy arrays are allow-listed."""
    cfg = make_cfg(tmp_path, train__epochs=2)
    train(cfg, quiet=True, stop_after=1)
    run = Path(cfg["out"])
    ckpt = load_checkpoint(run / "last.pt")
    ckpt["rng"] = [{"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                    "cuda": None}]
    torch.save(ckpt, run / "last.pt")
    assert train(cfg, resume=True, quiet=True)["final"]["epoch"] == 2


# ------------------------------------------------------------------------------ item 4: best/last after a kill


def test_kill_between_last_and_best_of_a_new_best_is_repaired(tmp_path: Path, make_cfg: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_cfg(tmp_path, train__epochs=1)  # the resume trains nothing: only a repair can fix best.pt
    run = Path(cfg["out"])
    real_save = loop.save_checkpoint
    seen: list[tuple[str, int]] = []

    def save(state: Any, path: Path) -> None:
        seen.append((Path(path).name, int(state["epoch"])))
        if Path(path).name == "best.pt" and state["epoch"] == 1 and ("last.pt", 1) in seen:
            raise SimulatedKill("killed between last.pt and best.pt of epoch 1 (a new best)")
        real_save(state, path)

    # epoch 1 is always a new best; the kill lands after last.pt (order last -> best) or before it
    monkeypatch.setattr(loop, "save_checkpoint", save)
    with pytest.raises(SimulatedKill):
        train(cfg, quiet=True)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    last = load_checkpoint(run / "last.pt")
    assert last["epoch"] == 1 and last["best_epoch"] == 1 and not (run / "best.pt").exists()
    # evaluate of the killed run uses the best model (last.pt holds it), not a missing/older best.pt
    loaded = load_run(run)
    assert loaded.epoch == 1
    res = train(cfg, resume=True, quiet=True)
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == res["best_epoch"]
    assert best["metrics"]["test_acc"] == pytest.approx(res["best_acc"])


def test_resume_repairs_best_pt_holding_an_older_epoch(tmp_path: Path, make_cfg: Any) -> None:
    """The issue's case: last.pt of a new-best epoch written, best.pt still the older best."""
    cfg = make_cfg(tmp_path, train__epochs=3)
    run = Path(cfg["out"])
    train(cfg, quiet=True, stop_after=2)
    last = load_checkpoint(run / "last.pt")
    older = dict(last, epoch=1, best_epoch=1, model={k: torch.zeros_like(v) for k, v in last["model"].items()})
    torch.save(older, run / "best.pt")
    last["best_epoch"] = 2
    torch.save(last, run / "last.pt")
    with pytest.warns(UserWarning, match="killed between"):
        assert load_run(run, checkpoint="best").epoch == 2  # evaluate picks the true best
    train(cfg, resume=True, quiet=True, stop_after=0)
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == 2 and all(torch.equal(best["model"][k], last["model"][k]) for k in last["model"])


# ------------------------------------------------------------------------------ items 5-7: history, env, temps


def test_kill_inside_metrics_rewrite_on_resume_keeps_history(tmp_path: Path, make_cfg: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_cfg(tmp_path, train__epochs=3)
    run = Path(cfg["out"])
    train(cfg, quiet=True, stop_after=2)
    before = (run / "metrics.jsonl").read_text()
    hits = kill_during_write(monkeypatch, "metrics.jsonl")
    with pytest.raises(SimulatedKill):
        train(cfg, resume=True, quiet=True)
    assert hits["hits"] == 1
    monkeypatch.undo()
    assert (run / "metrics.jsonl").read_text() == before  # the only copy was never truncated
    train(cfg, resume=True, quiet=True)
    assert _epochs(run) == [1, 2, 3]


def test_kill_inside_the_epoch_append_keeps_history(tmp_path: Path, make_cfg: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_cfg(tmp_path, train__epochs=3)
    run = Path(cfg["out"])
    train(cfg, quiet=True, stop_after=1)
    hits = kill_during_write(monkeypatch, "metrics.jsonl", times=2)  # the resume rewrite, then epoch 2's row
    hits["left"] = 0
    real = runs.MetricsLogger.log

    def log(self: Any, row: dict[str, Any]) -> None:
        hits["left"] = 1
        real(self, row)

    monkeypatch.setattr(runs.MetricsLogger, "log", log)
    with pytest.raises(SimulatedKill):
        train(cfg, resume=True, quiet=True)
    assert hits["hits"] == 1
    monkeypatch.undo()
    assert _epochs(run) == [1]  # complete, parseable
    train(cfg, resume=True, quiet=True)
    assert _epochs(run) == [1, 2, 3]


def test_cut_short_last_line_from_an_old_version_is_dropped(tmp_path: Path, make_cfg: Any) -> None:
    cfg = make_cfg(tmp_path, train__epochs=2)
    run = Path(cfg["out"])
    train(cfg, quiet=True, stop_after=1)
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text + text[: len(text) // 2])  # a kill inside an append
    with pytest.warns(UserWarning, match="metrics.jsonl"):
        train(cfg, resume=True, quiet=True)
    assert _epochs(run) == [1, 2]


def test_kill_inside_env_json_write_does_not_break_resume(tmp_path: Path, make_cfg: Any,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_cfg(tmp_path, train__epochs=3)
    run = Path(cfg["out"])
    train(cfg, quiet=True, stop_after=1)
    hits = kill_during_write(monkeypatch, "env.json")
    with pytest.raises(SimulatedKill):
        train(cfg, resume=True, quiet=True, stop_after=1)
    assert hits["hits"] == 1
    monkeypatch.undo()
    env = json.loads((run / "env.json").read_text())  # still the complete old file
    assert "resumed" not in env and env["config_hash"] == runs.config_hash(load_checkpoint(run / "last.pt")["config"])
    train(cfg, resume=True, quiet=True)
    assert len(json.loads((run / "env.json").read_text())["resumed"]) == 1
    assert _epochs(run) == [1, 2, 3]


def test_empty_env_json_from_an_old_version_is_named_and_kept(tmp_path: Path, make_cfg: Any) -> None:
    cfg = make_cfg(tmp_path, train__epochs=2)
    run = Path(cfg["out"])
    train(cfg, quiet=True, stop_after=1)
    (run / "env.json").write_text("")
    with pytest.warns(UserWarning, match=r"env\.json"):
        train(cfg, resume=True, quiet=True)
    assert (run / "env.json.corrupt").is_file() and json.loads((run / "env.json").read_text())["resumed"]


def test_read_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{")
    with pytest.raises(ValueError, match=r"x\.json"):
        runs.read_json(tmp_path / "x.json")


def test_stale_temp_files_are_removed_on_resume(tmp_path: Path, make_cfg: Any) -> None:
    cfg = make_cfg(tmp_path, train__epochs=2)
    run = Path(cfg["out"])
    train(cfg, quiet=True, stop_after=1)
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    stale = [run / f".last.pt.tmp{dead}", run / f".best.pt.tmp{dead}", run / ".metrics.csv.tmp",
             run / f".metrics.jsonl.tmp{os.getpid()}"]
    live = run / ".last.pt.tmp1"  # pid 1 is alive: a writer at work right now is left alone
    for p in stale + [live]:
        p.write_bytes(b"partial")
    train(cfg, resume=True, quiet=True)
    assert not any(p.exists() for p in stale) and live.exists()


def test_atomic_write_leaves_the_old_file_when_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs.atomic_write_json(tmp_path / "a.json", {"v": 1})
    kill_during_write(monkeypatch, "a.json")
    with pytest.raises(SimulatedKill):
        runs.atomic_write_json(tmp_path / "a.json", {"v": 2, "pad": "x" * 100})
    monkeypatch.undo()
    assert runs.read_json(tmp_path / "a.json") == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


# ------------------------------------------------------------------------------ item 9: finetuning resume


def test_resume_of_a_finetuning_run_needs_no_init_file(tmp_path: Path, make_cfg: Any) -> None:
    first = train(make_cfg(tmp_path / "a", train__epochs=1), quiet=True)
    weights = tmp_path / "w.pt"
    torch.save(load_checkpoint(Path(first["run_dir"]) / "last.pt")["model"], weights)
    cfg = make_cfg(tmp_path / "b", train__epochs=2)
    cfg["model"]["init"] = str(weights)
    train(cfg, quiet=True, stop_after=1)
    weights.unlink()  # the weights now come from last.pt
    res = train(cfg, resume=True, quiet=True)
    assert res["final"]["epoch"] == 2


# ------------------------------------------------------------------------------ item 8: compare never mixes configs


def test_compare_refuses_to_reuse_runs_of_another_config(tmp_path: Path, make_cfg: Any,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from reldrop.train.compare import run_compare

    cfg = make_cfg(tmp_path, train__epochs=1, data__subset=100, data__test_subset=60)
    cfg["compare"]["variants"] = [{"name": "baseline", "aug": {"name": "none"}}]
    out = tmp_path / "cmp"
    run_compare(cfg, out=out, seeds=[0], quiet=True, plot=False)
    saved = (out / "compare.json").read_text()
    changed = json.loads(json.dumps(cfg))
    changed["optim"]["lr"] = 0.5
    with pytest.raises(runs.RunConfigMismatchError, match=r"baseline/seed0.*optim\.lr: 0\.01 -> 0\.5"):
        run_compare(changed, out=out, seeds=[0], quiet=True, plot=False)
    longer = json.loads(json.dumps(cfg))
    longer["train"]["epochs"] = 3
    with pytest.raises(runs.RunConfigMismatchError, match=r"train\.epochs: 1 -> 3"):
        run_compare(longer, out=out, seeds=[0], quiet=True, plot=False)
    assert (out / "compare.json").read_text() == saved  # nothing recorded for the refused config
    # another variant list (the compare section) or another data root is not a different run
    more = json.loads(json.dumps(cfg))
    more["compare"]["variants"].append({"name": "RE", "aug": {"name": "re"}})
    more["data"]["root"] = str(tmp_path / "elsewhere")
    mtime = (out / "baseline" / "seed0" / "last.pt").stat().st_mtime_ns
    run_compare(more, out=out, seeds=[0], quiet=True, plot=False, only=["baseline"])
    assert (out / "baseline" / "seed0" / "last.pt").stat().st_mtime_ns == mtime
    # the command line says the same, naming the run directory
    from reldrop.cli import main

    assert main(["compare", "--preset", "digits", "--out", str(tmp_path / "cli"), "--seeds", "0", "--variants",
                 "baseline", "--epochs", "1", "--set", "data.subset=60", "data.test_subset=30",
                 "model.kwargs={width: 4}", "--quiet"]) == 0
    assert main(["compare", "--preset", "digits", "--out", str(tmp_path / "cli"), "--seeds", "0", "--variants",
                 "baseline", "--epochs", "1", "--set", "data.subset=60", "data.test_subset=30",
                 "model.kwargs={width: 4}", "optim.lr=0.5", "--quiet"]) == 2
    assert "optim.lr" in capsys.readouterr().err


# ------------------------------------------------------------------------------ item 10: evaluate on a digits run


def test_evaluate_digits_with_default_metrics_skips_what_does_not_apply(tmp_path: Path, make_cfg: Any,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from reldrop.cli import main

    res = train(make_cfg(tmp_path, train__epochs=1), quiet=True)
    rc = main(["evaluate", "--checkpoint", res["run_dir"], "--limit", "20", "--channel-samples", "8",
               "--heatmap-samples", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "skipping corruption" in text and "skipping rra" in text and "skipping morf" in text
    saved = json.loads((Path(res["run_dir"]) / "eval" / "metrics.json").read_text())
    assert set(saved["skipped"]) == {"corruption", "rra", "morf"}
    assert 0 <= saved["acc"]["accuracy"] <= 100 and "channel_auc" in saved and "heatmaps" in saved
    # asked for explicitly, a metric that does not apply is an error naming it
    with pytest.raises(SystemExit, match="corruption does not apply"):
        main(["evaluate", "--checkpoint", res["run_dir"], "--metrics", "corruption"])


def test_each_finished_metric_is_saved_before_a_later_one_fails(tmp_path: Path, make_cfg: Any,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from reldrop.commands.evaluate import suite as evaluation

    res = train(make_cfg(tmp_path, train__epochs=1), quiet=True)
    run = load_run(res["run_dir"])

    def boom(*a: Any, **k: Any) -> Any:
        raise SimulatedKill("killed inside channel_auc")

    import importlib

    monkeypatch.setattr(importlib.import_module("reldrop.metrics.channel_auc"), "layer_channel_auc", boom)
    with pytest.raises(SimulatedKill):
        evaluation.evaluate_run(run, ["acc", "channel_auc"], log=lambda *_: None)
    saved = json.loads((Path(res["run_dir"]) / "eval" / "metrics.json").read_text())
    assert 0 <= saved["acc"]["accuracy"] <= 100 and "channel_auc" not in saved

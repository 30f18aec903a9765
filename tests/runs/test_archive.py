"""Archived runs (reldrop.runs.archive): a study's finished runs kept without checkpoints are reused by
``compare`` with the same table, never retrained, and refused where the weights would be needed."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from reldrop.runs.archive import FINISHED, archive_runs, finished_epoch, is_archived, mark_finished, read_finished
from reldrop.runs.files import load_checkpoint
from reldrop.commands.compare import run_compare  # trains and writes results.csv
from reldrop.train.loop import train


def _cfg(make_cfg: Any, tmp_path: Path, epochs: int = 2) -> dict[str, Any]:
    cfg = make_cfg(tmp_path, train__epochs=epochs, data__subset=100, data__test_subset=60)
    cfg["compare"]["variants"] = [{"name": "baseline", "aug": {"name": "none"}}, {"name": "RE", "aug": {"name": "re"}}]
    cfg["compare"]["test_sets"] = {"noshift": {"shift": 0}}
    return cfg


def _results(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv") as f:
        return list(csv.DictReader(f))


def test_compare_marks_finished_runs(tmp_path: Path, make_cfg: Any) -> None:
    cfg = _cfg(make_cfg, tmp_path)
    out = tmp_path / "cmp"
    run_compare(cfg, out=out, seeds=[0], quiet=True, plot=False)
    run = out / "baseline" / "seed0"
    marker = read_finished(run)
    assert marker is not None and marker["epoch"] == 2 == load_checkpoint(run / "last.pt")["epoch"]
    assert len(marker["checkpoint_sha256"]) == 64
    assert not is_archived(run) and finished_epoch(run) == 2


def test_archived_study_gives_the_same_table_without_training(tmp_path: Path, make_cfg: Any,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(make_cfg, tmp_path)
    out = tmp_path / "cmp"
    run_compare(cfg, out=out, seeds=[0, 1], quiet=True, plot=False)
    before = _results(out)
    # one unfinished run in the study: left out of the archive
    part = out / "RE" / "seed2"
    train({**cfg, "aug": {**cfg["aug"], "name": "re"}, "seed": 2, "out": str(part)}, quiet=True, stop_after=1)
    arch = tmp_path / "archive" / "cmp"
    res = archive_runs(out, arch)
    assert sorted(res["finished"]) == ["RE/seed0", "RE/seed1", "baseline/seed0", "baseline/seed1"]
    assert res["unfinished"] == ["RE/seed2"]
    assert not list(arch.rglob("*.pt")) and not (arch / "RE" / "seed2").exists()
    assert (arch / "compare.json").is_file() and (arch / "baseline" / "seed0" / FINISHED).is_file()
    assert all(is_archived(arch / v / f"seed{s}") for v in ("baseline", "RE") for s in (0, 1))

    def no_training(*a: Any, **k: Any) -> None:
        raise AssertionError("an archived run was trained again")

    monkeypatch.setattr("reldrop.train.loop.train", no_training)
    run_compare(cfg, out=arch, seeds=[0, 1], quiet=True, plot=False)
    assert _results(arch) == before
    assert not list(arch.rglob("*.pt"))


def test_archived_run_refuses_what_needs_its_weights(tmp_path: Path, make_cfg: Any) -> None:
    cfg = _cfg(make_cfg, tmp_path)
    out = tmp_path / "cmp"
    run_compare(cfg, out=out, seeds=[0], quiet=True, plot=False)
    arch = tmp_path / "arch"
    archive_runs(out, arch)
    # a test set the cache does not hold
    cfg2 = json.loads(json.dumps(cfg))
    cfg2["compare"]["test_sets"] = {"noshift": {"shift": 0}, "other": {"shift": 1}}
    with pytest.raises(ValueError, match=r"archived run .* test set\(s\) \['other'\].*restore last.pt"):
        run_compare(cfg2, out=arch, seeds=[0], quiet=True, plot=False)
    # more epochs: the config check names the difference, and with the marker alone it cannot go on
    cfg3 = json.loads(json.dumps(cfg))
    cfg3["train"]["epochs"] = 3
    with pytest.raises(Exception, match=r"another config|archived run"):
        run_compare(cfg3, out=arch, seeds=[0], quiet=True, plot=False)
    assert not list(arch.rglob("*.pt"))


def test_mark_and_read_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="last.pt"):
        mark_finished(tmp_path)
    (tmp_path / FINISHED).write_text('{"epoch": "x"}')
    with pytest.raises(ValueError, match="not a finished-run marker"):
        finished_epoch(tmp_path)
    assert finished_epoch(tmp_path / "nothing") is None
    with pytest.raises(ValueError, match="outside"):
        archive_runs(tmp_path, tmp_path / "inside")


def test_archive_marks_runs_of_older_code(tmp_path: Path, make_cfg: Any) -> None:
    """Runs written before finished.json existed: finished by their checkpoint and config.yaml's epochs."""
    cfg = _cfg(make_cfg, tmp_path)
    out = tmp_path / "cmp"
    run_compare(cfg, out=out, seeds=[0], quiet=True, plot=False)
    for m in out.rglob(FINISHED):
        m.unlink()
    res = archive_runs(out, tmp_path / "arch")
    assert sorted(res["finished"]) == ["RE/seed0", "baseline/seed0"]
    assert (out / "RE" / "seed0" / FINISHED).is_file()
    shutil.rmtree(tmp_path / "arch")


def test_a_test_set_that_sets_test_subset_is_cached_and_archivable(tmp_path: Path, make_cfg: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``{full: {test_subset: null}}`` (the few-shot study's headline) is stored with its key: a second
    compare reuses the cache instead of evaluating again, and an archived run is served from it."""
    cfg = _cfg(make_cfg, tmp_path)
    cfg["compare"]["test_sets"] = {"full": {"test_subset": None}}
    out = tmp_path / "cmp"
    run_compare(cfg, out=out, seeds=[0], quiet=True, plot=False)
    calls = {"n": 0}

    def no_eval(*a: Any, **k: Any) -> None:
        calls["n"] += 1
        raise AssertionError("a cached test set was evaluated again")

    import sys

    monkeypatch.setattr(sys.modules["reldrop.train.evaluate"], "evaluate", no_eval)
    run_compare(cfg, out=out, seeds=[0], quiet=True, plot=False)
    arch = tmp_path / "arch"
    archive_runs(out, arch)
    res = run_compare(cfg, out=arch, seeds=[0], quiet=True, plot=False)
    assert calls["n"] == 0 and res["runs"][0]["test_sets"]["full"] > 0


def test_a_run_stopped_before_its_test_sets_is_not_archived(tmp_path: Path, make_cfg: Any) -> None:
    """Killed after its last epoch but before ``compare`` evaluated its test sets: archiving it would leave
    a run that can never be evaluated; it stays unfinished until ``compare`` finishes it."""
    cfg = _cfg(make_cfg, tmp_path)
    out = tmp_path / "cmp"
    run_compare(cfg, out=out, seeds=[0], quiet=True, plot=False)
    run = out / "RE" / "seed0"
    (run / "test_sets.json").unlink()
    (run / FINISHED).unlink()
    res = archive_runs(out, tmp_path / "arch")
    assert res == {"finished": ["baseline/seed0"], "unfinished": ["RE/seed0"]}
    assert not (run / FINISHED).exists() and not (tmp_path / "arch" / "RE" / "seed0").exists()
    # a cache of another epoch (or other settings) does not count either
    (run / "test_sets.json").write_text(json.dumps({"epoch": 1, "sets": {"noshift": {"kwargs": {"shift": 0},
                                                                                      "acc": 50.0}}}))
    assert archive_runs(out, tmp_path / "arch2")["unfinished"] == ["RE/seed0"]
    run_compare(cfg, out=out, seeds=[0], quiet=True, plot=False)  # evaluates the missing test set
    res = archive_runs(out, tmp_path / "arch3")
    assert sorted(res["finished"]) == ["RE/seed0", "baseline/seed0"] and res["unfinished"] == []
    assert is_archived(tmp_path / "arch3" / "RE" / "seed0")


def test_missing_test_sets(tmp_path: Path) -> None:
    from reldrop.runs.test_set_cache import missing_test_sets

    sets = {"a": {"shift": 0}, "b": {"test_subset": None}}
    assert missing_test_sets(tmp_path, sets, 3) == ["a", "b"]
    (tmp_path / "test_sets.json").write_text(json.dumps(
        {"epoch": 3, "sets": {"a": {"kwargs": {"shift": 0}, "acc": 1.0}, "b": {"kwargs": {"test_subset": 5}}}}))
    assert missing_test_sets(tmp_path, sets, 3) == ["b"]  # b was computed with other settings
    assert missing_test_sets(tmp_path, sets, 4) == ["a", "b"]  # another checkpoint
    assert missing_test_sets(tmp_path, {}, 3) == []
    (tmp_path / "test_sets.json").write_text("[1, 2]")  # not a cache: nothing counts
    assert missing_test_sets(tmp_path, sets, 3) == ["a", "b"]

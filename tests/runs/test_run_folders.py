"""Issue 21 items 1-3: a run folder is marked (run.json), exclusive (O_EXCL lock) and never clobbered;
reldrop deletes only the temp files it created."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
from pathlib import Path

import pytest
from run_helpers import CLI, one_line_error, tiny_cfg

from reldrop.cli import main
from reldrop.runs.files import clean_stale_temps, load_checkpoint, temp_path
from reldrop.runs.lock import LOCK, RunInUseError, acquire_run_lock
from reldrop.train.loop import train

DEAD_PID = 2**22 + 12345  # above Linux's default pid_max: no such process


def _hold_lock(run_dir: str, ready: "mp.synchronize.Event", done: "mp.synchronize.Event") -> None:
    lock = acquire_run_lock(run_dir, quiet=True)
    ready.set()
    done.wait(60)
    lock.release()


def test_a_run_locked_by_a_live_process_is_refused(tmp_path: Path) -> None:
    """A second writer (another live process holds the lock) is refused before it writes anything."""
    out = tmp_path / "H1"
    out.mkdir()
    ctx = mp.get_context("fork")
    ready, done = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(out), ready, done))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(RunInUseError, match=rf"in use by pid {holder.pid}"):
            train(tiny_cfg(out), quiet=True)
        with pytest.raises(RunInUseError, match="in use"):  # --force never takes a live lock
            train(tiny_cfg(out), quiet=True, force=True)
        assert sorted(p.name for p in out.iterdir()) == [LOCK]
    finally:
        done.set()
        holder.join(60)
    train(tiny_cfg(out), quiet=True)  # released: the folder is free again
    assert not (out / LOCK).exists()


def test_two_train_processes_on_one_out_never_mix(tmp_path: Path) -> None:
    """Two `reldrop train` processes started together on one --out: one runs, the other is refused;
    config.yaml, last.pt and best.pt all belong to the run that ran."""
    out = tmp_path / "H1"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "reldrop.cli"] + CLI + ["--epochs", "3", "--out", str(out)]
    procs = [subprocess.Popen(args + ["--seed", str(s)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for s in (0, 1)]
    results = [(p.wait(240), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(rc for rc, _ in results)
    assert codes == [0, 2], results
    refused = next(err for rc, err in results if rc == 2)
    assert any(s in refused for s in ("in use", "already holds a run", "being locked")) and one_line_error(refused)
    seed = json.loads((out / "run.json").read_text())["command"][-1]
    import yaml

    assert yaml.safe_load((out / "config.yaml").read_text())["seed"] == int(seed)
    assert load_checkpoint(out / "last.pt")["config"]["seed"] == int(seed)
    assert load_checkpoint(out / "best.pt")["config"]["seed"] == int(seed)


def test_a_stale_lock_is_reported_and_taken_over_only_with_force_or_resume(tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    cfg = tiny_cfg(out, epochs=2)
    train(cfg, quiet=True, stop_after=1)
    stale = {"pid": DEAD_PID, "host": os.uname().nodename, "started_utc": "2026-01-01T00:00:00Z"}
    (out / LOCK).write_text(json.dumps(stale))
    fresh = tiny_cfg(tmp_path / "fresh", epochs=1)
    fresh_lock = tmp_path / "fresh"
    fresh_lock.mkdir()
    (fresh_lock / LOCK).write_text(json.dumps(stale))
    with pytest.raises(RunInUseError, match=rf"stale lock.*pid {DEAD_PID}.*--resume.*--force"):
        train(fresh, quiet=True)
    train(fresh, quiet=True, force=True)  # --force takes it over
    assert (fresh_lock / "last.pt").is_file() and not (fresh_lock / LOCK).exists()
    capsys.readouterr()
    train(cfg, resume=True)  # --resume takes over the lock its killed run left, and says so
    assert f"took over the stale lock of pid {DEAD_PID}" in capsys.readouterr().err
    assert load_checkpoint(out / "last.pt")["epoch"] == 2 and not (out / LOCK).exists()


def test_a_run_without_last_pt_is_not_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "H2"
    assert main(CLI + ["--epochs", "2", "--out", str(out)]) == 0
    (out / "last.pt").unlink()
    best, rows = (out / "best.pt").read_bytes(), (out / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(CLI + ["--seed", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "best.pt" in err and one_line_error(err)
    assert (out / "best.pt").read_bytes() == best and (out / "metrics.jsonl").read_text() == rows


def test_a_folder_of_the_users_is_refused_and_left_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    files = {"config.yaml": "my: own\n", ".thesis.tmp": "draft", f".notes.tmp{DEAD_PID}": "notes",
             ".draft.tmp": "x", ".bashrc.tmp": "y"}
    for name, text in files.items():
        (out / name).write_text(text)
    assert main(CLI + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a reldrop run" in err and one_line_error(err)
    assert {p.name: p.read_text() for p in out.iterdir()} == files


def test_clean_stale_temps_deletes_only_reldrops_own_temp_files(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text("{}")
    ours = [tmp_path / f".last.pt.reldrop-tmp{DEAD_PID}", tmp_path / f".metrics.csv.tmp{DEAD_PID}",
            temp_path(tmp_path / "env.json")]
    theirs = [tmp_path / f".notes.tmp{DEAD_PID}", tmp_path / ".thesis.tmp", tmp_path / ".draft.tmp",
              tmp_path / f".bashrc.tmp{DEAD_PID}", tmp_path / ".last.pt.reldrop-tmp1"]  # pid 1: alive
    for p in ours + theirs:
        p.write_bytes(b"x")
    assert sorted(clean_stale_temps(tmp_path)) == sorted(ours)
    assert all(p.exists() for p in theirs)
    assert temp_path(tmp_path / "last.pt").name == f".last.pt.reldrop-tmp{os.getpid()}"


def test_a_run_is_marked_with_its_id_command_and_config_hash(tmp_path: Path) -> None:
    from reldrop.runs.identity import config_hash

    cfg = tiny_cfg(tmp_path / "run", epochs=2)
    train(cfg, quiet=True, stop_after=1)
    marker = json.loads((tmp_path / "run" / "run.json").read_text())
    assert len(marker["run_id"]) == 32 and marker["config_hash"] == config_hash(load_checkpoint(
        tmp_path / "run" / "last.pt")["config"]) and isinstance(marker["command"], list)
    train(cfg, resume=True, quiet=True)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["run_id"] == marker["run_id"]


def test_a_killed_run_without_a_checkpoint_can_start_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed in its first epoch (run.json, config.yaml, env.json, no checkpoint) holds nothing to lose."""
    from reldrop.train import loop

    cfg = tiny_cfg(tmp_path / "run")

    def killed(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_train_epoch", killed)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, quiet=True)
    monkeypatch.undo()
    assert not (tmp_path / "run" / "last.pt").exists() and (tmp_path / "run" / "run.json").is_file()
    assert not (tmp_path / "run" / LOCK).exists()  # an exception releases the lock
    train(cfg, quiet=True)
    assert (tmp_path / "run" / "last.pt").is_file()

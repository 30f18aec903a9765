"""``kill PID`` (SIGTERM) stops ``reldrop train`` / ``compare`` like Ctrl-C: the run lock is released,
the resume hint printed, exit code 143; the previous SIGTERM handler is back afterwards."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from run_helpers import CLI

from reldrop.cli import main
from reldrop.commands._signals import Terminated, interrupt_exit_code, sigterm_as_interrupt
from reldrop.runs.lock import LOCK, acquire_run_lock


def _wait_for_signal() -> None:
    for _ in range(2000):  # the Python-level handler runs between bytecodes, right after os.kill
        time.sleep(0.001)


def test_sigterm_in_the_block_raises_terminated_and_the_old_handler_comes_back() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with sigterm_as_interrupt():
        assert signal.getsignal(signal.SIGTERM) is not before
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            _wait_for_signal()
    assert signal.getsignal(signal.SIGTERM) is before
    assert issubclass(Terminated, KeyboardInterrupt)
    assert interrupt_exit_code(Terminated()) == 143 and interrupt_exit_code(KeyboardInterrupt()) == 130


def _terminate_on_first_checkpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    from reldrop.train import loop

    def terminated(run: Any, row: Any, epoch: int) -> None:  # before epoch 1 is saved: no checkpoint yet
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for_signal()

    monkeypatch.setattr(loop, "_log_and_checkpoint", terminated)


def test_kill_during_train_releases_the_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGTERM)
    _terminate_on_first_checkpoint(monkeypatch)
    assert main(CLI + ["--epochs", "3", "--out", str(out)]) == 143
    err = capsys.readouterr().err
    assert f"interrupted; resume with `reldrop train --resume {out}`" in err and "Traceback" not in err
    assert (out / "run.json").exists() and not (out / LOCK).exists() and not (out / "last.pt").exists()
    acquire_run_lock(out).release()  # no stale lock: no --force needed
    assert signal.getsignal(signal.SIGTERM) is before


def test_kill_during_compare_releases_the_lock_and_compare_continues(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cmp"
    args = ["compare", "--preset", "digits", "--out", str(out), "--seeds", "1", "--variants", "baseline",
            "--epochs", "1", "--set", "data.subset=100", "model.kwargs={width: 4}", "--quiet"]
    _terminate_on_first_checkpoint(monkeypatch)
    assert main(args) == 143
    assert "reldrop compare: interrupted" in capsys.readouterr().err
    assert not list(out.rglob(LOCK))
    monkeypatch.undo()
    assert main(args) == 0  # the run that had no checkpoint yet starts again, without --force

"""Issue 21 items 11, 12, 14, 16 (train): a full disk, a read-only --out, --resume with another --out,
Ctrl-C and config numbers get one clear line (and lose nothing that was saved)."""
from __future__ import annotations

import builtins
import errno
import io
from pathlib import Path
from typing import Any

import pytest
import torch
from run_helpers import CLI, one_line_error, tiny_cfg

from reldrop.cli import main
from reldrop.runs.files import RunWriteError, atomic_write_json, load_checkpoint, read_json
from reldrop.train.config import load_config


def _full_disk_on(monkeypatch: pytest.MonkeyPatch, name_part: str) -> dict[str, int]:
    """Writes to files whose name contains ``name_part`` fail with ENOSPC (a patched write)."""
    real_open, state = builtins.open, {"hits": 0}

    class Full:
        def __init__(self, f: Any) -> None:
            self._f = f

        def write(self, data: Any) -> int:
            state["hits"] += 1
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str) -> Any:
            return getattr(self._f, name)

        def __enter__(self) -> "Full":
            return self

        def __exit__(self, *exc: Any) -> None:
            self._f.close()

    def fake_open(file: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
        f = real_open(file, mode, *a, **k)
        if "w" in mode and isinstance(file, (str, Path)) and name_part in Path(file).name:
            return Full(f)
        return f

    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)
    return state


def test_a_full_disk_while_writing_last_pt_is_one_line_and_keeps_the_previous(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(CLI + ["--epochs", "2", "--out", str(out)]) == 0
    before = (out / "last.pt").read_bytes()
    capsys.readouterr()
    real_save = torch.save

    def failing_save(obj: Any, f: Any, *a: Any, **k: Any) -> None:  # what torch reports when the disk fills up
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1472 vs 1366")

    monkeypatch.setattr(torch, "save", failing_save)
    assert main(["train", "--resume", str(out), "--epochs", "3", "--quiet"]) == 1
    monkeypatch.setattr(torch, "save", real_save)
    err = capsys.readouterr().err
    assert "could not write" in err and "last.pt" in err and "previous last.pt is intact" in err
    assert one_line_error(err)
    assert (out / "last.pt").read_bytes() == before and load_checkpoint(out / "last.pt")["epoch"] == 2
    assert not [p for p in out.iterdir() if "tmp" in p.name]


def test_enospc_from_a_write_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    atomic_write_json(tmp_path / "metrics.json", {"v": 1})
    hits = _full_disk_on(monkeypatch, "metrics.json")
    with pytest.raises(RunWriteError, match=r"could not write .*metrics\.json: No space left on device; "
                                            r"the previous metrics\.json is intact"):
        atomic_write_json(tmp_path / "metrics.json", {"v": 2})
    monkeypatch.undo()
    assert hits["hits"] == 1 and read_json(tmp_path / "metrics.json") == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_out_on_a_read_only_mount_or_below_a_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    assert main(CLI + ["--out", str(tmp_path / "file" / "run")]) == 1
    err = capsys.readouterr().err
    assert "cannot create run directory" in err and str(tmp_path / "file" / "run") in err and one_line_error(err)
    real_mkdir = Path.mkdir

    def read_only(self: Path, *a: Any, **k: Any) -> None:  # root ignores permissions: simulate EROFS
        if "ro" in self.parts:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", read_only)
    assert main(CLI + ["--out", str(tmp_path / "ro" / "run")]) == 1
    err = capsys.readouterr().err
    assert "Read-only file system" in err and str(tmp_path / "ro" / "run") in err and one_line_error(err)


def test_resume_with_another_out_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "A", tmp_path / "B"
    assert main(CLI + ["--epochs", "1", "--out", str(a)]) == 0
    before = (a / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--resume", str(a / "last.pt"), "--out", str(b), "--epochs", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and str(b) in err and one_line_error(err)
    assert not b.exists() and (a / "last.pt").read_bytes() == before
    assert main(["train", "--resume", str(a / "last.pt"), "--out", str(a), "--epochs", "2", "--quiet"]) == 0


def test_ctrl_c_prints_one_line_with_the_resume_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from reldrop.train import loop

    out = tmp_path / "run"
    real = loop._log_and_checkpoint
    calls = {"n": 0}

    def interrupted_after_one(run: Any, row: Any, epoch: int) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(run, row, epoch)

    monkeypatch.setattr(loop, "_log_and_checkpoint", interrupted_after_one)
    assert main(CLI + ["--epochs", "3", "--out", str(out)]) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert f"interrupted; resume with `reldrop train --resume {out}`" in err and "Traceback" not in err
    assert main(["train", "--resume", str(out), "--quiet"]) == 0  # the lock was released
    assert load_checkpoint(out / "last.pt")["epoch"] == 3


@pytest.mark.parametrize("text, value", [("1e-3", 0.001), ("1e6", 1e6), ("2.5E-4", 2.5e-4), ("-1e-2", -0.01)])
def test_scientific_notation_is_a_float(text: str, value: float) -> None:
    assert load_config(None, [f"aug.kwargs.epsilon={text}"])["aug"]["kwargs"]["epsilon"] == value


def test_scientific_notation_in_yaml_files_and_flags(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1e-3\n  weight_decay: 5e-4\n")
    cfg = load_config(tmp_path / "c.yaml", ["sched.min_lr=1e-7"])
    assert cfg["optim"]["lr"] == 0.001 and cfg["optim"]["weight_decay"] == 5e-4 and cfg["sched"]["min_lr"] == 1e-7


def test_aug_epsilon_kwarg_in_scientific_notation_trains(tmp_path: Path) -> None:
    from reldrop.train.loop import train

    res = train(tiny_cfg(tmp_path / "run", "aug.name=reldrop", "aug.kwargs.epsilon=1e-3"), quiet=True)
    assert res["final"]["epoch"] == 1


def test_a_yaml_alias_bomb_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        prev, cur = chr(96 + i), chr(97 + i)
        lines.append(f"{cur}: &{cur} [{','.join(['*' + prev] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    assert bomb.stat().st_size < 500
    assert main(["train", "--config", str(bomb), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "alias" in err and str(bomb) in err and one_line_error(err)

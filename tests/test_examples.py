"""Every script in examples/ runs (2 steps on CPU), or skips with the reason when its framework is absent."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SRC = Path(__file__).resolve().parents[1] / "src"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_every_example_is_tested_and_short() -> None:
    names = sorted(p.stem for p in EXAMPLES.glob("*.py"))
    assert names == ["accelerate_loop", "hf_trainer", "lightning_module", "plain_pytorch"]
    for name in names:
        assert len((EXAMPLES / f"{name}.py").read_text().splitlines()) <= 70, name  # a page or less


def test_plain_pytorch(capsys: pytest.CaptureFixture[str]) -> None:
    before = torch.get_num_threads()
    _load("plain_pytorch").main(["--steps", "2"])
    assert "plain PyTorch: 2 steps" in capsys.readouterr().out
    assert torch.get_num_threads() == before


def test_lightning(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("lightning", reason="lightning not installed (pip install reldrop[lightning])")
    _load("lightning_module").main(["--steps", "2"])
    assert "Lightning: 2 steps" in capsys.readouterr().out


@pytest.mark.parametrize("name, needs, expect", [
    ("accelerate_loop", ("accelerate",), "Accelerate: 2 steps"),
    ("hf_trainer", ("transformers", "accelerate"), "HF Trainer: 2 steps"),
])
def test_in_a_fresh_process(name: str, needs: tuple[str, ...], expect: str) -> None:
    # Accelerate keeps process-wide state and the HF Trainer reseeds the global RNGs: run them apart
    for pkg in needs:
        if importlib.util.find_spec(pkg) is None:
            pytest.skip(f"{pkg} not installed (pip install reldrop[{'hf' if name == 'hf_trainer' else pkg}]); "
                        "not part of the test extra")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
               CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    res = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--steps", "2"], env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert expect in res.stdout

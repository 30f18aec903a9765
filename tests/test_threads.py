"""Issue 10 item 12: the command line's CPU thread policy; the library changes no process-global setting."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reldrop._threads import busy_message, prefer_passive_openmp
from reldrop.cli import build_parser

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _python(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    base["PYTHONPATH"] = SRC + os.pathsep + base.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", code], env={**base, **env}, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_library_leaves_openmp_alone_and_the_cli_sets_a_passive_wait_policy_before_torch_loads() -> None:
    code = ("import os, sys, reldrop, reldrop.cli\n"
            "assert 'torch' not in sys.modules  # the command line can still choose OpenMP's settings\n"
            "print('LIBRARY', os.environ.get('OMP_WAIT_POLICY'))\n"
            "reldrop.cli.main(['train', '--print-config'])\n"
            "print('CLI', os.environ.get('OMP_WAIT_POLICY'))\n"
            "import torch; n = torch.get_num_threads(); reldrop.RelDrop; import reldrop.train.loop\n"
            "print('THREADS_KEPT', torch.get_num_threads() == n)")
    out = _python(code)
    assert "LIBRARY None" in out and "THREADS_KEPT True" in out and "CLI PASSIVE" in out


def test_a_users_wait_policy_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch")
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert prefer_passive_openmp(env) is False and env == {"OMP_WAIT_POLICY": "ACTIVE"}
    env = {}
    assert prefer_passive_openmp(env) is True and env == {"OMP_WAIT_POLICY": "PASSIVE"}


def test_no_policy_change_inside_a_process_that_already_loaded_torch() -> None:
    env: dict[str, str] = {}
    assert "torch" in sys.modules and prefer_passive_openmp(env) is False and env == {}


def test_demo_runs_on_one_thread_by_default() -> None:
    assert build_parser().parse_args(["demo"]).threads == 1


def test_busy_warning_only_for_several_threads_on_busy_cores() -> None:
    assert "load average is 3.0 on 2 core(s)" in busy_message(2, load=3.0, cores=2)
    assert busy_message(1, load=9.0, cores=2) is None  # one thread is already the remedy
    assert busy_message(4, load=0.3, cores=8) is None

"""python -m build makes an sdist and a wheel; the wheel, installed into a fresh venv, runs `reldrop demo`.

The fresh venv sees the already-installed dependencies (torch & co.) through a .pth file naming this
interpreter's site-packages, so nothing is downloaded; reldrop itself comes only from the wheel: the
commands run from a temporary folder without PYTHONPATH, and the test checks where reldrop was imported from.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _version() -> str:
    text = (REPO / "src" / "reldrop" / "_version.py").read_text(encoding="utf-8")
    return re.search(r'__version__ = "([^"]+)"', text).group(1)  # type: ignore[union-attr]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build", reason="the 'build' package is not installed (it is in the test extra)")
    out = tmp_path_factory.mktemp("dist")
    # --no-isolation: build with the installed setuptools (no download); sdist first, the wheel from the sdist
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)], REPO, dict(os.environ), 300)
    return out


def test_build_makes_sdist_and_wheel_with_the_package_files(dist: Path) -> None:
    version = _version()
    assert (dist / f"reldrop-{version}.tar.gz").is_file()
    wheel = dist / f"reldrop-{version}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert "reldrop/py.typed" in names and "reldrop/_version.py" in names and "reldrop/cli.py" in names
    expected = {p.relative_to(REPO / "src").as_posix() for p in (REPO / "src" / "reldrop").rglob("*.py")}
    assert expected <= set(names), sorted(expected - set(names))  # every module of the source tree is shipped
    assert not [n for n in names if n.startswith(("tests/", "docs/", "benchmarks/"))]
    metadata = zipfile.ZipFile(wheel).read(f"reldrop-{version}.dist-info/METADATA").decode()
    assert f"\nVersion: {version}\n" in metadata  # the one version, from src/reldrop/_version.py
    entry_points = zipfile.ZipFile(wheel).read(f"reldrop-{version}.dist-info/entry_points.txt").decode()
    assert "reldrop = reldrop.cli:main" in entry_points


def test_wheel_in_a_fresh_venv_runs_the_demo(dist: Path, tmp_path: Path) -> None:
    wheel = next(dist.glob("reldrop-*.whl"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp_path, dict(os.environ), 60).strip())
    # the dependencies, from this interpreter's site-packages (a plain path line: its .pth files, such as an
    # editable install of reldrop, are not processed there)
    (site / "_deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
         tmp_path, env, 300)
    where = _run([str(python), "-c", "import reldrop, sys; print(reldrop.__file__); print(sys.path)"], tmp_path, env, 60)
    assert where.splitlines()[0].startswith(str(site)), where  # imported from the wheel, not the source tree
    assert str(REPO / "src") not in where and str(REPO) + "'" not in where
    reldrop_cmd = env_dir / ("Scripts/reldrop.exe" if os.name == "nt" else "bin/reldrop")
    out = _run([str(reldrop_cmd), "demo", "--epochs", "1", "--out", str(tmp_path / "demo")], tmp_path, env, 300)
    assert (tmp_path / "demo" / "demo.png").is_file(), out
    assert _version() in _run([str(python), "-c", "import reldrop; print(reldrop.__version__)"], tmp_path, env, 60)

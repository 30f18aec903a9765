"""python -m build makes an sdist and a wheel; the wheel, installed into a fresh venv, runs `reldrop demo`
and trains from a preset (the presets are YAML files read at run time: they must ship inside the package).

The fresh venv sees the already-installed dependencies (torch & co.) through a .pth file naming this
interpreter's site-packages, so nothing is downloaded; reldrop itself comes only from the wheel: the
commands run from a temporary folder (no ./configs there) without PYTHONPATH, and the test checks where
reldrop was imported from.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "src" / "reldrop" / "configs"  # a clone's top-level configs/ links here


def _presets(root: Path) -> set[str]:
    """The preset files under ``root`` (a package's configs folder), as relative POSIX paths."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*.yaml")}


def _version() -> str:
    text = (REPO / "src" / "reldrop" / "_version.py").read_text(encoding="utf-8")
    return re.search(r'__version__ = "([^"]+)"', text).group(1)  # type: ignore[union-attr]


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd}: {proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


def _build_leftovers(folder: str, names: list[str]) -> set[str]:
    """What the copy of the checkout leaves out: metadata and caches anywhere; VCS, venvs, outputs, data at the top."""
    skip = {n for n in names if n.endswith((".egg-info", "_cache")) or n in ("__pycache__", ".hypothesis")}
    if Path(folder) == REPO:
        skip |= {n for n in names if n in (".git", ".venv", "build", "dist", "site", "runs", "data", ".cache")
                 or n.startswith("out")}
    return skip


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build", reason="the 'build' package is not installed (it is in the test extra)")
    out = tmp_path_factory.mktemp("dist")
    # from a copy without build leftovers: setuptools reuses a src/reldrop.egg-info/SOURCES.txt it finds as the
    # sdist's file list, so a stale one (an editable install, an earlier build) could hide a missing package-data entry
    src = tmp_path_factory.mktemp("src") / "reldrop"
    shutil.copytree(REPO, src, symlinks=True, ignore=_build_leftovers)
    # --no-isolation: build with the installed setuptools (no download); sdist first, the wheel from the sdist
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(src)], src, dict(os.environ), 300)
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
    presets = {f"reldrop/configs/{p}" for p in _presets(PRESETS)}
    assert "reldrop/configs/points_shapes.yaml" in presets and "reldrop/configs/decoy_sweep/pilot.yaml" in presets
    assert presets <= set(names), sorted(presets - set(names))  # the presets, read at run time, are in the wheel
    sdist = set(tarfile.open(dist / f"reldrop-{version}.tar.gz").getnames())
    in_sdist = {f"reldrop-{version}/src/{p}" for p in presets}
    assert in_sdist <= sdist, sorted(in_sdist - sdist)  # ... and in the sdist the wheel is built from
    metadata = zipfile.ZipFile(wheel).read(f"reldrop-{version}.dist-info/METADATA").decode()
    assert f"\nVersion: {version}\n" in metadata  # the one version, from src/reldrop/_version.py
    entry_points = zipfile.ZipFile(wheel).read(f"reldrop-{version}.dist-info/entry_points.txt").decode()
    assert "reldrop = reldrop.cli:main" in entry_points


@dataclass
class Installed:
    """The wheel installed into a fresh venv: its interpreter, ``reldrop`` script, site-packages and env."""
    python: Path
    reldrop: Path
    site: Path
    env: dict[str, str]
    cwd: Path


@pytest.fixture(scope="module")
def installed(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    wheel = next(dist.glob("reldrop-*.whl"))
    tmp_path = tmp_path_factory.mktemp("wheel_venv")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp_path, dict(os.environ), 60).strip())
    # the dependencies, from this interpreter's site-packages (a plain path line: its .pth files, such as an
    # editable install of reldrop, are not processed there)
    (site / "_deps_from_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "RELDROP_CONFIG_DIR")}
    env.update(OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
         tmp_path, env, 300)
    reldrop_cmd = env_dir / ("Scripts/reldrop.exe" if os.name == "nt" else "bin/reldrop")
    return Installed(python, reldrop_cmd, site, env, tmp_path)


def test_wheel_in_a_fresh_venv_runs_the_demo(installed: Installed) -> None:
    python, env, cwd = installed.python, installed.env, installed.cwd
    where = _run([str(python), "-c", "import reldrop, sys; print(reldrop.__file__); print(sys.path)"], cwd, env, 60)
    assert where.splitlines()[0].startswith(str(installed.site)), where  # imported from the wheel, not the source tree
    assert str(REPO / "src") not in where and str(REPO) + "'" not in where
    out = _run([str(installed.reldrop), "demo", "--epochs", "1", "--out", str(cwd / "demo")], cwd, env, 300)
    assert (cwd / "demo" / "demo.png").is_file(), out
    assert _version() in _run([str(python), "-c", "import reldrop; print(reldrop.__version__)"], cwd, env, 60)


def test_wheel_in_a_fresh_venv_trains_from_a_preset(installed: Installed) -> None:
    cwd, env = installed.cwd, installed.env
    package = installed.site / "reldrop" / "configs"
    assert _presets(package) == _presets(PRESETS)  # every preset is inside the installed package
    assert not (cwd / "configs").exists()  # so the presets below can only come from the package
    out = _run([str(installed.reldrop), "train", "--preset", "decoy_digits", "--epochs", "1", "--out", str(cwd / "train")],
               cwd, env, 300)
    saved = yaml.safe_load((cwd / "train" / "config.yaml").read_text(encoding="utf-8"))
    assert saved["name"] == "decoy_digits" and saved["data"]["name"] == "decoy_digits", out
    assert (cwd / "train" / "last.pt").is_file(), out
    # a preset in a subfolder of the package's configs, resolved (not trained: it needs CIFAR-10)
    printed = yaml.safe_load(_run([str(installed.reldrop), "train", "--print-config", "--preset", "decoy_sweep/pilot"],
                                  cwd, env, 120))
    assert printed["name"] == "decoy_sweep_pilot" and printed["model"]["name"] == "resnet8_cifar"

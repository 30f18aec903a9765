"""docs/tutorial.py (the tutorial page of the docs site) runs end to end and writes the figures the page shows."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TUTORIAL = REPO / "docs" / "tutorial.py"


def _figures_shown() -> list[str]:
    """The PNGs the tutorial's markdown cells embed (``figures/<name>.png``)."""
    return sorted(set(re.findall(r"\]\(figures/(tutorial_[\w-]+\.png)\)", TUTORIAL.read_text(encoding="utf-8"))))


def test_tutorial_runs_and_writes_its_figures(tmp_path: Path) -> None:
    figures = tmp_path / "figures"
    env = {**os.environ, "RELDROP_TUTORIAL_FIGURES": str(figures), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(TUTORIAL)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "epochs in" in proc.stdout and "test accuracy" in proc.stdout
    shown = _figures_shown()
    assert len(shown) == 4, shown
    written = sorted(p.name for p in figures.glob("tutorial_*.png"))
    assert written == shown  # every figure the page embeds is one the script makes, and no other
    assert all((figures / name).stat().st_size > 5_000 for name in shown)


def test_the_page_embeds_committed_figures() -> None:
    # the site shows docs/figures/tutorial_*.png: they must be in the tree (re-made by `python docs/tutorial.py`)
    for name in _figures_shown():
        assert (REPO / "docs" / "figures" / name).is_file(), name


def test_tutorial_is_a_jupytext_percent_script() -> None:
    text = TUTORIAL.read_text(encoding="utf-8")
    assert "format_name: percent" in text
    cells = [line for line in text.splitlines() if line.startswith("# %%")]
    assert sum("[markdown]" in c for c in cells) >= 5 and sum("[markdown]" not in c for c in cells) >= 5

"""The README's contract with .ci/run, the docs site's inputs, and (when mkdocs is installed) mkdocs build --strict."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reldrop.train.config import flat_keys

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def test_readme_is_short_and_keeps_the_ci_contract() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300
    first = lines.index(next(line for line in lines if line.startswith("```")))
    block = lines[first + 1: lines.index("```", first + 1)]
    assert "reldrop compare --preset digits" in block[0]
    assert "pytest" in block[1]  # .ci/run runs the 2nd line of the first code block
    assert "## Headline result" in lines and "## Contents" in lines


def test_readme_links_into_docs_exist() -> None:
    for target in re.findall(r"\]\(((?:docs|examples)/[^)#\s]+)", README.read_text(encoding="utf-8")):
        assert (REPO / target).is_file(), target


def test_every_config_key_has_a_meaning() -> None:
    # the generated configuration reference reads these; the docs build fails on a mismatch too
    meanings = yaml.safe_load((REPO / "docs" / "hooks" / "config_keys.yaml").read_text(encoding="utf-8"))
    assert sorted(meanings) == sorted(flat_keys())
    assert all(isinstance(m.get("meaning"), str) and m["meaning"] for m in meanings.values())


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs", reason="mkdocs not installed (pip install -e '.[docs]'; .ci/run builds the docs)")
    pytest.importorskip("mkdocstrings", reason="mkdocstrings not installed (pip install -e '.[docs]')")
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    api = (site / "api" / "reldrop" / "index.html").read_text(encoding="utf-8")
    assert "doc-signature" in api and "Relevance-driven Input Dropout for a batch" in api
    tutorial = (site / "tutorial" / "index.html").read_text(encoding="utf-8")
    assert len(set(re.findall(r'<img[^>]+src="[./]*figures/(tutorial_\w+\.png)"', tutorial))) == 4
    assert "reldrop.RelDrop(model, p=0.5)" in re.sub(r"<[^>]+>", "", tutorial)  # the code cells, highlighted
    config = (site / "reference" / "config" / "index.html").read_text(encoding="utf-8")
    assert all(key in config for key in flat_keys())


def test_citation_cff_names_the_paper_and_the_software() -> None:
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text(encoding="utf-8"))
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software" and cff["title"].startswith("reldrop")
    paper = cff["preferred-citation"]
    assert paper["title"] == "Relevance-driven Input Dropout: an Explanation-guided Regularization Technique"
    assert [a["family-names"] for a in paper["authors"]] == ["Gururaj", "Grüne", "Samek", "Lapuschkin", "Weber"]
    assert "version" not in cff  # the version lives in one place, src/reldrop/_version.py

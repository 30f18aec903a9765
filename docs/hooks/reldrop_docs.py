"""mkdocs hooks for the reldrop site (``hooks:`` in mkdocs.yml); ``mkdocs build --strict`` runs them.

* ``reference/config.md`` is generated from the code: every key of
  :data:`reldrop.train.config.DEFAULTS` with its type and default, the meaning from
  ``docs/hooks/config_keys.yaml`` (the build fails when a key has no meaning there or the file names
  a key the code does not have, so the page cannot drift), and what ``validate()`` accepts, found by
  feeding it a wrong value for that key and reading its error message.
* ``reference/cli.md`` is ``reldrop --help`` and every subcommand's help, from ``reldrop.cli.build_parser()``.
* ``tutorial.md`` is ``docs/tutorial.py`` (a jupytext percent script) rendered: markdown cells as
  text, code cells as code; the figures are the PNGs the script writes into ``docs/figures``.
* Relative links that leave ``docs/`` (``../benchmarks/x.json``, ``../examples/y.py``: they work on
  GitHub) are rewritten to a copy of that repository file served under ``repo/``; a link to a file
  that does not exist fails the build.
"""
from __future__ import annotations

import copy
import os
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files, InclusionLevel

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "src"))  # document this tree's package, not whatever else is installed

_LINK = re.compile(r"(!?\[[^\]\n]*\]\()([^)\s]+)(\))")
_SKIP = ("http://", "https://", "mailto:", "#", "/")
_SECTIONS = {
    "": "Top level", "data": "data: the dataset", "model": "model: the network", "optim": "optim: the optimizer",
    "sched": "sched: the learning-rate schedule", "train": "train: the training loop",
    "aug": "aug: the augmentation (RelDrop and the baselines)", "compare": "compare: reldrop compare",
}


# --------------------------------------------------------------------------- configuration reference
def _type_name(value: Any) -> str:
    for t, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "str"), (list, "list"), (dict, "mapping")):
        if isinstance(value, t):
            return name
    raise PluginError(f"config default {value!r}: no type name; give 'type' in config_keys.yaml")


def _accepted(key: str) -> str:
    """What ``validate()`` says about ``key`` when it gets a wrong value (empty: it does not check it)."""
    from reldrop.train.config import DEFAULTS, set_key, validate

    said = []
    for bad in ("<not-a-value>", -1):
        cfg = copy.deepcopy(DEFAULTS)
        set_key(cfg, key, bad)
        try:
            validate(cfg)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            msg = str(e)
            if f"config {key} " in msg or f"config {key}:" in msg or f"{key} must" in msg:
                msg = re.sub(r"^.*?\b" + re.escape(key) + r"\b\s*", "", msg)
                msg = re.sub(r"[,;]?\s*got .*$", "", msg).strip()
                msg = re.sub(r"must be in \[(\S+), None\]", r"must be >= \1", msg)
                if msg and msg not in said:
                    said.append(msg)
    return "; ".join(said)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    from reldrop.train.config import DEFAULTS, flat_keys, get_key

    meanings = yaml.safe_load((HERE / "config_keys.yaml").read_text(encoding="utf-8"))
    keys = flat_keys()
    missing = [k for k in keys if k not in meanings]
    unknown = [k for k in meanings if k not in keys]
    if missing or unknown:
        raise PluginError(f"docs/hooks/config_keys.yaml is out of date with reldrop.train.config.DEFAULTS: "
                          f"keys without a meaning: {missing}; keys the code does not have: {unknown}")
    lines = ["# Configuration reference", "",
             "Generated at build time from `reldrop.train.config.DEFAULTS` (key, type, default) and "
             "`reldrop.train.config.validate` (the *accepted* column is what `validate()` answers to a wrong "
             "value for that key; empty: not checked there). Meanings: `docs/hooks/config_keys.yaml`, which the "
             "build checks against the code. A YAML config or preset states only what differs from these defaults; "
             "`--set key=value` overrides any key (values parsed as YAML: `--set optim.lr=0.05 data.subset=null`), "
             "and `reldrop train --print-config` prints the resolved config.", ""]
    section = None
    for key in keys:
        head = key.split(".")[0] if "." in key else ""
        if head != section:
            section = head
            lines += ["", f"## {_SECTIONS.get(head, head)}", "",
                      "| key | type | default | meaning | accepted (validate) |", "|---|---|---|---|---|"]
        entry = meanings[key]
        value = get_key(DEFAULTS, key)
        typ = entry.get("type") or _type_name(value)
        default = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
        default = default.removesuffix("\n...").removesuffix("...").strip()
        lines.append(f"| `{key}` | {_cell(typ)} | `{_cell(default)}` | {_cell(entry['meaning'])} | {_cell(_accepted(key))} |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- CLI reference
def cli_reference() -> str:
    from reldrop.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"  # argparse wraps at the terminal width: make the page reproducible
    try:
        parser = build_parser()
        sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parts = ["# CLI reference", "",
                 "Generated at build time from `reldrop.cli.build_parser()`: the output of `reldrop --help` and "
                 "`reldrop COMMAND --help`. Every subcommand reads the config described in the "
                 "[configuration reference](config.md).", "", "## reldrop", "", "```text", parser.format_help().rstrip(), "```"]
        for name, p in sub.choices.items():
            parts += ["", f"## reldrop {name}", "", "```text", p.format_help().rstrip(), "```"]
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return "\n".join(parts) + "\n"


# --------------------------------------------------------------------------- tutorial
def render_percent_script(text: str) -> str:
    """A jupytext percent script -> markdown: ``# %% [markdown]`` cells as text, ``# %%`` cells as code."""
    lines = text.splitlines()
    if lines and lines[0].strip() == "# ---":  # the jupytext header
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "# ---")
        lines = lines[end + 1:]
    cells: list[tuple[str, list[str]]] = []
    for line in lines:
        if line.startswith("# %%"):
            cells.append(("markdown" if "[markdown]" in line else "code", []))
        elif cells:
            cells[-1][1].append(line)
    out = []
    for kind, body in cells:
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        if not body:
            continue
        if kind == "markdown":
            out.append("\n".join(re.sub(r"^# ?", "", b) for b in body))
        else:
            out.append("```python\n" + "\n".join(body) + "\n```")
    return "\n\n".join(out) + "\n"


# --------------------------------------------------------------------------- links out of docs/
def _targets(text: str, where: Path) -> list[tuple[str, Path]]:
    found = []
    for m in _LINK.finditer(text):
        raw = m.group(2)
        if raw.startswith(_SKIP):
            continue
        path = raw.split("#")[0].split("?")[0]
        if path:
            found.append((raw, (where.parent / path).resolve()))
    return found


def _site_uri(target: Path, docs_dir: Path) -> str:
    if target.is_relative_to(docs_dir):
        return target.relative_to(docs_dir).as_posix()
    if target.is_relative_to(ROOT):
        return "repo/" + target.relative_to(ROOT).as_posix()
    raise PluginError(f"link to {target}: outside the repository")


def _repo_files(config: Any) -> list[File]:
    """Files outside docs/ that docs pages link to, as site files under repo/ (linked .md pages included)."""
    docs_dir = Path(config["docs_dir"]).resolve()
    queue = sorted(docs_dir.rglob("*.md"))
    seen: dict[str, File] = {}
    while queue:
        page = queue.pop()
        for raw, target in _targets(page.read_text(encoding="utf-8"), page):
            if target.is_relative_to(docs_dir):
                continue
            if not target.is_file():
                raise PluginError(f"{page.relative_to(ROOT)}: link {raw!r} points to {target}, which is not a file")
            uri = _site_uri(target, docs_dir)
            if uri not in seen:
                seen[uri] = File.generated(config, uri, abs_src_path=str(target), inclusion=InclusionLevel.NOT_IN_NAV)
                if target.suffix == ".md":
                    queue.append(target)
    return list(seen.values())


_GENERATED = ("reference/config.md", "reference/cli.md", "tutorial.md")


def on_files(files: Files, config: Any) -> Files:
    for uri, content in (("reference/config.md", config_reference()), ("reference/cli.md", cli_reference()),
                         ("tutorial.md", render_percent_script((HERE.parent / "tutorial.py").read_text(encoding="utf-8")))):
        files.append(File.generated(config, uri, content=content))
    for f in _repo_files(config):
        files.append(f)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    src = page.file.abs_src_path
    where = docs_dir / page.file.src_uri if page.file.src_uri in _GENERATED or not src else Path(src).resolve()
    here = Path(page.file.src_uri).parent

    def fix(m: re.Match[str]) -> str:
        raw = m.group(2)
        if raw.startswith(_SKIP):
            return m.group(0)
        path, sep, frag = raw.partition("#")
        if not path:
            return m.group(0)
        target = (where.parent / path).resolve()
        uri = _site_uri(target, docs_dir)
        new = os.path.relpath(uri, here.as_posix() or ".").replace(os.sep, "/")
        return f"{m.group(1)}{new}{sep}{frag}{m.group(3)}"

    return _LINK.sub(fix, markdown)

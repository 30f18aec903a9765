"""The import direction of the package, read from the source with ``ast`` (nothing is imported).

Layers, lowest first (a module may import its own layer's package and anything below it)::

    _version, _checks  <-  stats, runs  <-  masks  <-  models, data  <-  attribution  <-  augment
    <-  metrics, shift  <-  train, viz, integrations  <-  commands  <-  cli

Every import statement counts, wherever it is: at module level, inside a function (a lazy import),
inside a module-level ``__getattr__`` or an ``if __name__ == "__main__":`` block. Also: no import
cycle between modules, no ``importlib`` loading of reldrop's own modules, no private name (``_x``)
imported from another module. ``reldrop/__init__.py`` (the public API) may import anything; only
``commands`` and ``cli`` import it.
"""
from __future__ import annotations

import ast
import dis
import types
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "reldrop"

LAYERS: list[tuple[str, ...]] = [
    ("_version", "_checks", "_threads"),
    ("stats", "runs"),
    ("masks", "mixing"),
    ("models", "data"),
    ("attribution",),
    ("augment",),
    ("metrics", "shift"),
    ("train", "viz", "integrations"),
    ("commands",),
    ("cli",),
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}

def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _imports(mod: str) -> list[tuple[str, str | None, int]]:
    """``(imported module, imported name or None, line)`` for every import of a reldrop module in ``mod``."""
    path = MODULES[mod]
    tree = ast.parse(path.read_text(), str(path))
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out: list[tuple[str, str | None, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, None, node.lineno) for a in node.names if a.name.split(".")[0] == "reldrop"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "reldrop":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                out.append((sub, None, node.lineno) if sub in MODULES else (target, a.name, node.lineno))
    return out


def _layer(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the root package


EDGES = {mod: _imports(mod) for mod in MODULES}


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_imports_flow_down(mod: str) -> None:
    layer = _layer(mod)
    if layer is None:
        return
    assert layer in RANK, f"{mod}: package {layer!r} has no place in LAYERS (add it there)"
    bad = []
    for target, name, line in EDGES[mod]:
        t_layer = _layer(target)
        if t_layer is None:  # the root package (the public API) sits above everything but commands and cli
            if RANK[layer] < RANK["commands"]:
                bad.append(f"line {line}: imports the root package reldrop ({name or 'import reldrop'})")
            continue
        if t_layer != layer and RANK.get(t_layer, 99) >= RANK[layer]:
            bad.append(f"line {line}: {target} ({t_layer}, layer {RANK.get(t_layer)}) is not below "
                       f"{layer} (layer {RANK[layer]})")
    assert not bad, f"{mod} imports upward or sideways:\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per back edge of a depth-first search of ``graph`` (empty: the graph is acyclic)."""
    seen: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        seen[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if seen.get(t) == 1:
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in seen:
                visit(t)
        stack.pop()
        seen[m] = 2

    for m in sorted(graph):
        if m not in seen:
            visit(m)
    return cycles


def test_no_import_cycles() -> None:
    """No cycle at all, a package ``__init__`` and its submodules included."""
    graph = {m: {t for t, _, _ in EDGES[m] if t in MODULES and t != m} for m in MODULES}
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _bytecode_imports(mod: str) -> set[str]:
    """The reldrop modules ``mod`` imports, read from its compiled bytecode (every code object, so
    imports inside functions, methods and ``if`` blocks count): an independent check of the ``ast`` reader."""
    path = MODULES[mod]
    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
    out: set[str] = set()
    todo = [compile(path.read_text(), str(path), "exec")]
    while todo:
        code = todo.pop()
        todo += [c for c in code.co_consts if isinstance(c, types.CodeType)]
        ins = [i for i in dis.get_instructions(code) if i.opname not in ("CACHE", "EXTENDED_ARG")]
        for k, i in enumerate(ins):
            if i.opname != "IMPORT_NAME":
                continue
            level, fromlist = ins[k - 2].argval, ins[k - 1].argval
            base = pkg[: len(pkg) - (level - 1)] if level else []
            target = ".".join(base + ([i.argval] if i.argval else []))
            if target.split(".")[0] != "reldrop":
                continue
            names = [n for n in (fromlist or ()) if n != "*"]
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
            out.update(subs)
            if len(subs) < len(names) or not names:
                out.add(target)
    return {t for t in out if t in MODULES and t != mod}


def test_no_import_cycles_in_the_bytecode() -> None:
    graph = {m: _bytecode_imports(m) for m in MODULES}
    assert graph["reldrop.train.loop"] >= {"reldrop.runs", "reldrop.train.evaluate"}  # the reader sees imports
    assert any(t.startswith("reldrop.data") for t in graph["reldrop.train.loop"])  # one inside a function
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
    # the layer rule holds for the bytecode edges too
    bad = [f"{m} -> {t}" for m in graph for t in graph[m]
           if _layer(m) is not None and _layer(t) is not None and _layer(t) != _layer(m)
           and RANK.get(_layer(t), 99) >= RANK[_layer(m)]]
    assert not bad, "imports upward or sideways:\n" + "\n".join(sorted(bad))


def test_no_importlib() -> None:
    """Own modules are imported with import statements (lazily inside a function where start-up time
    matters), so that every edge is visible to the tests above; reldrop needs importlib for nothing else."""
    bad = [f"{mod} line {node.lineno}: {ast.unparse(node)}"
           for mod, path in MODULES.items() for node in ast.walk(ast.parse(path.read_text()))
           if isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
           and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")]
    assert not bad, "importlib loading:\n" + "\n".join(bad)


def test_no_private_names_across_modules() -> None:
    bad = [f"{mod} line {line}: from {target} import {name}"
           for mod in MODULES for target, name, line in EDGES[mod]
           if name is not None and name.startswith("_") and not name.startswith("__") and target != mod]
    assert not bad, "private names imported from another module:\n" + "\n".join(bad)


def _private_attribute_uses(mod: str) -> list[str]:
    """``alias._name`` where ``alias`` is bound to another reldrop module by an import in ``mod``."""
    tree = ast.parse(MODULES[mod].read_text())
    pkg = mod.split(".") if MODULES[mod].name == "__init__.py" else mod.split(".")[:-1]
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg[: len(pkg) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                if f"{target}.{a.name}" in MODULES:
                    aliases[a.asname or a.name] = f"{target}.{a.name}"
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in MODULES and a.asname:
                    aliases[a.asname] = a.name
    return [f"{mod} line {node.lineno}: {node.value.id}.{node.attr} ({aliases[node.value.id]})"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
            and node.attr.startswith("_") and not node.attr.startswith("__") and aliases[node.value.id] != mod]


def test_no_private_attributes_of_other_modules() -> None:
    bad = [use for mod in MODULES for use in _private_attribute_uses(mod)]
    assert not bad, "private names of another module used:\n" + "\n".join(bad)


def test_the_rules_can_fail() -> None:
    """The parser sees relative, absolute and nested imports (so the tests above can fail)."""
    edges = {t for t, _, _ in EDGES["reldrop.train.loop"]}
    assert "reldrop.runs" in edges and "reldrop.train.evaluate" in edges
    assert any(t.startswith("reldrop.data") for t in edges)  # imported inside a function

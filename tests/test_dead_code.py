"""No dead private code in ``src/``: a module-level private function, class or constant (``_x``) that
nothing in its own module refers to is unreachable (``tests/test_layering.py`` forbids using another
module's private names). Read with ``ast``; decorated definitions count as used (a decorator may
register them). Unused imports and local variables are ruff's (F401, F841)."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "reldrop"


def _private_definitions(tree: ast.Module) -> dict[str, int]:
    defs: dict[str, int] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.decorator_list:
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names = [node.target.id]
        else:
            continue
        defs.update({n: node.lineno for n in names if n.startswith("_") and not n.startswith("__")})
    return defs


def _references(tree: ast.Module) -> set[str]:
    """Names loaded, attributes read and strings (``__all__``, ``getattr``) anywhere in ``tree``."""
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            out.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.add(node.value)
    return out


def dead_private_names(source: str) -> list[str]:
    tree = ast.parse(source)
    used = _references(tree)
    return [f"line {line}: {name}" for name, line in _private_definitions(tree).items() if name not in used]


def test_no_dead_private_code() -> None:
    bad = [f"{path.relative_to(SRC.parent)} {d}" for path in sorted(SRC.rglob("*.py"))
           for d in dead_private_names(path.read_text())]
    assert not bad, "private module-level names nothing uses (delete them):\n" + "\n".join(bad)


def test_the_check_can_fail() -> None:
    source = ("import torch.nn as nn\n\n_USED = 1\n_UNUSED = 2\n\n\ndef _dead(m: nn.Module) -> bool:\n"
              "    return type(m) is nn.ReLU\n\n\n@register\ndef _registered() -> None: ...\n\n\n"
              "def public() -> int:\n    return _USED\n")
    assert dead_private_names(source) == ["line 4: _UNUSED", "line 7: _dead"]

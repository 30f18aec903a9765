"""griffe extension for the API reference: Sphinx roles in docstrings become cross-references.

The package's docstrings name other objects the Sphinx way (``:func:`lrp_coverage```,
``:class:`~reldrop.augment.RelDrop```, ``:func:`._trace.trace_model```); Google-style rendering would
print the role as text. Each role becomes an *optional* autorefs reference: a link where the target has
a page in the reference, the name in code (with its full path as a tooltip) where it has none, and never
a build warning. ``~`` shows only the last component, as in Sphinx.

mkdocs.yml: ``handlers: python: options: extensions: [docs/hooks/griffe_roles.py]``.
"""
from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`(?P<target>[^`]+)`")


def _canonical(collection: Any, path: str) -> str | None:
    """The path where the object ``path`` names is defined (a re-export: its source); None if none."""
    try:
        found = collection[path]
        for _ in range(16):  # aliases are not resolved yet when on_package runs: follow the imports
            if not found.is_alias:
                return found.path
            found = collection[found.target_path]
    except (KeyError, ValueError, AttributeError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        pass
    return None


def _candidates(obj: griffe.Object, name: str) -> list[str]:
    """Full paths ``name`` may mean, seen from ``obj``'s docstring (best first)."""
    module = obj if obj.is_module else obj.module
    if name.startswith("."):  # relative to the module's package, as Python imports read it
        dots = len(name) - len(name.lstrip("."))
        base = module.path if module.is_init_module else module.path.rpartition(".")[0]
        for _ in range(dots - 1):
            base = base.rpartition(".")[0]
        return [f"{base}.{name.lstrip('.')}"]
    out = []
    head, _, rest = name.partition(".")
    for scope in (obj, obj.parent, module):
        if scope is None:
            continue
        try:
            full = scope.resolve(head)
        except (griffe.NameResolutionError, AttributeError, KeyError):
            continue
        out.append(f"{full}.{rest}" if rest else full)
    out += [name, f"{module.path}.{name}"]
    return out


def _rewrite(text: str, obj: griffe.Object, collection: Any) -> str:
    def repl(m: re.Match[str]) -> str:
        target = m["target"].strip()
        short = target.startswith("~")
        target = target.lstrip("~").rstrip("()")
        shown = target.rpartition(".")[2] if short else target.lstrip(".")
        paths = _candidates(obj, target)
        # the defining path: mkdocstrings registers it for an object rendered under a re-exported name too
        path = next((c for p in paths if (c := _canonical(collection, p))), paths[0])
        return f'<autoref identifier="{path}" optional><code>{shown}</code></autoref>'

    return ROLE.sub(repl, text)


class SphinxRoles(griffe.Extension):
    """Rewrites the roles of every docstring in the loaded package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        collection = loader.modules_collection
        stack: list[griffe.Object] = [pkg]
        while stack:
            obj = stack.pop()
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = _rewrite(obj.docstring.value, obj, collection)
            stack.extend(m for m in obj.members.values() if not m.is_alias)

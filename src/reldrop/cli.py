"""The ``reldrop`` command: ``reldrop <subcommand> ...``.

Each subcommand lives in ``reldrop.commands.<name>`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

SUBCOMMANDS = ("demo", "train", "compare", "evaluate", "report")


def _available() -> dict[str, Any]:
    """The subcommand modules, imported here (not at module import: main() sets the thread policy first)."""
    from .commands import compare, demo, evaluate, report, train

    modules = {"demo": demo, "train": train, "compare": compare, "evaluate": evaluate, "report": report}
    return {name: modules[name] for name in SUBCOMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reldrop", description="Relevance-driven Input Dropout: demo, training and evaluation."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module in _available().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from reldrop._threads import prefer_passive_openmp

    prefer_passive_openmp()  # before any subcommand loads torch; see reldrop._threads
    args = build_parser().parse_args(argv)
    from reldrop.commands._signals import sigterm_as_interrupt

    with sigterm_as_interrupt():  # `kill PID` releases run locks like Ctrl-C; see reldrop.commands._signals
        return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

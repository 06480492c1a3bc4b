"""One command line for a package, assembled from the modules that own each sub-command.

Each command module exposes ``register(subparsers)``: it adds its sub-parser(s) and sets
``func`` (taking the parsed ``argparse.Namespace``, returning an exit code) with
``set_defaults``. Keeping each command next to the code it drives keeps a module one idea.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pipeline.progress import close_bars


class UserError(Exception):
    """A problem the user can fix; the CLI prints its message as one sentence, no traceback."""


def build_parser(prog: str, description: str, modules: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--workspace", help="workspace folder (default: $STUDIO_WORKSPACE or ./workspace)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules:
        importlib.import_module(name).register(subparsers)
    _accept_workspace_everywhere(subparsers)
    return parser


def _accept_workspace_everywhere(subparsers: argparse._SubParsersAction) -> None:
    """Let ``--workspace`` also follow the (sub-)sub-command: ``python -m pipeline demo --workspace W``."""
    for sub in subparsers.choices.values():
        sub.add_argument("--workspace", default=argparse.SUPPRESS, help="workspace folder")
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                _accept_workspace_everywhere(action)


def main(prog: str, description: str, modules: Sequence[str], argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the chosen command, turn a :class:`UserError` into exit code 2."""
    parser = build_parser(prog, description, modules)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        close_bars()
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        close_bars()
        print("interrupted", file=sys.stderr)
        return 130

"""The ``diva`` command line: ``diva <command> --help`` explains each command."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

_COMMAND_MODULES = ("_derivative", "_curation", "_features")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="diva",
        description="Dataset derivative (DIVA): find harmful training samples, "
        "reweight a dataset, pick useful samples from a pool, tune augmentation.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log progress (-v) or debug details (-vv) to stderr")
    subparsers = parser.add_subparsers(dest="command", metavar="command")
    for name in _COMMAND_MODULES:
        importlib.import_module(f"diva_jax.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"diva {args.command}: error: {err}", file=sys.stderr)
        return 2

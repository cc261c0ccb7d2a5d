"""The ``flamecast`` command line.

Arguments are parsed once, here. Each subcommand is a module of this package listed in
COMMANDS that defines ``add_parser(subparsers)`` and ``run(args) -> int``; a module is
imported only to build the parser, and its heavy imports happen inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

COMMANDS = (
    "plugins_cmd",
    "driver_cmd",
    "generator_cmd",
    "serve_cmd",
    "record_cmd",
    "weights_cmd",
    "bench_cmd",
    "train_cmd",
    "eval_cmd",
)


class UsageError(Exception):
    """A mistake in the command line; printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flamecast", description="Real-time multi-view talking-head streaming.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"{__package__}.{name}")
        p = module.add_parser(sub)
        p.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except UsageError as exc:
        parser.exit(2, f"flamecast: error: {exc}\n")
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Run the package's copy of this module, so that subcommands raising
    # flamecast.server.cli.UsageError are caught by the same class (python -m runs a second copy).
    from flamecast.server.cli import main as _main

    sys.exit(_main())

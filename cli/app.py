"""Parsing ``flamecast``'s command line and running the chosen command.

flamecast's own commands (serve, generator, driver, record, bench, plugins) are ``Command``
objects in this package; every other command comes from a plugin through the
``flamecast_register_commands`` hook (the text driver's ``train text`` and ``eval text``,
flame2video's ``weights``, ...). Two-word commands are grouped under their verb:
``flamecast train --help`` lists every plugin's ``train`` target.
"""

from __future__ import annotations

import argparse
import logging
from typing import Iterable, Sequence

from flamecast.plugins import Command, CommandError

from . import bench, driver, generator, plugins_list, record, serve

HOST_COMMANDS: tuple[Command, ...] = (
    plugins_list.COMMAND,
    driver.COMMAND,
    generator.COMMAND,
    serve.COMMAND,
    record.COMMAND,
    bench.COMMAND,
)

VERB_HELP = {
    "train": "train a plugin's models (flamecast train TARGET --help)",
    "eval": "evaluate a plugin's models (flamecast eval TARGET --help)",
}



def plugin_commands() -> list[Command]:
    """Commands registered by the installed plugins (failures are listed by ``flamecast plugins``)."""
    from flamecast.plugins.manager import make_plugin_host

    host = make_plugin_host(reserved_commands=[c.path[0] for c in HOST_COMMANDS])
    return [cmd for _, cmd in host.commands.items()]


def _add(sub: argparse._SubParsersAction, name: str, command: Command) -> None:
    p = sub.add_parser(name, help=command.help, description=command.description or command.help)
    command.configure(p)
    p.set_defaults(run=command.run)


def build_parser(commands: Iterable[Command] | None = None) -> argparse.ArgumentParser:
    """The whole parser: host commands, then plugin commands (one word, or grouped by verb)."""
    parser = argparse.ArgumentParser(prog="flamecast", description="Real-time multi-view talking-head streaming.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", required=True)
    extra = plugin_commands() if commands is None else list(commands)
    for command in (*HOST_COMMANDS, *[c for c in extra if len(c.path) == 1]):
        _add(sub, command.path[0], command)
    groups: dict[str, argparse._SubParsersAction] = {}
    for command in sorted((c for c in extra if len(c.path) == 2), key=lambda c: c.path):
        verb, target = command.path
        if verb not in groups:
            group = sub.add_parser(verb, help=VERB_HELP.get(verb, f"{verb} (plugin commands)"))
            groups[verb] = group.add_subparsers(dest=f"{verb}_target", metavar="TARGET", required=True)
        _add(groups[verb], target, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except CommandError as exc:
        parser.exit(2, f"flamecast: error: {exc}\n")
    except KeyboardInterrupt:
        return 130

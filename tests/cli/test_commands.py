"""Plugin commands: registered through the hook, grouped by verb, clashes reported, errors exit 2."""

from __future__ import annotations

import pytest

from flamecast.cli import build_parser, main
from flamecast.cli.app import HOST_COMMANDS
from flamecast.plugins import Command, CommandError, hookimpl
from flamecast.plugins.manager import make_plugin_host

RAN: list[tuple[str, int]] = []


def _configure(parser):
    parser.add_argument("--times", type=int, default=1)


def _run(args) -> int:
    if args.times < 1:
        raise CommandError("--times must be at least 1")
    RAN.append((args.command_name, args.times))
    return 0


class Greeter:
    @hookimpl
    def flamecast_register_commands(self, register):
        register(Command(path=("greet",), help="say hello", configure=_configure, run=_run))
        register(Command(path=("train", "greeter"), help="train the greeter", configure=_configure, run=_run))


class Clasher:
    @hookimpl
    def flamecast_register_commands(self, register):
        register(Command(path=("greet",), help="a second greet", run=_run))
        register(Command(path=("serve",), help="not allowed: the host's own", run=_run))
        register("not a command")


def _host(*plugins):
    return make_plugin_host(load_entry_points=False, extra_plugins=plugins,
                            reserved_commands=[c.path[0] for c in HOST_COMMANDS])


def test_registered_commands_become_subcommands_grouped_by_verb():
    host = _host(("greeter", Greeter()))
    assert host.commands.names() == ["greet", "train greeter"]
    parser = build_parser([c for _, c in host.commands.items()])
    RAN.clear()
    args = parser.parse_args(["train", "greeter", "--times", "3"])
    assert args.run(args) == 0 and RAN == [("train", 3)]
    args = parser.parse_args(["greet"])
    assert args.run(args) == 0 and RAN[-1] == ("greet", 1)
    assert {"serve", "plugins", "bench"} <= set(parser._subparsers._group_actions[0].choices)


def test_clashes_and_wrong_objects_are_reported_and_skipped():
    host = _host(("greeter", Greeter()), ("clasher", Clasher()))
    assert host.commands.owners[("greet",)] == "greeter"
    assert ("serve",) not in host.commands.owners
    errors = " | ".join(f.error for f in host.failures if f.name == "clasher")
    assert "already registered by 'greeter'" in errors
    assert "one of flamecast's own commands" in errors
    assert "is not a flamecast.plugins.Command" in errors


@pytest.mark.parametrize("path", [(), ("Train",), ("a", "b", "c"), ("bad word",)])
def test_command_paths_are_checked(path):
    with pytest.raises(ValueError, match="one or two lower-case words"):
        Command(path=path, help="x", run=_run)


def test_built_in_plugins_own_their_commands(capsys):
    host = make_plugin_host()
    owners = {c: host.commands.owners[tuple(c.split())] for c in host.commands.names()}
    assert owners["train text"] == owners["eval text"] == "text"
    assert owners["weights"] == "flame2video"
    with pytest.raises(SystemExit) as exc:
        main(["train", "text", "--steps", "0"])
    assert exc.value.code == 2 and "must be positive" in capsys.readouterr().err

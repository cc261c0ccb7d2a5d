"""``flamecast plugins``: what is installed, what it registers, what failed to load."""

from __future__ import annotations

import argparse
import json

from flamecast.plugins import Command, CommandError


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print JSON")


def run(args: argparse.Namespace) -> int:
    from flamecast.plugins.manager import make_plugin_host

    summary = make_plugin_host().as_dict()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    print("plugins:")
    for p in summary["plugins"]:
        print(f"  {p['name']} {p['version'] or ''}  hooks: {', '.join(p['hooks'])}")
    for kind in ("drivers", "generators", "outputs"):
        print(f"{kind}:")
        for item in summary[kind]:
            print(f"  {item['name']:<16} {item['description']}  [{item['plugin']}]")
    print("commands:")
    for item in summary["commands"]:
        print(f"  {item['name']:<18} {item['help']}  [{item['plugin']}]")
    for f in summary["failures"]:
        print(f"failed: {f['name']}: {f['error']}")
    return 0


COMMAND = Command(
    path=("plugins",),
    help="list installed plugins and what they register: drivers, generators, outputs, commands",
    configure=configure,
    run=run,
)

"""``python -m flamecast.renderer.flame2video.training train|data ...``: the same commands as
``flamecast train flame2video`` and ``flamecast data flame2video``, for machines where only this
package is installed (a GPU host with carried wheels)."""

from __future__ import annotations

import argparse
import sys

from flamecast.plugins import CommandError

from .commands import commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flamecast.renderer.flame2video.training")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for cmd in commands():
        p = verbs.add_parser(cmd.path[0], help=cmd.help, description=cmd.description or cmd.help)
        cmd.configure(p)
        p.set_defaults(command=cmd)
    args = parser.parse_args(argv)
    try:
        return args.command.run(args)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

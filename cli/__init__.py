"""flamecast's command line (``flamecast``): argument parsing and the host's own commands.

Plugins add commands through the ``flamecast_register_commands`` hook; this package lists and
parses them and never imports a built-in plugin to do so.
"""

from .app import build_parser, main

__all__ = ["build_parser", "main"]

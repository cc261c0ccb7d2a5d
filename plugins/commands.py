"""Command-line commands that plugins contribute.

A plugin registers ``Command`` objects through the ``flamecast_register_commands`` hook; the
host's command line (``flamecast.cli``) lists and parses them. A command's path is one word
(``flamecast doctor``) or two: a verb the host groups plugins under and the plugin's own target
(``flamecast train text``, ``flamecast eval microphone``). Heavy imports belong inside ``run``,
so that building the parser stays fast.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Callable

_WORD = re.compile(r"^[a-z][a-z0-9-]*$")


class CommandError(Exception):
    """A mistake the user can fix (a bad flag value, a missing file). The command line prints
    the message without a traceback and exits with status 2."""


@dataclass(frozen=True)
class Command:
    """One command a plugin adds to ``flamecast``.

    Attributes:
        path: ``("doctor",)`` for ``flamecast doctor``, or ``("train", "text")`` for
            ``flamecast train text``: a verb and a target. Words are lower case, digits and ``-``.
        help: one line for the command list.
        run: called with the parsed ``argparse.Namespace``; returns the exit status.
        configure: adds the command's arguments to its ``argparse.ArgumentParser``.
        description: the longer text of ``--help`` (defaults to ``help``).
    """

    path: tuple[str, ...]
    help: str
    run: Callable[[argparse.Namespace], int]
    configure: Callable[[argparse.ArgumentParser], None] = lambda parser: None
    description: str = ""

    def __post_init__(self) -> None:
        if not 1 <= len(self.path) <= 2 or not all(isinstance(w, str) and _WORD.match(w) for w in self.path):
            raise ValueError(f"command path {self.path!r} must be one or two lower-case words")
        if not callable(self.run) or not callable(self.configure):
            raise TypeError(f"command {' '.join(self.path)!r}: run and configure must be callables")

    @property
    def name(self) -> str:
        return " ".join(self.path)

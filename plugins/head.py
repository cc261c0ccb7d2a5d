"""The expression space drivers speak in.

The built-in head (``flamecast.renderer.head.BuiltinHead``) is the default head model and the
space the shipped driver weights are trained in. Its expression channels are named; the names
and their order are part of the plugin contract and live here so that drivers never need to
import the renderer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_EXPRESSION = 400  # FLAME has 100 expression components (and 300 shape); more is not a head

BUILTIN_EXPRESSION_NAMES: tuple[str, ...] = (
    "smile",
    "frown",
    "brow_raise",
    "brow_furrow",
    "eye_blink_left",
    "eye_blink_right",
    "eye_wide",
    "mouth_pucker",
    "mouth_stretch",
    "cheek_puff",
    "sneer",
    "lip_press",
    "mouth_funnel",
    "eye_squint",
    "brow_inner_raise",
    "upper_lip_raise",
)


@dataclass(frozen=True)
class HeadSpace:
    """What a driver needs to know about the head it drives.

    Attributes:
        name: the head model ("builtin", "flame2020", "flame2023").
        n_expression: number of expression coefficients a frame carries.
        expression_names: channel names, or None when the channels are unnamed PCA components.
        has_eyelids: whether the head deforms with the ``eyelids`` field.
    """

    name: str
    n_expression: int
    expression_names: tuple[str, ...] | None = None
    has_eyelids: bool = True

    def index(self, channel: str) -> int:
        """Index of a named expression channel; KeyError when the head does not have it."""
        if self.expression_names is None or channel not in self.expression_names:
            raise KeyError(f"head {self.name!r} has no expression channel {channel!r}")
        return self.expression_names.index(channel)

    def to_wire(self) -> dict[str, Any]:
        """The head space as plain JSON values (a generator worker reports its sessions' heads)."""
        names = None if self.expression_names is None else list(self.expression_names)
        return {"name": self.name, "n_expression": self.n_expression, "expression_names": names,
                "has_eyelids": self.has_eyelids}

    @classmethod
    def from_wire(cls, meta: Any) -> HeadSpace:
        """The head space from ``to_wire``'s form; ValueError for anything else."""
        if not isinstance(meta, dict):
            raise ValueError("a head space is an object")
        name, n, names = meta.get("name"), meta.get("n_expression"), meta.get("expression_names")
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise ValueError("a head space's name is a short string")
        if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= MAX_EXPRESSION:
            raise ValueError(f"a head space has 1 to {MAX_EXPRESSION} expression channels")
        if names is not None:
            if not isinstance(names, list) or len(names) != n or not all(isinstance(x, str) for x in names):
                raise ValueError("a head space's expression names are one string per channel")
            names = tuple(names)
        return cls(name=name, n_expression=n, expression_names=names, has_eyelids=bool(meta.get("has_eyelids", True)))


def builtin_head_space() -> HeadSpace:
    """The default head space: the built-in head's named channels."""
    names = BUILTIN_EXPRESSION_NAMES
    return HeadSpace(name="builtin", n_expression=len(names), expression_names=names)


HEAD_NAMES: tuple[str, ...] = ("builtin", "flame2020", "flame2023")
FLAME_EXPRESSIONS = 100


def named_head_space(name: str) -> HeadSpace:
    """The head space a command's ``--head`` choice (``HEAD_NAMES``) names: the built-in head's,
    or FLAME's 100 unnamed expression components."""
    return builtin_head_space() if name == "builtin" else HeadSpace(name, FLAME_EXPRESSIONS, None)

"""The expression space drivers speak in.

The built-in head (``flamecast.renderer.head.BuiltinHead``) is the default head model and the
space the shipped driver weights are trained in. Its expression channels are named; the names
and their order are part of the plugin contract and live here so that drivers never need to
import the renderer.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def builtin_head_space() -> HeadSpace:
    """The default head space: the built-in head's named channels."""
    names = BUILTIN_EXPRESSION_NAMES
    return HeadSpace(name="builtin", n_expression=len(names), expression_names=names)

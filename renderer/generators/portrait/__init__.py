"""The ``portrait`` generator: the photograph itself animated in 2.5D (docs/portrait.md)."""

from .generator import PortraitGenerator, PortraitOptions

__all__ = ["PortraitGenerator", "PortraitOptions"]

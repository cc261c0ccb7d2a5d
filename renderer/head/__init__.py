"""Head models with FLAME's parameter layout: the built-in open head and the licensed FLAME model.

    from flamecast.renderer.head import load_head
    head = load_head()                      # the built-in head (default)
    out = head(pose=torch.zeros(1, 15))     # HeadOutput(vertices, joints, landmarks)
"""

from __future__ import annotations

from .base import HeadModel, HeadOutput, SkinnedHead
from .builtin import BuiltinHead
from .flame import FlameModel, default_flame_path


def load_head(name: str = "builtin", path: str | None = None) -> HeadModel:
    """A head model by name: "builtin", or "flame" (``path`` = generic_model.pkl, else the default place)."""
    if name == "builtin":
        return BuiltinHead(path)
    if name in ("flame", "flame2020", "flame2023"):
        return FlameModel(path, name=None if name == "flame" else name)
    raise ValueError(f"unknown head model {name!r}; choose 'builtin' or 'flame'")


__all__ = ["BuiltinHead", "FlameModel", "HeadModel", "HeadOutput", "SkinnedHead", "default_flame_path", "load_head"]

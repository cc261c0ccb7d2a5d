"""How a session's carried frames enter a window: one strategy object per session and carry mode.

A window holds W frames of which K = W - S were denoised by the previous window. The denoising
loop (``FLAME2VideoPipeline.denoise_windows``) is the same for every mode; a ``Carry`` decides
what differs and keeps the session's carried state between windows. Per window the stream calls
``window_condition`` (which frames go in), the loop calls ``start``, ``temporal_context``,
``before_step`` and ``after_step``, and the stream calls ``finish`` (what to keep, what to
decode).

* ``RenoiseCarry`` (``renoise``): the window runs all W frames; at every step the carried
  frames' latents are replaced by their final latents re-noised (noise fixed for the window) to
  that step's level, and set back to the final latents at the end.
* ``CachedContextCarry`` (``cache``, temporal.py): the window runs the S new frames only; the
  motion modules read what the carried frames gave them at the same step of the previous window
  and record what the next window needs.

The first window has nothing to carry: K copies of its first frame's condition go in front of
its S new frames and all W frames are denoised from noise. With S = W nothing is carried and
both modes are the same.
"""

from __future__ import annotations

from typing import Any

import torch

from .config import CarryMode, Profile

Context = dict[str, tuple[torch.Tensor, ...]]


class Carry:
    """One session's carried frames (none: S = W); the hooks called per window, in order."""

    def __init__(self, window: int, stride: int) -> None:
        self.k = window - stride

    def window_condition(self, cond_new: torch.Tensor) -> torch.Tensor:
        """The FLAME features (F, V, C, h, w) of the frames this window denoises."""
        return torch.cat([cond_new[:1].expand(self.k, *cond_new.shape[1:]), cond_new]) if self.k else cond_new

    def next_window(self, stride: int) -> tuple[int, str]:
        """The next window's frame count and what its motion modules do ("off", "record",
        "use"): windows that agree on both can share one batched UNet call."""
        return self.k + stride, "off"

    def temporal_context(self, step: int) -> Context | None | bool:
        """What the motion modules read at ``step``: False (no carry layers), None (record
        only) or the carried frames' context."""
        return False

    def start(self, latents: torch.Tensor, steps: int) -> None:
        """The window's initial noise is drawn; ``steps`` steps follow."""

    def before_step(self, latents: torch.Tensor, t: torch.Tensor, scheduler: Any) -> None:
        """Adjust the window's latents (in place) before the UNet call at timestep ``t``."""

    def after_step(self, step: int, recorded: Context) -> None:
        """What the motion modules recorded at ``step`` (empty when they record nothing)."""

    def finish(self, latents: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Keep what the next window needs; return the latents of the S new frames."""
        return latents[self.k:]


class RenoiseCarry(Carry):
    """``renoise``: the carried frames' final latents and conditions, re-noised at every step."""

    def __init__(self, window: int, stride: int) -> None:
        super().__init__(window, stride)
        self.latents: torch.Tensor | None = None  # (K, V, 4, h, w) final latents
        self.cond: torch.Tensor | None = None  # (K, V, C, h, w) their FLAME features
        self._noise: torch.Tensor | None = None

    def window_condition(self, cond_new: torch.Tensor) -> torch.Tensor:
        return super().window_condition(cond_new) if self.cond is None else torch.cat([self.cond, cond_new])

    def start(self, latents: torch.Tensor, steps: int) -> None:
        self._noise = None if self.latents is None else latents[:self.latents.shape[0]].clone()

    def before_step(self, latents: torch.Tensor, t: torch.Tensor, scheduler: Any) -> None:
        if self.latents is not None:
            k = self.latents.shape[0]
            latents[:k] = scheduler.add_noise(self.latents.float(), self._noise, t.repeat(k))

    def finish(self, latents: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if self.latents is not None:
            latents[:self.latents.shape[0]] = self.latents.float()
        if self.k:
            self.latents, self.cond = latents[-self.k:].clone(), cond[-self.k:].clone()
        self._noise = None
        return latents[self.k:]


class CachedContextCarry(Carry):
    """``cache``: the motion modules' per-step context of the carried frames (temporal.py)."""

    def __init__(self, window: int, stride: int) -> None:
        super().__init__(window, stride)
        self.context: list[Context] | None = None  # one entry per denoising step
        self._next: list[Context] = []

    def window_condition(self, cond_new: torch.Tensor) -> torch.Tensor:
        return super().window_condition(cond_new) if self.context is None else cond_new

    def next_window(self, stride: int) -> tuple[int, str]:
        return (self.k + stride, "record") if self.context is None else (stride, "use")

    def temporal_context(self, step: int) -> Context | None:
        return None if self.context is None else self.context[step]

    def start(self, latents: torch.Tensor, steps: int) -> None:
        if self.context is not None and len(self.context) != steps:
            raise ValueError(f"context has {len(self.context)} steps; the profile samples {steps}")
        self._next = []

    def after_step(self, step: int, recorded: Context) -> None:
        self._next.append(recorded)

    def finish(self, latents: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        first = self.context is None
        self.context, self._next = self._next, []
        return latents[self.k:] if first else latents


CARRIES: dict[CarryMode, type[Carry]] = {"renoise": RenoiseCarry, "cache": CachedContextCarry}


def make_carry(profile: Profile) -> Carry:
    """A fresh carry for a session sampling with ``profile`` (nothing carried when S = W)."""
    if profile.window == profile.stride:
        return Carry(profile.window, profile.stride)
    return CARRIES[profile.carry_mode](profile.window, profile.stride)

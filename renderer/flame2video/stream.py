"""Sliding-window streaming over a FLAME2VideoPipeline (no FLAME, no sockets: plain tensors).

Frames arrive one or a few at a time. Each window holds W frames: the last W - S frames of the
previous window (their final latents carried over, see ``FLAME2VideoPipeline.denoise``) and S
new ones. A window runs as soon as S new frames are buffered and yields those S frames.

How the carried frames take part depends on the profile's ``carry_mode``: "renoise" keeps
their final latents and conditions and denoises them again with the new frames
(``FLAME2VideoPipeline.denoise``); "cache" keeps the motion modules' per-step context and
denoises the new frames only (``FLAME2VideoPipeline.denoise_cached``, temporal.py).

The first window has nothing to carry: it is filled with W - S copies of its first frame's
condition in front of the S new frames and denoised from noise.

Latency: a frame waits for the S - 1 frames after it (at 30 frames/s and S = 4 that is up to
100 ms for the oldest frame of a window, 0 for the newest), then for the window's compute.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from .pipeline import FLAME2VideoPipeline, ReferenceState

Conditioner = Callable[[Sequence[Any]], torch.Tensor]  # items -> renders (n, V, 3, H, W) in [0, 1]


class WindowStream:
    """Per-session streaming state: the frame buffer and the carried latents/conditions."""

    def __init__(self, pipeline: FLAME2VideoPipeline, reference: ReferenceState, conditioner: Conditioner,
                 *, seed: int = 0) -> None:
        self.pipeline, self.reference, self.conditioner = pipeline, reference, conditioner
        self.window, self.stride = pipeline.profile.window, pipeline.profile.stride
        self.pending: list[Any] = []
        self.carry_latents: torch.Tensor | None = None
        self.carry_cond: torch.Tensor | None = None
        self.context: list | None = None  # carry_mode "cache": per-step temporal context
        self.windows = 0
        self.generator = torch.Generator(device=pipeline.device).manual_seed(seed)

    def push(self, items: Sequence[Any]) -> list[tuple[Any, torch.Tensor]]:
        """Buffer ``items``; return (item, views (V, H, W, 3) uint8) for every finished frame."""
        self.pending.extend(items)
        out: list[tuple[Any, torch.Tensor]] = []
        while len(self.pending) >= self.stride:
            batch, self.pending = self.pending[: self.stride], self.pending[self.stride:]
            out.extend(self._run_window(batch))
        return out

    def _run_window(self, items: list[Any]) -> list[tuple[Any, torch.Tensor]]:
        with self.pipeline.timer.stage("window"):
            return self._window(items)

    def _window(self, items: list[Any]) -> list[tuple[Any, torch.Tensor]]:
        p = self.pipeline
        with p.timer.stage("rasterize"):
            renders = self.conditioner(items)
        cond_new = p.encode_conditions(renders)
        k = self.window - self.stride
        if k and p.profile.carry_mode == "cache":
            return self._run_cached(items, cond_new, k)
        if self.carry_cond is None:
            cond = torch.cat([cond_new[:1].expand(k, *cond_new.shape[1:]), cond_new])
        else:
            cond = torch.cat([self.carry_cond, cond_new])
        latents = p.denoise(cond, self.reference, self.carry_latents, self.generator)
        if k:
            self.carry_latents, self.carry_cond = latents[-k:].clone(), cond[-k:].clone()
        self.windows += 1
        images = p.decode(latents[k:])
        return list(zip(items, images))

    def _run_cached(self, items: list[Any], cond_new: torch.Tensor, k: int) -> list[tuple[Any, torch.Tensor]]:
        p = self.pipeline
        first = self.context is None
        cond = torch.cat([cond_new[:1].expand(k, *cond_new.shape[1:]), cond_new]) if first else cond_new
        latents, self.context = p.denoise_cached(cond, self.reference, self.context, self.generator)
        self.windows += 1
        images = p.decode(latents[k:] if first else latents)
        return list(zip(items, images))

"""Sliding-window streaming over a FLAME2VideoPipeline (no FLAME, no sockets: plain tensors).

Frames arrive one or a few at a time. Each window holds W frames: the last W - S frames of the
previous window (their final latents carried over, see ``FLAME2VideoPipeline.denoise``) and S
new ones. A window runs as soon as S new frames are buffered and yields those S frames.

How the carried frames take part depends on the profile's ``carry_mode``: a ``carry.Carry``
strategy per session keeps them ("renoise": their final latents and conditions, denoised again
with the new frames; "cache": the motion modules' per-step context, and only the new frames
are denoised; temporal.py). Several sessions of one profile can run their windows together
(``run_windows``): one batched UNet call per step.

Latency: a frame waits for the S - 1 frames after it (at 30 frames/s and S = 4 that is up to
100 ms for the oldest frame of a window, 0 for the newest), then for the window's compute.
With a ``conditioning.ConditioningStage`` (the generator gives one on a GPU) the frames' FLAME
renderings are drawn as they arrive, beside the previous window's denoising.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch

from .carry import CachedContextCarry, RenoiseCarry, make_carry
from .conditioning import ConditioningStage, Renders
from .pipeline import FLAME2VideoPipeline, ReferenceState, WindowJob

Conditioner = Callable[[Sequence[Any]], torch.Tensor]  # items -> renders (n, V, 3, H, W) in [0, 1]


class WindowStream:
    """Per-session streaming state: the frame buffer and the carried frames (a ``Carry``)."""

    def __init__(self, pipeline: FLAME2VideoPipeline, reference: ReferenceState, conditioner: Conditioner,
                 *, seed: int = 0, stage: ConditioningStage | None = None) -> None:
        self.pipeline, self.reference, self.conditioner = pipeline, reference, conditioner
        self.window, self.stride = pipeline.profile.window, pipeline.profile.stride
        self.pending: list[Any] = []
        self.renders = Renders(conditioner, stage)  # drawn as frames arrive, with a stage
        self.carry = make_carry(pipeline.profile)
        self.windows = 0
        self.generator = torch.Generator(device=pipeline.device).manual_seed(seed)

    @property
    def carry_latents(self) -> torch.Tensor | None:
        """``renoise``: the carried frames' final latents (None before the first window)."""
        return self.carry.latents if isinstance(self.carry, RenoiseCarry) else None

    @property
    def context(self) -> list | None:
        """``cache``: the carried frames' per-step temporal context (None before the first window)."""
        return self.carry.context if isinstance(self.carry, CachedContextCarry) else None

    def add(self, items: Sequence[Any]) -> None:
        """Buffer ``items`` (their renderings start now, with a conditioning stage)."""
        self.pending.extend(items)
        self.renders.add(items)

    def push(self, items: Sequence[Any]) -> list[tuple[Any, torch.Tensor]]:
        """Buffer ``items``; return (item, views (V, H, W, 3) uint8) for every finished frame."""
        self.add(items)
        out: list[tuple[Any, torch.Tensor]] = []
        while self.ready():
            out.extend(run_windows([self])[0])
        return out

    def ready(self) -> bool:
        """A window's worth of frames is buffered."""
        return len(self.pending) >= self.stride

    def batch_key(self) -> tuple:
        """Streams with equal keys can run their next windows in one batched call."""
        return (id(self.pipeline), *self.carry.next_window(self.stride))

    def prepare(self) -> tuple[list[Any], WindowJob]:
        """Take the next window's frames and build its denoising job."""
        p = self.pipeline
        items, self.pending = self.pending[: self.stride], self.pending[self.stride:]
        with p.timer.stage("rasterize"):  # with a stage: the wait for what is not drawn yet
            renders = self.renders.take(items)
        cond = self.carry.window_condition(p.encode_conditions(renders))
        return items, WindowJob(cond, self.reference, self.carry, self.generator)

    def finish(self, items: list[Any], job: WindowJob, latents: torch.Tensor) -> list[tuple[Any, torch.Tensor]]:
        """Keep the carried frames, decode the new ones."""
        self.windows += 1
        images = self.pipeline.decode(self.carry.finish(latents, job.cond))
        return list(zip(items, images))


def run_windows(streams: Sequence[WindowStream], rows: int | None = None) -> list[list[tuple[Any, torch.Tensor]]]:
    """The next window of every stream (each ``ready()``, all with one ``batch_key()``), their
    UNet calls batched; returns each stream's finished frames.

    ``rows`` pads the batch to that many sessions (compiled graphs exist for a few batch sizes
    only) with copies of the last window whose results are dropped and whose carry is a copy."""
    pipe = streams[0].pipeline
    with pipe.timer.stage("window"):
        prepared = [s.prepare() for s in streams]
        jobs = [job for _, job in prepared]
        jobs += [_padding(jobs[-1]) for _ in range((rows or len(jobs)) - len(jobs))]
        latents = pipe.denoise_windows(jobs)
        return [s.finish(items, job, x) for s, (items, job), x in zip(streams, prepared, latents)]


def _padding(job: WindowJob) -> WindowJob:
    generator = torch.Generator(device=job.cond.device).manual_seed(0)
    return WindowJob(job.cond, job.reference, copy.copy(job.carry), generator)

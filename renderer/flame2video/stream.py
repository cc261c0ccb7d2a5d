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

    def add(self, items: Sequence[Any], drawing: tuple[Any, int] | None = None) -> None:
        """Buffer ``items`` (their renderings start now, with a stage; ``drawing``: a drawing
        already submitted with them, ``conditioning.Renders.add``)."""
        self.pending.extend(items)
        self.renders.add(items, drawing)

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

    def take_window(self) -> tuple[list[Any], torch.Tensor]:
        """Take the next window's S frames and their renderings (S, V, 3, H, W)."""
        items, self.pending = self.pending[: self.stride], self.pending[self.stride:]
        with self.pipeline.timer.stage("rasterize"):  # with a stage: the wait for what is not drawn yet
            return items, self.renders.take(items)

    def job(self, features: torch.Tensor) -> WindowJob:
        """The window's denoising job from its new frames' FLAME features (S, V, C, h, w)."""
        return WindowJob(self.carry.window_condition(features), self.reference, self.carry, self.generator)

    def finish(self, job: WindowJob, latents: torch.Tensor) -> torch.Tensor:
        """Keep the carried frames; return the new frames' latents (S, V, 4, h, w)."""
        self.windows += 1
        return self.carry.finish(latents, job.cond)


def run_windows(streams: Sequence[WindowStream], rows: int | None = None) -> list[list[tuple[Any, torch.Tensor]]]:
    """The next window of every stream (each ``ready()``, all with one ``batch_key()``), their
    FLAME encoder, UNet and decoder work batched; returns each stream's finished frames.

    ``rows`` pads the batch to that many sessions (compiled graphs exist for a few batch sizes
    only) with copies of the last window whose results are dropped and whose carry is a copy;
    the FLAME encoder runs at the padded size too, so that its shapes are the ones warm-up ran."""
    pipe = streams[0].pipeline
    rows = max(rows or 0, len(streams))
    with pipe.timer.stage("window"):
        taken = [s.take_window() for s in streams]
        renders = [r for _, r in taken]
        features = pipe.encode_conditions(torch.cat(renders + renders[-1:] * (rows - len(streams))))
        jobs = [s.job(f) for s, f in zip(streams, features.split(streams[0].stride))]
        jobs += [_padding(jobs[-1]) for _ in range(rows - len(jobs))]
        latents = pipe.denoise_windows(jobs)
        images = pipe.decode_rows([s.finish(job, x) for s, job, x in zip(streams, jobs, latents)])
        return [list(zip(items, views)) for (items, _), views in zip(taken, images)]


def _padding(job: WindowJob) -> WindowJob:
    generator = torch.Generator(device=job.cond.device).manual_seed(0)
    return WindowJob(job.cond, job.reference, copy.copy(job.carry), generator)

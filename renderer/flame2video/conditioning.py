"""FLAME renderings drawn as frames arrive, on a thread and CUDA stream of their own.

Rasterizing a window's frames is bound by the host (hundreds of small kernels and the
synchronisations of its data-dependent steps: on an H200, 11.5 ms of GPU time for 1.2 ms of
kernels per ``live`` window, benchmarks.md), and the GPU waits for it when it runs in line,
between one window's denoising and the next. ``ConditioningStage`` draws each batch of frames
as soon as a session is handed them, on its own thread and stream, while the GPU denoises the
previous window; a window then takes the renderings already drawn (``Renders.take``). Only the
frames that arrive last are drawn on the window's own time.

Hand-over between streams: the renderings are drawn on the stage's stream, an event is recorded
after them, and the consumer's stream waits for that event and is recorded on the tensor (so
the caching allocator does not hand its memory to the stage before the consumer is done).
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Sequence

import torch

Conditioner = Callable[[Sequence[Any]], torch.Tensor]


class ConditioningStage:
    """One drawing thread (and, on a GPU, one CUDA stream) shared by a generator's sessions."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flame2video-conditions")
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def submit(self, conditioner: Conditioner, items: Sequence[Any]) -> Future:
        """Start drawing ``items``; the future gives (renders, CUDA event or None)."""
        return self._pool.submit(self._draw, conditioner, list(items))

    def _draw(self, conditioner: Conditioner, items: list) -> tuple[torch.Tensor, Any]:
        if self._stream is None:
            return conditioner(items), None
        with torch.cuda.stream(self._stream):
            renders = conditioner(items)
            done = torch.cuda.Event()
            done.record(self._stream)
        return renders, done

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _ready(future: Future) -> torch.Tensor:
    """The drawn renderings, usable on the calling thread's current stream."""
    renders, done = future.result()
    if done is not None:
        stream = torch.cuda.current_stream(renders.device)
        stream.wait_event(done)
        renders.record_stream(stream)
    return renders


class Renders:
    """A session's renderings of its pending frames, in order: drawn in line when taken
    (``stage`` None), or submitted to a ``ConditioningStage`` as the frames arrive."""

    def __init__(self, conditioner: Conditioner, stage: ConditioningStage | None = None) -> None:
        self.conditioner, self.stage = conditioner, stage
        self._parts: deque[list] = deque()  # [frames, Future or renders] in arrival order

    def add(self, items: Sequence[Any]) -> None:
        """Frames appended to the pending list: start drawing them (with a stage)."""
        if self.stage is not None and items:
            self._parts.append([len(items), self.stage.submit(self.conditioner, items)])

    def take(self, items: Sequence[Any]) -> torch.Tensor:
        """The renderings (n, V, 3, H, W) of ``items``, the next n pending frames."""
        if self.stage is None:
            return self.conditioner(items)
        out, need = [], len(items)
        while need:
            part = self._parts[0]
            if isinstance(part[1], Future):
                part[1] = _ready(part[1])
            n, renders = part
            if n <= need:
                out.append(renders)
                self._parts.popleft()
                need -= n
            else:
                out.append(renders[:need])
                part[0], part[1] = n - need, renders[need:]
                need = 0
        return out[0] if len(out) == 1 else torch.cat(out)

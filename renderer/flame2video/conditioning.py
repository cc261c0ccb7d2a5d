"""FLAME renderings drawn as frames arrive, on a thread and CUDA stream of their own.

Rasterizing a window's frames is bound by the host (hundreds of small kernels and the
synchronisations of its data-dependent steps: on an H200, 11.5 ms of GPU time for 1.2 ms of
kernels per ``live`` window, benchmarks.md), and the GPU waits for it when it runs in line,
between one window's denoising and the next. ``ConditioningStage`` draws each batch of frames
as soon as a session is handed them, on its own thread and stream, while the GPU denoises the
previous window; a window then takes the renderings already drawn (``Renders.take``). In a
worker, frames reach the stage as they arrive on its socket thread (``GeneratorSession.prefetch``),
not when the render thread next gets to the session: a window that ran long does not leave the
frames that arrived meanwhile to be drawn on the next window's time. Only a window's last frame
is drawn while that window waits.

Hand-over between streams: a session's drawings wait for an event recorded when its renderings
were first asked for (its conditioner was put on the GPU on another stream); each drawing ends
with an event that the stage's thread waits for, so a finished future means finished GPU work;
the consumer's stream waits for that event too and is recorded on the tensor (so the caching
allocator does not hand its memory to the stage before the consumer is done).
"""

from __future__ import annotations

import itertools
import threading
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

    def mark(self) -> Any:
        """An event after the work queued so far on the calling thread's stream (None on a
        CPU): drawings submitted with it wait for it (the conditioner's head and cameras were
        put on the GPU there)."""
        if self._stream is None:
            return None
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        return event

    def submit(self, conditioner: Conditioner, items: Sequence[Any], after: Any = None) -> Future:
        """Start drawing ``items`` (after the event ``after``, from ``mark``); the future gives
        (renders, CUDA event or None) once the drawing has finished on the GPU too, so that
        nothing it read can be freed under it."""
        return self._pool.submit(self._draw, conditioner, list(items), after)

    def _draw(self, conditioner: Conditioner, items: list, after: Any) -> tuple[torch.Tensor, Any]:
        if self._stream is None:
            return conditioner(items), None
        with torch.cuda.stream(self._stream):
            if after is not None:
                self._stream.wait_event(after)
            renders = conditioner(items)
            done = torch.cuda.Event()
            done.record(self._stream)
        done.synchronize()  # this thread waits, not the GPU
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
    """A session's renderings of its pending frames: drawn in line when taken (``stage`` None),
    or submitted to a ``ConditioningStage`` as the frames arrive.

    Frames are known by identity. ``add`` may see a frame twice (when it arrives, from the
    worker's socket thread, and when ``step`` is handed it) and submits it once; ``take`` takes
    frames in arrival order, so a frame that arrived before one taken and was not taken itself
    was dropped on the way (a worker that falls behind drops its oldest frames) and is forgotten.
    """

    def __init__(self, conditioner: Conditioner, stage: ConditioningStage | None = None) -> None:
        self.conditioner, self.stage = conditioner, stage
        self._after = stage.mark() if stage is not None else None  # the conditioner is built by now
        self._lock = threading.Lock()  # add() may come from another thread than take()
        self._arrivals = itertools.count()
        # id(frame) -> [frame (kept alive, so that the id stays its own), arrival number, the
        # drawing it is part of (a Future), its row in that drawing]
        self._drawn: dict[int, list] = {}

    def add(self, items: Sequence[Any]) -> None:
        """Frames that have arrived: start drawing those not drawn yet (with a stage)."""
        if self.stage is None or not items:
            return
        with self._lock:
            new = [item for item in items if id(item) not in self._drawn]
            if not new:
                return
            future = self.stage.submit(self.conditioner, new, self._after)
            for row, item in enumerate(new):
                self._drawn[id(item)] = [item, next(self._arrivals), future, row]

    def __len__(self) -> int:
        """Frames drawn or being drawn and not taken yet."""
        with self._lock:
            return len(self._drawn)

    def take(self, items: Sequence[Any]) -> torch.Tensor:
        """The renderings (n, V, 3, H, W) of ``items``, the next n frames in arrival order."""
        if self.stage is None:
            return self.conditioner(items)
        with self._lock:
            entries = [self._drawn.pop(id(item), None) for item in items]
            taken = [e[1] for e in entries if e is not None]
            if taken:  # frames that arrived earlier and were never taken: dropped on the way
                last = max(taken)
                for key in [k for k, e in self._drawn.items() if e[1] < last]:
                    del self._drawn[key]
        missing = [item for item, e in zip(items, entries) if e is None]
        inline = iter(self.conditioner(missing)) if missing else iter(())
        resolved: dict[int, torch.Tensor] = {}
        rows = []
        for e in entries:
            if e is None:
                rows.append(next(inline)[None])
                continue
            future, row = e[2], e[3]
            if id(future) not in resolved:
                resolved[id(future)] = _ready(future)
            rows.append(resolved[id(future)][row:row + 1])
        if len(resolved) == 1 and not missing and [e[3] for e in entries] == list(range(len(items))):
            (renders,) = resolved.values()
            if renders.shape[0] == len(items):
                return renders  # one drawing of exactly these frames: no copy
        return torch.cat(rows)

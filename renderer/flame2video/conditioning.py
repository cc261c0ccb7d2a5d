"""FLAME renderings drawn as frames arrive, on a thread and CUDA stream of their own.

Rasterizing a window's frames is bound by the host (hundreds of small kernels and the
synchronisations of its data-dependent steps: on an H200, 11.5 ms of GPU time for 1.2 ms of
kernels per ``live`` window, benchmarks.md), and the GPU waits for it when it runs in line,
between one window's denoising and the next. ``ConditioningStage`` draws each batch of frames
as soon as a session is handed them, on its own thread and stream, while the GPU denoises the
previous window; a window then takes the renderings already drawn (``Renders.take``). Only the
frames that arrive last are drawn on the window's own time.

Hand-over between streams: a session's drawings wait for an event recorded when its renderings
were first asked for (its conditioner was put on the GPU on another stream); each drawing ends
with an event that the stage's thread waits for, so a finished future means finished GPU work;
the consumer's stream waits for that event too and is recorded on the tensor (so the caching
allocator does not hand its memory to the stage before the consumer is done).

Sessions that share a conditioner (the same views at the same size) have the frames handed to
them in one turn drawn in one drawing (``draw_together``): the host's work per drawing barely
grows with its frames, so four sessions cost about what one does.
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
    """A session's renderings of its pending frames, in order: drawn in line when taken
    (``stage`` None), or submitted to a ``ConditioningStage`` as the frames arrive."""

    def __init__(self, conditioner: Conditioner, stage: ConditioningStage | None = None) -> None:
        self.conditioner, self.stage = conditioner, stage
        self._after = stage.mark() if stage is not None else None  # the conditioner is built by now
        # [frames, Future or renders, first row in them] in arrival order
        self._parts: deque[list] = deque()

    def add(self, items: Sequence[Any], drawing: tuple[Future, int] | None = None) -> None:
        """Frames appended to the pending list: start drawing them (with a stage). ``drawing``:
        (future, row) of a drawing already submitted that holds their renderings from that row
        on (``draw_together``)."""
        if self.stage is not None and items:
            future, row = drawing or (self.submit(items), 0)
            self._parts.append([len(items), future, row])

    def submit(self, items: Sequence[Any]) -> Future:
        """Start drawing ``items`` with this session's conditioner on the stage."""
        return self.stage.submit(self.conditioner, items, self._after)

    def take(self, items: Sequence[Any]) -> torch.Tensor:
        """The renderings (n, V, 3, H, W) of ``items``, the next n pending frames."""
        if self.stage is None:
            return self.conditioner(items)
        out, need = [], len(items)
        while need:
            part = self._parts[0]
            n, drawn, row = part
            if isinstance(drawn, Future):
                drawn = _ready(drawn)
            renders = drawn[row:row + n]
            if n <= need:
                out.append(renders)
                self._parts.popleft()
                need -= n
            else:
                out.append(renders[:need])
                part[0], part[1], part[2] = n - need, renders[need:], 0
                need = 0
        return out[0] if len(out) == 1 else torch.cat(out)


def draw_together(work: Sequence[tuple[Renders, Sequence[Any]]]) -> list[tuple[Future, int] | None]:
    """Submit the items of the pairs that share a stage and a conditioner as one drawing, in
    order; returns each pair's ``drawing`` for ``Renders.add`` (the future and its first row
    in it; None where there is no stage, or nothing to draw)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (renders, items) in enumerate(work):
        if renders.stage is not None and items:
            groups.setdefault((id(renders.stage), id(renders.conditioner)), []).append(i)
    drawings: list[tuple[Future, int] | None] = [None] * len(work)
    for members in groups.values():
        future = work[members[0]][0].submit([x for i in members for x in work[i][1]])
        row = 0
        for i in members:
            drawings[i] = (future, row)
            row += len(work[i][1])
    return drawings

"""A long-running worker's Python heap: freeze what warm-up built, time every collection.

A compiled generator leaves 600,000-800,000 Python objects behind its warm-up
(``torch.compile``'s graphs, guards and loaded calls, the models' modules and parameters), all
alive for as long as the worker is. Python's cyclic garbage collector walks every one of them in
each full (generation 2) collection while holding the GIL, so every thread of the worker, the
render thread too, stops for as long: 260-433 ms for 613,000-812,000 objects of the compiled
``tiny`` model on a 2-core CPU (docs/benchmarks.md). Sessions buffer 4 frames (133 ms at 30
frames/s), so a pause that long drops frames.

``freeze`` runs one collection and then ``gc.freeze()``: the objects alive at that moment move
to the permanent generation, which later collections skip. Objects made afterwards are collected
as before. A frozen object that later becomes garbage in a reference cycle is never freed; after
warm-up those are the models and compiled calls, which live until the process ends anyway.

``CollectionTimer`` times every collection (``gc.callbacks``), per generation, so a worker's
statistics and the benchmarks show the pauses that remain; it keeps the start and length of the
last full collections, so a benchmark can set them beside the frames it dropped.
"""

from __future__ import annotations

import gc
import time
from collections import deque
from dataclasses import dataclass

FULL_KEPT = 64  # full collections whose start and length a timer keeps (the newest)


@dataclass(frozen=True)
class Frozen:
    """What ``freeze`` did: the objects now frozen in all, and how long its collection took."""

    objects: int
    collect_ms: float


def freeze() -> Frozen:
    """Collect once, then freeze every object alive (call it after warm-up, before serving)."""
    t0 = time.perf_counter()
    gc.collect()
    collect_ms = (time.perf_counter() - t0) * 1e3
    gc.freeze()
    return Frozen(gc.get_freeze_count(), collect_ms)


@dataclass
class Pauses:
    """Collections of one generation: how many, their total and their longest time."""

    collections: int = 0
    total_ms: float = 0.0
    longest_ms: float = 0.0

    def add(self, ms: float) -> None:
        self.collections += 1
        self.total_ms += ms
        self.longest_ms = max(self.longest_ms, ms)


class CollectionTimer:
    """Times every garbage collection of the process while started.

    Collections run one at a time, in whichever thread allocates when one is due, with the GIL
    held; the callback takes no lock (a lock taken by the thread that triggered the collection
    would deadlock it) and only adds to counters.
    """

    def __init__(self) -> None:
        self._t0 = 0.0
        self.generations = [Pauses(), Pauses(), Pauses()]
        self.full: deque[tuple[float, float]] = deque(maxlen=FULL_KEPT)  # (perf_counter at start, ms)

    def start(self) -> CollectionTimer:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        return self

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def reset(self) -> None:
        self.generations = [Pauses(), Pauses(), Pauses()]
        self.full = deque(maxlen=FULL_KEPT)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            ms = (time.perf_counter() - self._t0) * 1e3
            self.generations[info["generation"]].add(ms)
            if info["generation"] == 2:
                self.full.append((self._t0, ms))

    def summary(self) -> dict[str, float | int]:
        """Full collections, every collection's longest pause and all pauses' sum, in ms."""
        gens = self.generations  # one list, even if reset() replaces it meanwhile
        return {"gc_full_collections": gens[2].collections,
                "gc_longest_ms": round(max(g.longest_ms for g in gens), 1),
                "gc_total_ms": round(sum(g.total_ms for g in gens), 1)}

    def full_since(self, t0: float) -> list[list[float]]:
        """The kept full collections that started after ``t0`` (a ``time.perf_counter()``
        reading): [seconds after ``t0``, ms], oldest first."""
        return [[round(start - t0, 3), round(ms, 1)] for start, ms in list(self.full) if start >= t0]

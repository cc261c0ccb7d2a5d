"""Clocks: the monotonic clock the runtime paces on, and a fake one for tests."""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a monotonic clock (pacing)."""

    def now_ns(self) -> int:
        """Wall-clock nanoseconds (capture timestamps, comparable across processes)."""

    async def sleep_until(self, deadline: float) -> None:
        """Wait until ``monotonic()`` reaches ``deadline``."""


class MonotonicClock:
    """The real clock: ``time.monotonic`` for pacing, ``time.time_ns`` for stamps."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now_ns(self) -> int:
        return time.time_ns()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - time.monotonic()
        await asyncio.sleep(max(0.0, delay))


class FakeClock:
    """A clock that only moves when someone sleeps on it: runs drivers as fast as possible
    while they see exactly the time they would see in real time."""

    def __init__(self, start: float = 0.0, wall_ns: int = 1_700_000_000_000_000_000) -> None:
        self._t = start
        self._wall0 = wall_ns - int(start * 1e9)

    def monotonic(self) -> float:
        return self._t

    def now_ns(self) -> int:
        return self._wall0 + int(round(self._t * 1e9))

    def advance(self, seconds: float) -> None:
        self._t += max(0.0, seconds)

    async def sleep_until(self, deadline: float) -> None:
        self._t = max(self._t, deadline)
        await asyncio.sleep(0)

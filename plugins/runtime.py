"""The driver runtime: paces a driver, stamps its frames, publishes them and supervises it.

* Pacing: frames are pulled at ``rate`` on the clock's monotonic time; a runtime that falls
  behind by more than one frame re-anchors instead of bursting.
* Stamping: session id, a strictly increasing ``seq`` and the wall-clock capture time.
* Supervision: a driver that raises is restarted with exponential backoff; while it is down
  the fallback driver (idle) keeps the avatar alive, continuing the same ``seq``. A driver
  whose stream ends also hands over to the fallback. Restarts and the last error are in
  ``stats``.
* Switching: ``switch(factory)`` replaces the driver at once, even one blocked on input.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from .clock import Clock, MonotonicClock
from .driver import Control, ControlNotSupported, Driver
from .frame import FlameFrame

log = logging.getLogger(__name__)

DriverFactory = Callable[[], Driver]
Sink = Callable[[FlameFrame], Awaitable[None]]


@dataclass
class Backoff:
    """Restart delays: ``initial`` doubling up to ``maximum``; reset after a driver has run
    ``reset_after`` seconds without failing."""

    initial: float = 0.5
    maximum: float = 10.0
    reset_after: float = 30.0
    _next: float = field(default=0.0, init=False)

    def next_delay(self, ran_for: float) -> float:
        if ran_for >= self.reset_after or self._next == 0.0:
            self._next = self.initial
        delay = self._next
        self._next = min(self.maximum, self._next * 2)
        return delay


@dataclass
class RuntimeStats:
    driver: str = ""
    state: str = "starting"  # running | fallback | finished | stopped
    frames: int = 0
    fallback_frames: int = 0
    restarts: int = 0
    last_error: str | None = None
    last_error_ns: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


class DriverRuntime:
    """Runs one session's driver. ``run()`` until ``stop()`` (or ``max_frames``)."""

    def __init__(
        self,
        factory: DriverFactory,
        sink: Sink,
        *,
        session_id: str,
        rate: float,
        clock: Clock | None = None,
        fallback: DriverFactory | None = None,
        backoff: Backoff | None = None,
        max_frames: int | None = None,
    ) -> None:
        self._factory = factory
        self._sink = sink
        self.session_id = session_id
        self.rate = float(rate)
        self.clock = clock or MonotonicClock()
        self._fallback_factory = fallback
        self._fallback: Driver | None = None
        self._fallback_iter = None
        self.backoff = backoff or Backoff()
        self.max_frames = max_frames
        self.stats = RuntimeStats()
        self._seq = 0
        self._next_t: float | None = None
        self._driver: Driver | None = None
        self._inner: asyncio.Task | None = None
        self._switching = False
        self._stopped = False

    # --- public ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Drive until stopped, restarting the driver as needed."""
        try:
            while not self._stopped:
                self._switching = False
                self._inner = asyncio.ensure_future(self._drive_once(self._factory))
                try:
                    await self._inner
                except asyncio.CancelledError:
                    if self._stopped:
                        break  # stop() or max_frames
                    if not self._switching:
                        raise  # run() itself was cancelled
        finally:
            self.stats.state = "stopped"
            await self._close_fallback()

    def stop(self) -> None:
        self._stopped = True
        if self._inner is not None:
            self._inner.cancel()

    def switch(self, factory: DriverFactory) -> None:
        """Replace the driver now; the next frame comes from the new one."""
        self._factory = factory
        self._switching = True
        if self._inner is not None:
            self._inner.cancel()

    @property
    def driver(self) -> Driver | None:
        return self._driver

    async def control(self, message: Control) -> dict[str, Any]:
        if self._driver is None or self.stats.state != "running":
            raise ControlNotSupported(f"the driver is not running (state: {self.stats.state}); try again shortly")
        return await self._driver.control(message)

    # --- internals ------------------------------------------------------------------------

    async def _drive_once(self, factory: DriverFactory) -> None:
        started = self.clock.monotonic()
        try:
            self._driver = factory()
            self.stats.driver = self._driver.name
            self.stats.state = "running"
            async for frame in self._driver.frames():
                await self._emit(frame, fallback=False)
            self.stats.state = "finished"
            await self._run_fallback(until=None)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._record_crash(exc)
            await self._run_fallback(until=self.clock.monotonic() + self.backoff.next_delay(self.clock.monotonic() - started))
        finally:
            driver, self._driver = self._driver, None
            if driver is not None:
                await _quietly(driver.aclose())

    def _record_crash(self, exc: BaseException) -> None:
        self.stats.restarts += 1
        self.stats.last_error = f"{exc.__class__.__name__}: {exc}"
        self.stats.last_error_ns = time.time_ns()
        self.stats.state = "fallback"
        log.warning("driver %s of session %s failed: %s", self.stats.driver, self.session_id, self.stats.last_error)

    async def _run_fallback(self, until: float | None) -> None:
        if self._fallback_factory is None:
            if until is not None:
                await self.clock.sleep_until(until)
            else:
                await asyncio.Event().wait()
            return
        if self._fallback_iter is None:
            self._fallback = self._fallback_factory()
            self._fallback_iter = self._fallback.frames().__aiter__()
        while until is None or self.clock.monotonic() < until:
            frame = await self._fallback_iter.__anext__()
            await self._emit(frame, fallback=True)

    async def _close_fallback(self) -> None:
        if self._fallback is not None:
            await _quietly(self._fallback.aclose())
            self._fallback = self._fallback_iter = None

    async def _emit(self, frame: FlameFrame, *, fallback: bool) -> None:
        stamped = frame.stamped(session_id=self.session_id, seq=self._seq, capture_ns=self.clock.now_ns())
        self._seq += 1
        self.stats.frames += 1
        self.stats.fallback_frames += int(fallback)
        await self._sink(stamped)
        if self.max_frames is not None and self.stats.frames >= self.max_frames:
            self._stopped = True
            raise asyncio.CancelledError
        await self._pace()

    async def _pace(self) -> None:
        period = 1.0 / self.rate
        now = self.clock.monotonic()
        if self._next_t is None or self._next_t < now - period:
            self._next_t = now  # first frame, or fell behind: re-anchor instead of bursting
        self._next_t += period
        await self.clock.sleep_until(self._next_t)


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception as exc:
        log.warning("error while closing a driver: %s", exc)

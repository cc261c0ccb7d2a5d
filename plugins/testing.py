"""A harness to test a driver with no server, no generator and no real time.

Example, in a plugin's own tests::

    from flamecast.plugins.testing import DriverHarness

    async def test_my_driver_nods():
        harness = DriverHarness(MyDriver, {"speed": 2})
        frames = await harness.collect(50)          # 2 s at 25 fps, instantly
        reply = await harness.control("prompt", "smile")
        more = await harness.collect(25)
        harness.check(frames + more)                # layout, finiteness, seq, timestamps
        await harness.close()
"""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

import numpy as np

from .clock import FakeClock
from .driver import Control, Driver, DriverContext
from .frame import FlameFrame
from .head import HeadSpace, builtin_head_space


class DriverHarness:
    """Runs one driver on a FakeClock: frames come as fast as the driver makes them while the
    driver sees exactly the time it would see live. Stamps frames like the runtime does."""

    def __init__(
        self,
        driver_cls: type[Driver],
        options: dict[str, Any] | None = None,
        *,
        head: HeadSpace | None = None,
        rate: float | None = None,
        session_id: str = "test",
    ) -> None:
        opts = driver_cls.parse_options(options)
        self.clock = FakeClock()
        self.events: list[dict[str, Any]] = []
        self.audio_out: list[Any] = []
        self.context = DriverContext(
            session_id=session_id,
            rate=rate or driver_cls.rate_for(opts),
            head=head or builtin_head_space(),
            clock=self.clock,
            audio_in=asyncio.Queue(maxsize=256) if driver_cls.needs_audio else None,
            video_in=asyncio.Queue(maxsize=8) if driver_cls.needs_video else None,
            emit=self.events.append,
            emit_audio=self.audio_out.append,
        )
        self.driver = driver_cls(opts, self.context)
        self._iter = self.driver.frames().__aiter__()
        self._seq = 0

    async def collect(self, n: int, *, timeout: float = 30.0) -> list[FlameFrame]:
        """Pull ``n`` frames, advancing the fake clock one period after each."""
        out = []
        for _ in range(n):
            async with asyncio.timeout(timeout):
                frame = await self._iter.__anext__()
            out.append(frame.stamped(session_id=self.context.session_id, seq=self._seq, capture_ns=self.clock.now_ns()))
            self._seq += 1
            self.clock.advance(1.0 / self.context.rate)
        return out

    async def control(self, kind: str, text: str | None = None, **data: Any) -> dict[str, Any]:
        """Send a control message; returns the driver's reply."""
        return await self.driver.control(Control(kind=kind, text=text, data=data))

    async def feed_audio(self, chunk: Any) -> None:
        assert self.context.audio_in is not None, "this driver does not declare needs_audio"
        await self.context.audio_in.put(chunk)

    async def feed_video(self, frame: Any) -> None:
        assert self.context.video_in is not None, "this driver does not declare needs_video"
        await self.context.video_in.put(frame)

    def check(self, frames: Sequence[FlameFrame]) -> None:
        """Assert the frames fit the head space and the runtime's stamping rules."""
        check_frames(frames, self.context.head)

    async def close(self) -> None:
        await self.driver.aclose()


def check_frames(frames: Sequence[FlameFrame], head: HeadSpace | None = None) -> None:
    """Assert frame layout against ``head``, finite values and increasing seq/capture time."""
    head = head or builtin_head_space()
    assert frames, "no frames"
    for f in frames:
        assert f.pose.shape == (15,), f"pose has shape {f.pose.shape}"
        assert f.expression.shape == (head.n_expression,), (
            f"expression has {f.expression.shape[0]} values; head {head.name!r} has {head.n_expression}"
        )
        assert np.all(np.abs(f.pose) < np.pi), "pose angles beyond pi radians"
        if f.eyelids is not None:
            assert np.all((f.eyelids >= -0.05) & (f.eyelids <= 1.05)), "eyelids outside 0..1"
    seqs = [f.seq for f in frames]
    assert all(b > a for a, b in zip(seqs, seqs[1:])), "seq is not strictly increasing"
    times = [f.capture_ns for f in frames]
    assert all(b > a for a, b in zip(times, times[1:])), "capture time is not strictly increasing"


async def run_driver(driver_cls: type[Driver], options: dict[str, Any] | None = None, n: int = 25, **kw: Any) -> list[FlameFrame]:
    """Collect ``n`` frames from a fresh driver and close it."""
    harness = DriverHarness(driver_cls, options, **kw)
    try:
        return await harness.collect(n)
    finally:
        await harness.close()


class NeutralDriver(Driver):
    """Holds the neutral face: the base layer of a ``StackHarness`` (the server uses idle)."""

    name = "neutral"
    description = "The neutral face, still."

    async def frames(self):
        while True:
            yield FlameFrame(expression=np.zeros(self.context.head.n_expression, np.float32))


class StackHarness:
    """Runs a stack of driver layers on a FakeClock, the way a session runs them.

    Example, for a driver that owns only the mouth::

        harness = StackHarness()                       # base layer: the neutral face
        harness.add("lips", MyLipDriver, {"gain": 2}, channels=["jaw", "mouth"])
        frames = await harness.collect(50)
        await harness.control("option", layer="lips", gain=1)
        harness.check(frames)
        await harness.close()
    """

    def __init__(self, base: type[Driver] | None = None, *, head: HeadSpace | None = None, rate: float = 25.0,
                 fade: float = 0.25, emotion: str = "add", stale_after: float = 1.0, session_id: str = "test") -> None:
        from .layers import EmotionMode
        from .stack import DriverStack

        self.clock = FakeClock()
        self.events: list[dict[str, Any]] = []
        self.frames: list[FlameFrame] = []
        self.head = head or builtin_head_space()
        self.rate = rate
        self.session_id = session_id
        base_cls = base or NeutralDriver

        async def sink(frame: FlameFrame) -> None:
            self.frames.append(frame)

        self.stack = DriverStack(lambda: base_cls(base_cls.parse_options({}), self.context()), sink,
                                 session_id=session_id, rate=rate, head=self.head, clock=self.clock, fade=fade,
                                 emotion=EmotionMode(emotion), stale_after=stale_after, on_event=self.events.append)

    def context(self, driver_cls: type[Driver] | None = None) -> DriverContext:
        """A context like the server gives a layer's driver (with input queues when it needs them)."""
        return DriverContext(
            session_id=self.session_id, rate=self.rate, head=self.head, clock=self.clock,
            audio_in=asyncio.Queue(maxsize=256) if driver_cls is not None and driver_cls.needs_audio else None,
            video_in=asyncio.Queue(maxsize=8) if driver_cls is not None and driver_cls.needs_video else None,
            emit=self.events.append,
        )

    def add(self, name: str, driver_cls: type[Driver], options: dict[str, Any] | None = None, *,
            channels: Sequence[str] | None = None, index: int | None = None) -> DriverContext:
        """Add a layer; returns its driver context (feed its queues to give it input)."""
        from .stack import layer_channels

        opts = driver_cls.parse_options(options)
        context = self.context(driver_cls)
        self.stack.add(name, lambda: driver_cls(opts, context), layer_channels(driver_cls, channels), index=index)
        return context

    async def collect(self, n: int) -> list[FlameFrame]:
        """Run ``n`` ticks, advancing the fake clock one period after each; returns their frames."""
        start = len(self.frames)
        for _ in range(n):
            await self.stack.tick()
            self.clock.advance(1.0 / self.rate)
        return self.frames[start:]

    async def control(self, kind: str, text: str | None = None, *, layer: str | None = None, **data: Any) -> dict[str, Any]:
        return await self.stack.control(Control(kind=kind, text=text, data=data), layer=layer)

    def check(self, frames: Sequence[FlameFrame]) -> None:
        check_frames(frames, self.head)

    async def close(self) -> None:
        await self.stack.close()

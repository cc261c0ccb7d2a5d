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
            frame = await asyncio.wait_for(self._iter.__anext__(), timeout)
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

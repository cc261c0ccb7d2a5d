"""The driver runtime: pacing on the clock, stamping, supervision, switching."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from flamecast.drivers.idle import IdleDriver
from flamecast.plugins import Control, Driver, DriverContext, FakeClock, FlameFrame
from flamecast.plugins.runtime import Backoff, DriverRuntime


class Counting(Driver):
    """Yields frames whose pose[0] is a per-instance counter; raises after ``fail_after``."""

    name = "counting"
    instances = 0

    def __init__(self, options, context, fail_after=None, tag=0.0):
        super().__init__(options, context)
        self.fail_after, self.tag = fail_after, tag
        type(self).instances += 1

    async def frames(self):
        i = 0
        while True:
            if self.fail_after is not None and i >= self.fail_after:
                raise RuntimeError("boom")
            pose = np.zeros(15, np.float32)
            pose[0], pose[1] = self.tag, i * 1e-3
            yield FlameFrame(pose=pose, expression=np.zeros(16, np.float32))
            i += 1

    async def control(self, message: Control):
        return {"echo": message.text}


def _make(ctx, **kw):
    return lambda: Counting(Counting.parse_options({}), ctx, **kw)


def _idle(ctx):
    return lambda: IdleDriver(IdleDriver.parse_options({}), ctx)


async def _run(runtime):
    await asyncio.wait_for(runtime.run(), 10)


async def test_paces_at_rate_and_stamps_strictly_increasing():
    clock = FakeClock()
    ctx = DriverContext(clock=clock, rate=25)
    out: list[FlameFrame] = []

    async def sink(f):
        out.append(f)

    rt = DriverRuntime(_make(ctx), sink, session_id="abc", rate=25, clock=clock, max_frames=50)
    await _run(rt)
    assert len(out) == 50 and [f.seq for f in out] == list(range(50))
    assert all(f.session_id == "abc" for f in out)
    gaps = np.diff([f.capture_ns for f in out])
    np.testing.assert_allclose(gaps, 40_000_000, atol=1)
    assert rt.stats.state == "stopped" and rt.stats.frames == 50


async def test_real_clock_pacing_holds_the_rate():
    out = []

    async def sink(f):
        out.append(f)

    ctx = DriverContext(rate=100)
    rt = DriverRuntime(_make(ctx), sink, session_id="s", rate=100, max_frames=30)
    await _run(rt)
    span = (out[-1].capture_ns - out[0].capture_ns) / 1e9
    assert 0.25 <= span  # 29 periods of 10 ms; a runtime that did not pace would take ~0 s


async def test_crashing_driver_restarts_with_backoff_and_idle_fills_the_gap():
    clock = FakeClock()
    ctx = DriverContext(clock=clock, rate=25)
    out: list[FlameFrame] = []

    async def sink(f):
        out.append(f)

    Counting.instances = 0
    rt = DriverRuntime(_make(ctx, fail_after=10, tag=0.5), sink, session_id="s", rate=25, clock=clock,
                       fallback=_idle(ctx), backoff=Backoff(initial=0.2, maximum=0.4), max_frames=80)
    await _run(rt)
    assert rt.stats.restarts >= 2 and Counting.instances >= 3
    assert rt.stats.last_error == "RuntimeError: boom"
    assert rt.stats.fallback_frames > 0
    driver_frames = [f for f in out if f.pose[0] == np.float32(0.5)]
    assert len(driver_frames) + rt.stats.fallback_frames == len(out) == 80
    assert [f.seq for f in out] == list(range(80))  # no gap, no repeat across restarts


def test_backoff_doubles_and_resets():
    b = Backoff(initial=0.5, maximum=2.0, reset_after=30)
    assert [b.next_delay(1), b.next_delay(1), b.next_delay(1), b.next_delay(1)] == [0.5, 1.0, 2.0, 2.0]
    assert b.next_delay(31) == 0.5


async def test_finished_driver_hands_over_to_idle():
    class Short(Counting):
        async def frames(self):
            for _ in range(5):
                yield FlameFrame(pose=np.full(15, 0.1, np.float32), expression=np.zeros(16, np.float32))

    clock = FakeClock()
    ctx = DriverContext(clock=clock)
    out = []

    async def sink(f):
        out.append(f)

    rt = DriverRuntime(lambda: Short(Short.parse_options({}), ctx), sink, session_id="s", rate=25, clock=clock,
                       fallback=_idle(ctx), max_frames=20)
    await _run(rt)
    assert rt.stats.restarts == 0 and rt.stats.fallback_frames == 15


async def test_switch_replaces_a_driver_blocked_on_input_and_control_reaches_it():
    class Blocked(Counting):
        async def frames(self):
            yield FlameFrame(pose=np.zeros(15, np.float32), expression=np.zeros(16, np.float32))
            await asyncio.Event().wait()  # waits for input that never comes
            yield  # pragma: no cover

    ctx = DriverContext(rate=50)
    got = asyncio.Event()
    out = []

    async def sink(f):
        out.append(f)
        if f.pose[0] == np.float32(0.25):
            got.set()

    rt = DriverRuntime(lambda: Blocked(Blocked.parse_options({}), ctx), sink, session_id="s", rate=50)
    task = asyncio.ensure_future(rt.run())
    while not out:
        await asyncio.sleep(0.005)
    rt.switch(_make(ctx, tag=0.25))
    await asyncio.wait_for(got.wait(), 5)
    assert await rt.control(Control(kind="prompt", text="hi")) == {"echo": "hi"}
    rt.stop()
    await asyncio.wait_for(task, 5)
    assert rt.stats.state == "stopped" and rt.stats.restarts == 0


async def test_stop_from_outside_ends_run_cleanly():
    ctx = DriverContext(rate=200)

    async def sink(f):
        rt.stop()

    rt = DriverRuntime(_make(ctx), sink, session_id="s", rate=200)
    await _run(rt)
    assert rt.stats.frames == 1


async def test_control_while_driver_down_is_refused():
    from flamecast.plugins import ControlNotSupported

    rt = DriverRuntime(lambda: None, lambda f: None, session_id="s", rate=25)
    with pytest.raises(ControlNotSupported, match="not running"):
        await rt.control(Control(kind="interrupt"))

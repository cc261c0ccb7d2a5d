"""Faults the server survives: a driver that blocks, a worker that is gone, a session addressed
by anything but its own wire token. Every wait here waits on an event or a condition."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import numpy as np
import pytest
import zmq

from flamecast.plugins import FlameFrame, hookimpl
from flamecast.plugins import protocol as wire
from flamecast.drivers.idle import IdleDriver
from flamecast.renderer.worker import GeneratorWorker, WorkerSettings
from flamecast.server import worker_link
from flamecast.server.state import LINK, SESSIONS

from .conftest import plugin_host, running_app, settings_for

ASLEEP = threading.Event()  # the blocking driver is inside time.sleep
AWAKE = threading.Event()  # ... and out of it again


class BlockingDriver(IdleDriver):
    """Blocks its thread for 3 s in frames() and in control(), as a careless plugin would."""

    name = "blocking"

    async def frames(self):
        async for frame in super().frames():
            yield frame
            if not ASLEEP.is_set():
                ASLEEP.set()
                time.sleep(3.0)
                AWAKE.set()

    async def control(self, message):
        time.sleep(3.0)
        return {}


class BlockingPlugin:
    @hookimpl
    def flamecast_register_drivers(self, register):
        register(BlockingDriver)


async def _session(http, **body) -> str:
    resp = await http.post("/api/sessions", json=body)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


async def _frames_in(http, sid: str) -> int:
    return (await (await http.get(f"/api/sessions/{sid}")).json())["stats"]["frames_in"]


async def test_a_blocking_driver_stalls_neither_other_sessions_nor_healthz(worker):
    ASLEEP.clear()
    AWAKE.clear()
    async with running_app(settings_for(worker), host=plugin_host(("blocking", BlockingPlugin()))) as http:
        other = await _session(http)
        async with asyncio.timeout(20):
            while await _frames_in(http, other) < 3:
                await asyncio.sleep(0.05)
        blocked = await _session(http, driver="blocking")
        async with asyncio.timeout(20):
            await asyncio.to_thread(ASLEEP.wait)
        before = await _frames_in(http, other)
        health = await http.get("/healthz")
        assert health.status == 200
        async with asyncio.timeout(20):
            while await _frames_in(http, other) < before + 5:
                await asyncio.sleep(0.05)
        assert not AWAKE.is_set(), "the other session rendered and /healthz answered while the driver slept"
        # a control message to a driver that blocks gives up with a 409 instead of hanging the request
        http.app[SESSIONS].get(blocked).stack.control_timeout = 0.5
        resp = await http.post(f"/api/sessions/{blocked}/input", json={"kind": "prompt", "text": "nod"})
        assert resp.status == 409 and "did not answer" in (await resp.json())["error"]
        assert (await http.delete(f"/api/sessions/{blocked}")).status == 200


async def test_healthz_says_when_the_worker_is_gone(monkeypatch):
    monkeypatch.setattr(worker_link, "HEARTBEAT_TIMEOUT", 0.5)
    w = GeneratorWorker(WorkerSettings(input="tcp://127.0.0.1:0", output="tcp://127.0.0.1:0", backends=("swatch",),
                                       default_backend="swatch", stats_interval_s=0, heartbeat_s=0.1),
                        host=plugin_host())
    w.start()
    try:
        async with running_app(settings_for(w)) as http:
            ok = await http.get("/healthz")
            assert ok.status == 200 and (await ok.json())["worker"]["state"] == "ok"
            await asyncio.to_thread(w.stop)
            async with asyncio.timeout(20):
                while (body := await (resp := await http.get("/healthz")).json())["worker"]["state"] != "unreachable":
                    await asyncio.sleep(0.1)
            assert resp.status == 503 and body["status"] == "unavailable"
    finally:
        w.stop()


async def test_sessions_travel_by_a_token_no_client_sees(worker):
    async with running_app(settings_for(worker)) as http:
        sid = await _session(http)
        token = http.app[LINK].wire_id(sid)
        assert token != sid and len(token) >= 32
        # hex, never starting with "-": an outside driver's `--session TOKEN` takes it as a value
        assert re.fullmatch(r"[0-9a-f]{48}", token)
        body = await (await http.get(f"/api/sessions/{sid}")).text()
        assert token not in body
        assert token in worker.stats()["sessions"] and sid not in worker.stats()["sessions"]
        # frames addressed by the HTTP id (all a viewer knows) reach no session on the worker
        before = worker.stats()["unknown_session"]
        ctx = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.connect(worker.endpoints["input"])
        try:
            frame = wire.flame_message(FlameFrame(session_id=sid, seq=1, expression=np.zeros(16, np.float32)))
            async with asyncio.timeout(20):
                while worker.stats()["unknown_session"] == before:
                    pub.send_multipart(frame)
                    await asyncio.sleep(0.05)
        finally:
            pub.close(0)
            ctx.term()


@pytest.mark.parametrize("seq", [2**62])
async def test_an_absurd_seq_leaves_the_video_clock_alone(worker, seq):
    async with running_app(settings_for(worker)) as http:
        sid = await _session(http)
        token = http.app[LINK].wire_id(sid)
        async with asyncio.timeout(20):
            while worker.stats()["sessions"][token]["frames_in"] < 3:
                await asyncio.sleep(0.05)
        ctx = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.connect(worker.endpoints["input"])
        try:
            frame = wire.flame_message(FlameFrame(session_id=token, seq=seq, expression=np.zeros(16, np.float32)))
            async with asyncio.timeout(20):
                while worker.stats()["sessions"][token]["rejected"] == 0:
                    pub.send_multipart(frame)
                    await asyncio.sleep(0.05)
        finally:
            pub.close(0)
            ctx.term()
        before = await _frames_in(http, sid)
        async with asyncio.timeout(20):
            while await _frames_in(http, sid) < before + 5:
                await asyncio.sleep(0.05)

"""A worker warming up a generator says so: its heartbeat lists the generator, /healthz answers
503 "warming" until the warm-up finished, and a session that times out meanwhile is refused
with a message that says why; once warm, everything is ok."""

from __future__ import annotations

import asyncio
import threading

from flamecast.plugins import hookimpl

from .conftest import SwatchGenerator, plugin_host, running_app, settings_for, start_worker


class SlowWarmGenerator(SwatchGenerator):
    name = "slowwarm"
    release = threading.Event()

    def warm_up(self) -> None:
        SlowWarmGenerator.release.wait(30.0)


class Plugin:
    @hookimpl
    def flamecast_register_generators(self, register):
        register(SlowWarmGenerator)


async def test_healthz_and_sessions_wait_for_the_warm_up():
    SlowWarmGenerator.release.clear()
    worker = start_worker(plugin_host(("slowwarm", Plugin())), "slowwarm")
    try:
        server = settings_for(worker, generator="slowwarm", open_timeout=1.5)
        async with running_app(server, host=plugin_host(("slowwarm", Plugin()))) as http:
            resp = await http.get("/healthz")
            body = await resp.json()
            assert resp.status == 503 and body["worker"]["state"] == "warming"
            assert body["worker"]["warming"] == ["slowwarm"]
            resp = await http.post("/api/sessions", json={})
            assert resp.status == 503 and "warming up" in (await resp.json())["error"]
            SlowWarmGenerator.release.set()
            for _ in range(100):
                resp = await http.get("/healthz")
                if resp.status == 200:
                    break
                await asyncio.sleep(0.1)
            assert resp.status == 200 and (await resp.json())["worker"]["warming"] == []
            resp = await http.post("/api/sessions", json={})
            assert resp.status == 201, await resp.text()
    finally:
        SlowWarmGenerator.release.set()
        worker.stop()

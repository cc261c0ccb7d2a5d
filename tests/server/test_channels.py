"""Named channels: a name follows whichever session holds it, through new sessions."""

from __future__ import annotations

import numpy as np

from flamecast.plugins import FlameFrame
from flamecast.server.state import LINK, SESSIONS

from .conftest import plugin_host, running_app, settings_for


async def _json(resp):
    return await resp.json()


async def test_a_channel_follows_the_newest_session_that_takes_it(worker):
    async with running_app(settings_for(worker)) as http:
        resp = await http.get("/api/channels/main")
        assert resp.status == 200 and await _json(resp) == {"channel": "main", "session": None, "live": False}
        first = await _json(await http.post("/api/sessions", json={"channel": "main"}))
        assert first["channel"] == "main"
        held = await _json(await http.get("/api/channels/main"))
        assert held["session"] == first["id"] and held["live"] and held["views"] == first["views"]
        # a new session takes the name; the old one runs on, unnamed
        second = await _json(await http.post("/api/sessions", json={"channel": "main"}))
        assert (await _json(await http.get("/api/channels/main")))["session"] == second["id"]
        assert (await _json(await http.get(f"/api/sessions/{first['id']}")))["channel"] is None
        # ending the holder frees the name; publishing later takes it again
        await http.delete(f"/api/sessions/{second['id']}")
        assert (await _json(await http.get("/api/channels/main")))["session"] is None
        resp = await http.patch(f"/api/sessions/{first['id']}", json={"channel": "main"})
        assert resp.status == 200 and (await _json(resp))["channel"] == "main"
        assert (await _json(await http.get("/api/channels"))) == {"channels": {"main": first["id"]}}
        resp = await http.patch(f"/api/sessions/{first['id']}", json={"channel": None})
        assert (await _json(await http.get("/api/channels"))) == {"channels": {}}


async def test_bad_names_and_fields_are_422(worker):
    async with running_app(settings_for(worker), host=plugin_host()) as http:
        resp = await http.post("/api/sessions", json={"channel": "no spaces/here"})
        assert resp.status == 422 and "letters, digits" in (await _json(resp))["error"]
        resp = await http.get("/api/channels/bad%20name")
        assert resp.status == 422
        resp = await http.post("/api/sessions", json={"background": "blue"})
        assert resp.status == 422 and "#00ff00" in (await _json(resp))["error"]
        session = await _json(await http.post("/api/sessions", json={"background": "#00FF00"}))
        assert session["background"] == "#00ff00"
        resp = await http.patch(f"/api/sessions/{session['id']}", json={"volume": 3})
        assert resp.status == 422 and "background" in (await _json(resp))["error"]


async def test_external_sessions_name_their_endpoint_and_stop_publishing(worker):
    async with running_app(settings_for(worker)) as http:
        session = await _json(await http.post("/api/sessions", json={"external": True}))
        ext = session["external"]
        live = http.app[SESSIONS].get(session["id"])
        assert ext["connect"] == worker.endpoints["input"] and ext["session"] == http.app[LINK].wire_id(live.id)
        assert f"--connect {ext['connect']} --session {ext['session']}" in ext["command"]
        sent = []

        async def spy(frame):
            sent.append(frame)

        live._publisher.send = spy
        frame = FlameFrame(expression=np.zeros(16, np.float32)).stamped(session_id=live.id, seq=1, capture_ns=1)
        await live._publish(frame)
        assert sent == []  # the session's own stack is silent while external
        resp = await http.patch(f"/api/sessions/{session['id']}", json={"external": False})
        assert (await _json(resp))["external"] is None
        await live._publish(frame)
        # published again (the session's own stack, running again, may have sent frames of its own)
        assert any(f is frame for f in sent)


async def test_an_outside_driver_drives_an_external_session_through_curve(tmp_path):
    """`flamecast driver NAME --connect EP --session TOKEN --keys DIR`, as the session's
    `external` field says, drives a session whose worker admits only keyed clients."""
    import asyncio
    import subprocess
    import sys

    from flamecast.plugins.publish import load_keys, make_key_folder
    from flamecast.renderer.worker import GeneratorWorker, WorkerSettings

    from .conftest import plugin_host

    folder = make_key_folder(tmp_path / "keys")
    worker = GeneratorWorker(WorkerSettings(input="tcp://127.0.0.1:0", output="tcp://127.0.0.1:0", backends=("swatch",),
                                            default_backend="swatch", stats_interval_s=0,
                                            keys=load_keys(folder, "worker")), host=plugin_host())
    worker.start()
    try:
        settings = settings_for(worker, worker_keys=str(folder))
        async with running_app(settings) as http:
            session = await _json(await http.post("/api/sessions", json={"external": True}))
            ext = session["external"]
            assert ext["curve"] and ext["keys"] == str(folder) and f"--keys {folder}" in ext["command"]
            live = http.app[SESSIONS].get(session["id"])
            before = live.stats.frames_in
            cmd = [sys.executable, "-m", "flamecast.cli", "driver", "idle", "--connect", ext["connect"],
                   "--session", ext["session"], "--keys", ext["keys"], "--seconds", "3"]
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, err.decode()
            assert live.stats.frames_in - before >= 25, "the outside driver's frames were rendered"
            # without the keys the worker hears nothing (the session's own layers are silent too)
            await asyncio.sleep(0.5)
            settled = live.stats.frames_in
            plain = [*cmd[:-4], "--seconds", "1"]
            proc = await asyncio.create_subprocess_exec(*plain, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            await asyncio.wait_for(proc.communicate(), 60)
            await asyncio.sleep(0.5)
            assert live.stats.frames_in == settled
    finally:
        worker.stop()

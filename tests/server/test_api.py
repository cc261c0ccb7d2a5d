"""The HTTP API against a real worker: happy paths, and every kind of bad input."""

from __future__ import annotations

import asyncio
import json

import pytest
from aiohttp import FormData

from flamecast.drivers.idle import IdleDriver
from flamecast.plugins import hookimpl
from flamecast.plugins.driver import MAX_PROMPT_CHARS
from flamecast.server.state import SESSIONS

from .conftest import face_png, plugin_host, png, running_app, settings_for


async def _json(resp):
    return json.loads(await resp.text())


async def test_health_plugins_and_page(http):
    assert (await (await http.get("/healthz")).json())["status"] == "ok"
    plugins = await (await http.get("/api/plugins")).json()
    assert "idle" in [d["name"] for d in plugins["drivers"]]
    assert "swatch" in [g["name"] for g in plugins["generators"]]
    page = await http.get("/")
    assert page.status == 200 and "client.js" in await page.text()
    assert (await http.get("/obs.html")).status == 200
    assert (await http.get("/client.js")).headers["Content-Type"].startswith("text/javascript")


async def test_session_lifecycle(http):
    resp = await http.post("/api/sessions", json={"driver": "idle", "options": {"fps": 20}})
    assert resp.status == 201, await resp.text()
    info = await resp.json()
    assert info["state"] == "running" and info["options"]["fps"] == 20
    got = await (await http.get(f"/api/sessions/{info['id']}")).json()
    assert set(got["stats"]) >= {"fps_out", "latency_ms", "dropped", "driver_restarts", "last_error"}
    listed = await (await http.get("/api/sessions")).json()
    assert [s["id"] for s in listed["sessions"]] == [info["id"]]
    assert (await http.delete(f"/api/sessions/{info['id']}")).status == 200
    assert (await http.get(f"/api/sessions/{info['id']}")).status == 404


@pytest.mark.parametrize("body", ["{", "[1,", "nope", "\xff"])
async def test_malformed_json_is_400_with_the_reason(http, body):
    resp = await http.post("/api/sessions", data=body.encode("latin-1"), headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert "malformed JSON" in (await _json(resp))["error"]


@pytest.mark.parametrize("method,path", [
    ("GET", "/api/sessions/nope"), ("DELETE", "/api/sessions/nope"), ("POST", "/api/sessions/nope/offer"),
    ("POST", "/api/sessions/nope/input"), ("GET", "/api/sessions/nope/events"), ("GET", "/api/portraits/nope"),
])
async def test_unknown_session_is_404(http, method, path):
    resp = await http.request(method, path, json={})
    assert resp.status == 404
    assert "error" in await _json(resp)


@pytest.mark.parametrize("options,field", [({"fps": "fast"}, "fps"), ({"sway": 99}, "sway"), ({"colour": 1}, "colour")])
async def test_bad_driver_options_are_422_naming_the_field(http, options, field):
    resp = await http.post("/api/sessions", json={"driver": "idle", "options": options})
    assert resp.status == 422
    assert field in (await _json(resp))["error"]


async def test_unknown_driver_and_fields_are_422(http):
    resp = await http.post("/api/sessions", json={"driver": "nope"})
    message = (await _json(resp))["error"]  # names what is installed, third-party drivers too
    assert resp.status == 422 and "available: " in message and "idle" in message.split("available: ")[1].split(", ")
    resp = await http.post("/api/sessions", json={"drivr": "idle"})
    assert resp.status == 422 and "drivr" in (await _json(resp))["error"]
    resp = await http.post("/api/sessions", json={"size": "big"})
    assert resp.status == 422 and "size" in (await _json(resp))["error"]


async def test_upload_over_the_limit_is_413(worker):
    async with running_app(settings_for(worker, max_upload_bytes=4096)) as http:
        big = png(size=(400, 400)) + b"\0" * 5000
        resp = await http.post("/api/portraits", data=big)
        assert resp.status == 413 and "4096" in (await _json(resp))["error"]
        form = FormData()
        form.add_field("portrait", big, filename="p.png")
        resp = await http.post("/api/sessions", data=form)
        assert resp.status == 413


async def test_not_an_image_and_no_face_are_422_saying_which(http):
    resp = await http.post("/api/portraits", data=b"hello, not a picture")
    assert resp.status == 422 and "not an image" in (await _json(resp))["error"]
    form = FormData()
    form.add_field("portrait", png(size=(256, 256)), filename="blank.png")
    form.add_field("driver", "idle")
    resp = await http.post("/api/sessions", data=form)
    assert resp.status == 422
    assert "no face" in (await _json(resp))["error"]
    assert not http.app[SESSIONS].sessions, "a refused session must not linger"


async def test_uploaded_portrait_by_id(http):
    up = await http.post("/api/portraits", data=face_png())
    assert up.status == 201
    pid = (await up.json())["id"]
    listed = await (await http.get("/api/portraits")).json()
    assert pid in [p["id"] for p in listed["portraits"]]
    assert (await http.get(f"/api/portraits/{pid}")).headers["Content-Type"] == "image/png"
    resp = await http.post("/api/sessions", json={"portrait_id": pid})
    assert resp.status == 201, await resp.text()
    resp = await http.post("/api/sessions", json={"portrait_id": "0" * 16})
    assert resp.status == 404


async def test_session_limit_is_429(worker):
    async with running_app(settings_for(worker, max_sessions=1)) as http:
        assert (await http.post("/api/sessions", json={})).status == 201
        resp = await http.post("/api/sessions", json={})
        assert resp.status == 429
        assert "at most 1 sessions" in (await _json(resp))["error"]


async def test_generator_that_cannot_run_here_is_503_naming_what_is_missing(http):
    resp = await http.post("/api/sessions", json={"driver": "idle", "generator": "noweights"})
    assert resp.status == 503
    assert "unet/diffusion_pytorch_model.safetensors" in (await _json(resp))["error"]
    assert not http.app[SESSIONS].sessions


async def test_worker_that_does_not_answer_is_503():
    from flamecast.server.settings import Settings

    settings = Settings(port=0, worker_input="tcp://127.0.0.1:9", worker_output="tcp://127.0.0.1:9", open_timeout=1.0)
    async with running_app(settings) as http:
        resp = await http.post("/api/sessions", json={})
        assert resp.status == 503
        assert "did not answer" in (await _json(resp))["error"]
        assert not http.app[SESSIONS].sessions


async def test_control_input(http):
    sid = (await (await http.post("/api/sessions", json={})).json())["id"]
    resp = await http.post(f"/api/sessions/{sid}/input", json={"kind": "prompt", "text": "x" * (MAX_PROMPT_CHARS + 1)})
    assert resp.status == 413 and str(MAX_PROMPT_CHARS) in (await _json(resp))["error"]
    resp = await http.post(f"/api/sessions/{sid}/input", json={"kind": "dance"})
    assert resp.status == 422 and "kind" in (await _json(resp))["error"]
    resp = await http.post(f"/api/sessions/{sid}/input", json={"kind": "interrupt"})
    assert resp.status == 409 and "idle" in (await _json(resp))["error"]  # idle takes no control messages
    resp = await http.post(f"/api/sessions/{sid}/input", json={"kind": "driver", "driver": "nope"})
    assert resp.status == 422
    resp = await http.post(f"/api/sessions/{sid}/input", json={"kind": "driver", "driver": "idle", "options": {"fps": 30}})
    assert resp.status == 200
    info = await (await http.get(f"/api/sessions/{sid}")).json()
    assert info["options"]["fps"] == 30


@pytest.mark.parametrize("path", [
    "/../setup.py", "/%2e%2e/setup.py", "/..%2fsetup.py", "/%2e%2e%2fserver%2fapp.py", "/..%5csetup.py",
    "/__init__.py", "/.hidden", "/%2e%2e", "/....//setup.py", "/static/../../setup.py", "/client.js%00.html",
    "/%2E%2E/%2E%2E/pyproject.toml", "/..%252fsetup.py", "//etc/passwd", "/%2fetc%2fpasswd",
])
async def test_static_paths_cannot_escape_the_client_folder(http, path):
    status, body = await _raw_get(http, path)  # raw bytes: no client-side normalisation
    index = await (await http.get("/")).read()
    assert status in (400, 404) or (status == 200 and body == index), (path, status)
    for marker in (b"setuptools", b"import ", b"root:", b"[project]"):
        assert marker not in body, path


async def _raw_get(http, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(http.host, http.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_bad_offers_are_400(http):
    sid = (await (await http.post("/api/sessions", json={})).json())["id"]
    url = f"/api/sessions/{sid}/offer"
    resp = await http.post(url, data=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status == 400
    for body, needle in [({"type": "offer"}, "sdp"), ({"sdp": "hello", "type": "offer"}, "v=0"),
                         ({"sdp": "v=0\r\nm=video\r\n", "type": "offer"}, "SDP"),
                         ({"sdp": "v=0\r\n", "type": "offer", "tracks": ["back"]}, "unknown track"),
                         ({"sdp": "v=0\r\n", "type": "offer", "codec": "mpeg2"}, "codec"),
                         ({"sdp": "v=0\r\n", "type": "answer"}, "offer")]:
        resp = await http.post(url, json=body)
        assert resp.status == 400, body
        assert needle in (await _json(resp))["error"], body
    assert (await http.get(f"/api/sessions/{sid}")).status == 200, "the session survives bad offers"


async def test_token_protects_the_api_but_not_the_page(worker):
    async with running_app(settings_for(worker, token="s3cret")) as http:
        assert (await http.get("/")).status == 200
        assert (await http.get("/api/plugins")).status == 401
        assert (await http.get("/metrics")).status == 401
        assert (await http.get("/api/plugins", headers={"Authorization": "Bearer wrong"})).status == 401
        assert (await http.get("/api/plugins", headers={"Authorization": "Bearer s3cret"})).status == 200
        assert (await http.get("/api/plugins?token=s3cret")).status == 200


async def test_metrics_are_prometheus_text(http):
    await http.post("/api/sessions", json={})
    text = await (await http.get("/metrics")).text()
    for name in ("flamecast_sessions 1", "flamecast_session_fps_out{", "# TYPE flamecast_session_latency_ms gauge",
                 "flamecast_session_dropped_frames_total{", "flamecast_session_driver_restarts_total{"):
        assert name in text, name
    for line in text.splitlines():
        assert line.startswith("#") or len(line.rsplit(" ", 1)) == 2


async def test_events_socket_streams_stats_and_takes_control(http):
    sid = (await (await http.post("/api/sessions", json={})).json())["id"]
    async with http.ws_connect(f"/api/sessions/{sid}/events") as ws:
        msg = await asyncio.wait_for(ws.receive_json(), 10)
        assert msg["type"] == "stats" and msg["id"] == sid
        await ws.send_str("{broken")
        reply = await _next(ws, "reply")
        assert reply["status"] == 400
        await ws.send_json({"kind": "driver", "driver": "idle", "options": {"smile": 0.5}})
        reply = await _next(ws, "reply")
        assert reply["status"] == 200
        await http.delete(f"/api/sessions/{sid}")
        closed = await _next(ws, "closed")
        assert closed["reason"] == "deleted"


async def _next(ws, kind: str):
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive_json()
            if msg["type"] == kind:
                return msg


class _Recorder:
    def __init__(self):
        self.calls = []

    @hookimpl
    def flamecast_session_started(self, session):
        self.calls.append(("started", session.id, session.driver))

    @hookimpl
    def flamecast_session_ended(self, session, reason):
        self.calls.append(("ended", session.id, reason))


async def test_lifecycle_hooks_are_called(worker):
    recorder = _Recorder()
    async with running_app(settings_for(worker), host=plugin_host(("recorder", recorder))) as http:
        sid = (await (await http.post("/api/sessions", json={})).json())["id"]
        await http.delete(f"/api/sessions/{sid}")
        sid2 = (await (await http.post("/api/sessions", json={})).json())["id"]
    assert recorder.calls == [("started", sid, "idle"), ("ended", sid, "deleted"),
                              ("started", sid2, "idle"), ("ended", sid2, "shutdown")]


class _BuggyDriver(IdleDriver):
    """The idle motion, with a control() that has a bug."""

    name = "buggy"

    async def control(self, message):
        return {"mood": message.data["mood"]}  # KeyError


class _BuggyPlugin:
    @hookimpl
    def flamecast_register_drivers(self, register):
        register(_BuggyDriver)


async def _running_session(http, **body) -> str:
    sid = (await (await http.post("/api/sessions", json=body)).json())["id"]
    async with asyncio.timeout(10):
        while (await (await http.get(f"/api/sessions/{sid}")).json())["stats"]["driver_state"] != "running":
            await asyncio.sleep(0.02)
    return sid


async def test_driver_errors_reach_http_and_the_events_socket_with_the_reason(worker):
    async with running_app(settings_for(worker), host=plugin_host(("buggy", _BuggyPlugin()))) as http:
        sid = await _running_session(http, driver="buggy")
        resp = await http.post(f"/api/sessions/{sid}/input", json={"kind": "prompt", "text": "hi"})
        assert resp.status == 422 and "KeyError" in (await _json(resp))["error"]  # the client left 'mood' out
        async with http.ws_connect(f"/api/sessions/{sid}/events") as ws:
            await ws.send_json({"kind": "prompt", "text": "hi"})
            reply = await _next(ws, "reply")
            assert reply["status"] == 422 and reply["ok"] is False and "driver 'buggy'" in reply["error"]
            await ws.send_json({"kind": "driver", "driver": "idle"})  # the socket and the session go on
            assert await _next(ws, "reply") == {"type": "reply", "status": 200, "ok": True, "driver": "idle"}
        text = await _running_session(http, driver="text")
        bad = {"kind": "prompt", "text": "nod", "data": {"seconds": [1]}}
        resp = await http.post(f"/api/sessions/{text}/input", json=bad)
        assert resp.status == 422 and "driver 'text'" in (await _json(resp))["error"]
        resp = await http.post(f"/api/sessions/{text}/input", json={"kind": "interrupt"})
        assert resp.status == 200 and await resp.json() == {"ok": True, "reply": {"ok": True, "kind": "interrupt", "layer": "text"}}


async def test_layers_are_created_listed_changed_and_reach_their_driver(http):
    bad = await http.post("/api/sessions", json={"layers": [{"driver": "idle", "channels": ["nose"]}]})
    assert bad.status == 422 and "unknown channel group" in (await _json(bad))["error"]
    both = await http.post("/api/sessions", json={"driver": "idle", "layers": [{"driver": "idle"}]})
    assert both.status == 422 and "not both" in (await _json(both))["error"]
    resp = await http.post("/api/sessions", json={"layers": [{"driver": "idle", "name": "sway", "channels": ["head"]},
                                                             {"driver": "text", "channels": ["emotion"]}]})
    assert resp.status == 201, await resp.text()
    info = await resp.json()
    assert [layer["name"] for layer in info["layers"]] == ["base", "sway", "text"]
    sid = info["id"]
    async with asyncio.timeout(20):
        while (await (await http.get(f"/api/sessions/{sid}/layers")).json())["layers"][-1]["state"] != "running":
            await asyncio.sleep(0.05)
    resp = await http.post(f"/api/sessions/{sid}/input", json={"kind": "interrupt", "layer": "text"})
    assert resp.status == 200 and (await resp.json())["reply"]["layer"] == "text"
    resp = await http.post(f"/api/sessions/{sid}/input", json={"kind": "interrupt", "layer": "ghost"})
    assert resp.status == 404 and "no layer 'ghost'" in (await _json(resp))["error"]
    resp = await http.post(f"/api/sessions/{sid}/layers", json={"driver": "idle", "name": "eyes", "channels": ["eyes"],
                                                                "index": 1})
    assert resp.status == 201, await resp.text()
    layers = (await (await http.get(f"/api/sessions/{sid}/layers")).json())["layers"]
    assert [layer["name"] for layer in layers] == ["base", "eyes", "sway", "text"]
    resp = await http.patch(f"/api/sessions/{sid}/layers/eyes", json={"index": 3, "muted": True})
    assert resp.status == 200
    layers = (await resp.json())["layers"]
    assert [layer["name"] for layer in layers][-1] == "eyes" and layers[-1]["muted"] is True
    assert (await http.patch(f"/api/sessions/{sid}/layers/base", json={"index": 2})).status == 422
    assert (await http.delete(f"/api/sessions/{sid}/layers/nope")).status == 404
    assert (await http.delete(f"/api/sessions/{sid}/layers/eyes")).status == 200
    resp = await http.post(f"/api/sessions/{sid}/input", json={"kind": "layer", "action": "add", "driver": "text",
                                                               "name": "text"})
    assert resp.status == 422 and "already has a layer named 'text'" in (await _json(resp))["error"]
    info = await (await http.get(f"/api/sessions/{sid}")).json()
    assert [layer["name"] for layer in info["layers"]] == ["base", "sway", "text"]
    assert info["stats"]["channel_owners"]["head"] == "sway"

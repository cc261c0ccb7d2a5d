"""What a hostile request, message or web page can do to the server: nothing it does not own.

Each test here is one finding of a probe of `flamecast serve` (docs/reliability.md): the request
that did harm before now gets a 4xx that says why, and the server goes on."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from flamecast.server import security
from flamecast.server.state import SESSIONS

from .conftest import png, running_app, settings_for

DEEP = "[" * 100_000 + "]" * 100_000


async def _json(resp):
    return json.loads(await resp.text())


async def _session(http, **body) -> str:
    resp = await http.post("/api/sessions", json=body)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]


async def _post_raw(http, path: str, text: str, content_type: str = "application/json", **headers):
    return await http.post(path, data=text.encode(), headers={"Content-Type": content_type, **headers})


# --- JSON at every entry ------------------------------------------------------------------


@settings(max_examples=200)
@given(depth=st.integers(0, 3000), digits=st.integers(1, 6000), inner=st.sampled_from(["", "1", "{}", '"[["']))
def test_bounded_json_only_returns_or_rejects(depth, digits, inner):
    for text in ("[" * depth + inner + "]" * depth, '{"a":' * depth + "1" + "}" * depth, "9" * digits,
                 '{"x": "' + "[" * depth + '"}'):
        try:
            security.loads(text)
        except security.JSONRejected as exc:
            assert exc.status in (400, 413)


def test_depth_ignores_brackets_inside_strings():
    assert security.loads(json.dumps({"a": "[" * 42, "b": '\\"[[['})) == {"a": "[" * 42, "b": '\\"[[['}
    with pytest.raises(security.JSONRejected, match="nests 33 levels"):
        security.loads("[" * 33 + "]" * 33)
    with pytest.raises(security.JSONRejected, match="digits"):
        security.loads("1" * 5001)
    with pytest.raises(security.JSONRejected, match="out of range"):
        security.loads("[1e999]")
    with pytest.raises(security.JSONRejected, match="NaN is not JSON"):
        security.loads("[NaN]")


async def test_deep_nesting_and_huge_integers_are_400_on_every_route(http):
    sid = await _session(http)
    for path in ("/api/sessions", f"/api/sessions/{sid}/offer", f"/api/sessions/{sid}/input",
                 f"/api/sessions/{sid}/layers"):
        for text in (DEEP, '{"kind": "prompt", "data": {"n": ' + "7" * 5001 + "}}"):
            resp = await _post_raw(http, path, text)
            assert resp.status == 400, (path, resp.status, await resp.text())
    async with http.ws_connect(f"/api/sessions/{sid}/events") as ws:  # the socket answers and stays open
        await ws.send_str(DEEP)
        reply = await _reply(ws)
        assert reply["status"] == 400 and "nests" in reply["error"]
        await ws.send_json({"kind": "driver", "driver": "idle"})
        assert (await _reply(ws))["status"] == 200


async def _reply(ws):
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive_json()
            if msg["type"] == "reply":
                return msg


def test_the_data_channel_answers_garbage_and_never_raises():
    from flamecast.server.rtc import Viewer

    sent = []

    class Channel:
        readyState = "open"
        bufferedAmount = 0

        def send(self, text):
            sent.append(json.loads(text))

    class Quiet:
        id = "s"

    async def go():
        viewer = Viewer(Quiet(), (), 10.0)
        viewer.channel = Channel()
        for message in ("[" * 30_000 + "]" * 30_000, "7" * 5001, b"\x00\xff", "{]", None):
            viewer._on_message(message)
        await viewer.pc.close()

    asyncio.run(go())
    assert [m["status"] for m in sent] == [400, 400, 400]


# --- limits a session asks for ---------------------------------------------------------------


@pytest.mark.parametrize("body,needle", [
    ({"views": [f"v{i}" for i in range(17)]}, "at most 16 views"),
    ({"views": ["left" + "3" * 200 + str(i) for i in range(330)]}, "at most 16 views"),
    ({"views": ["left" + "9" * 400]}, "is not an id"),
    ({"views": [f"left{i}" for i in range(16)], "size": 2048}, "fewer views or a smaller size"),
])
async def test_views_and_sizes_beyond_the_wire_are_422(http, body, needle):
    resp = await http.post("/api/sessions", json=body)
    assert resp.status == 422 and needle in (await _json(resp))["error"]
    assert not http.app[SESSIONS].sessions


# --- origins, hosts, content types ---------------------------------------------------------


async def test_other_origins_other_hosts_and_plain_text_are_refused(http):
    resp = await http.post("/api/sessions", json={}, headers={"Origin": "http://evil.example"})
    assert resp.status == 403 and "evil.example" in (await _json(resp))["error"]
    resp = await _post_raw(http, "/api/sessions", "{}", "text/plain")
    assert resp.status == 415 and "application/json" in (await _json(resp))["error"]
    resp = await http.get("/api/sessions", headers={"Host": "evil.example"})
    assert resp.status == 403  # DNS rebinding: a page on evil.example resolved to 127.0.0.1
    assert not http.app[SESSIONS].sessions
    own = f"http://{http.host}:{http.port}"
    for origin in (own, f"http://localhost:{http.port}"):
        resp = await http.get("/api/sessions", headers={"Origin": origin})
        assert resp.status == 200, origin
    assert (await http.post("/api/portraits", data=png(), headers={"Content-Type": "image/png"})).status == 201


async def test_an_allowed_origin_may_call_the_api(worker):
    async with running_app(settings_for(worker, allowed_origins=("https://studio.example",))) as http:
        ok = await http.get("/api/sessions", headers={"Origin": "https://studio.example"})
        assert ok.status == 200
        assert (await http.get("/api/sessions", headers={"Host": "studio.example"})).status == 200
        assert (await http.get("/api/sessions", headers={"Origin": "https://studio.example.evil"})).status == 403


def test_origin_rules():
    from flamecast.server.settings import Settings

    s = Settings()
    assert security.origin_allowed(s, "http://127.0.0.1:9999", "127.0.0.1:8080")
    assert security.origin_allowed(s, "http://[::1]:8080", "[::1]:8080")
    assert not security.origin_allowed(s, "null", "127.0.0.1:8080")
    assert not security.origin_allowed(s, "http://127.0.0.1.evil.example", "127.0.0.1:8080")
    assert security.host_allowed(s, "localhost:8080") and not security.host_allowed(s, "evil.example:8080")
    assert security.host_allowed(s.replace(host="0.0.0.0", token="t"), "my-box.lan:8080")


# --- the token --------------------------------------------------------------------------------


async def test_the_token_comes_from_the_header_or_its_cookie_never_the_url(worker):
    async with running_app(settings_for(worker, token="s3cret")) as http:
        assert (await http.get("/api/plugins?token=s3cret")).status == 401
        assert (await http.get("/api/plugins", headers={"Authorization": "s3cret"})).status == 401
        assert (await http.get("/api/plugins", headers={"Authorization": "Basic s3cret"})).status == 401
        ok = await http.get("/api/plugins", headers={"Authorization": "Bearer s3cret"})
        assert ok.status == 200
        cookie = ok.cookies[security.TOKEN_COOKIE]
        assert cookie.value == "s3cret" and cookie["httponly"] and cookie["samesite"] == "Strict"
        assert (await http.get("/api/plugins")).status == 200  # the cookie jar sends it back (WebSockets)
        http.session.cookie_jar.clear()
        assert (await http.get("/api/plugins")).status == 401


def test_the_access_log_never_writes_a_query_string(caplog):
    from unittest import mock

    logger = logging.getLogger("test.access")
    access = security.QuietAccessLogger(logger, "")
    request = mock.Mock(remote="127.0.0.1", method="GET", path="/api/plugins", path_qs="/api/plugins?token=s3cret")
    with caplog.at_level(logging.INFO, "test.access"):
        access.log(request, mock.Mock(status=401, body_length=10), 0.001)
    assert "/api/plugins" in caplog.text and "s3cret" not in caplog.text


# --- pages and files -------------------------------------------------------------------------


async def test_pages_carry_a_policy_and_long_names_are_404(http):
    page = await http.get("/")
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    obs = await http.get("/obs.html")
    assert "'sha256-" in obs.headers["Content-Security-Policy"], "the OBS page's inline script is allowed by hash"
    assert (await http.get("/client.js")).headers["X-Content-Type-Options"] == "nosniff"
    resp = await http.get("/" + "a" * 5000 + ".js")
    assert resp.status == 404


def _image(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 150, 120)).save(buf, format=fmt)
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares its size and holds next to nothing (a decompression bomb's shape)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data", [_image("GIF"), _image("BMP"), _image("TIFF"), _image("ICO"), _png_header(1, 40_000_000),
                                  _png_header(20_000, 20_000)], ids=["gif", "bmp", "tiff", "ico", "1x40M", "20k2"])
async def test_only_png_jpeg_webp_of_sane_size_are_portraits(http, data):
    resp = await http.post("/api/portraits", data=data, headers={"Content-Type": "application/octet-stream"})
    assert resp.status == 422, await resp.text()
    for fmt in ("PNG", "JPEG", "WEBP"):
        resp = await http.post("/api/portraits", data=_image(fmt), headers={"Content-Type": "application/octet-stream"})
        assert resp.status == 201, fmt


# --- driver options that name files ----------------------------------------------------------


async def test_file_options_are_the_servers_not_the_clients(http):
    from flamecast.drivers.text.driver import TextDriver

    for body in ({"driver": "text", "options": {"weights": "/etc"}},
                 {"layers": [{"driver": "text", "channels": ["emotion"], "options": {"clip_path": "/proc/self"}}]}):
        resp = await http.post("/api/sessions", json=body)
        assert resp.status == 422 and "server" in (await _json(resp))["error"], body
    sid = await _session(http)
    for body in ({"kind": "driver", "driver": "text", "options": {"weights": "/root"}},
                 {"kind": "option", "data": {"weights": "/etc"}}):
        resp = await http.post(f"/api/sessions/{sid}/input", json=body)
        assert resp.status == 422, body
    resp = await http.post(f"/api/sessions/{sid}/layers", json={"driver": "text", "options": {"weights": "/etc"}})
    assert resp.status == 422
    async with http.ws_connect(f"/api/sessions/{sid}/events") as ws:
        await ws.send_json({"kind": "option", "data": {"clip_path": "/etc"}})
        assert (await _reply(ws))["status"] == 422
    # the operator's own tools still take them
    assert TextDriver.parse_options({"weights": "/srv/text-weights"}).weights == "/srv/text-weights"


# --- viewer slots ----------------------------------------------------------------------------


async def test_offers_that_never_connect_do_not_hold_the_viewer_slots(worker):
    from aiortc import RTCPeerConnection

    async with running_app(settings_for(worker, max_viewers=8, viewer_timeout=1.0)) as http:
        sid = await _session(http)
        peers, statuses = [], []
        for _ in range(7):  # offers whose peers never answer ICE
            pc = RTCPeerConnection()
            pc.addTransceiver("video", direction="recvonly")
            await pc.setLocalDescription(await pc.createOffer())
            peers.append(pc)
            resp = await http.post(f"/api/sessions/{sid}/offer", json={"sdp": pc.localDescription.sdp, "type": "offer",
                                                                        "tracks": ["front"]})
            statuses.append(resp.status)
        assert statuses.count(200) == 4 and statuses[4:] == [429] * 3, statuses
        session = http.app[SESSIONS].get(sid)
        async with asyncio.timeout(20):  # their slots are freed once the connect timeout passes
            while session.viewers:
                await asyncio.sleep(0.1)
        for pc in peers:
            await pc.close()

"""WebRTC end to end: a real aiortc client receives every view track from a real worker."""

from __future__ import annotations

import asyncio
import sys
import time

import numpy as np
import pytest

from flamecast.plugins import Driver, FlameFrame, hookimpl
from flamecast.plugins.protocol import AudioChunk
from flamecast.server.api_client import ClientError, FlamecastClient, drain
from flamecast.server.state import SESSIONS

from .conftest import SIZE, VIEWS, face_png, plugin_host, running_app, settings_for


async def test_every_view_track_streams_changing_frames(api):
    info = await api.create_session(driver="idle")
    assert info["views"] == list(VIEWS)
    assert info["tracks"] == [*VIEWS, "mosaic"]
    async with await api.connect(info["id"], tracks=list(VIEWS)) as conn:
        received = await asyncio.gather(*(drain(conn, name, 100, timeout=60) for name in VIEWS))
    _check_streams(dict(zip(VIEWS, received)), SIZE, min_change=1.0)


async def test_mesh_generator_end_to_end(mesh_worker):
    """The real worker with the real mesh generator: >= 100 frames on every view track."""
    async with running_app(settings_for(mesh_worker, generator="mesh", size=128, open_timeout=120)) as http:
        async with FlamecastClient(str(http.make_url("/"))) as client:
            info = await client.create_session(driver="idle")
            assert len(info["views"]) >= 2
            async with await client.connect(info["id"]) as conn:
                received = await asyncio.gather(*(drain(conn, n, 100, timeout=120) for n in info["views"]))
    _check_streams(dict(zip(info["views"], received)), 128, min_change=0.05)


def _check_streams(received: dict, size: int, min_change: float) -> None:
    for name, frames in received.items():
        assert len(frames) >= 100
        images = np.stack([f.to_ndarray(format="rgb24") for f in frames]).astype(np.int16)
        assert images.shape[1:] == (size, size, 3), name
        assert images.std() > 5, f"{name} is a flat picture"
        change = np.abs(np.diff(images, axis=0)).mean(axis=(1, 2, 3))
        assert change.mean() > min_change, f"{name} frames do not change over time"
        pts = [f.pts for f in frames]
        assert all(b > a for a, b in zip(pts, pts[1:])), "pts must increase"


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_codecs_and_mosaic(api, codec):
    info = await api.create_session()
    async with await api.connect(info["id"], tracks=["mosaic"], codec=codec) as conn:
        frames = await drain(conn, "mosaic", 10, timeout=30)
        assert codec.upper() in conn.pc.remoteDescription.sdp.upper()
    image = frames[-1].to_ndarray(format="rgb24")
    assert image.shape == (SIZE, 2 * SIZE, 3)  # two views side by side


async def test_latency_is_measured_at_the_client(api):
    info = await api.create_session()
    async with await api.connect(info["id"], tracks=["front"]) as conn:
        await drain(conn, "front", 100, timeout=30)
        samples = conn.latency_ms("front")
    assert len(samples) >= 40, "the client could not map decoded frames to capture times"
    assert 0 < float(np.median(samples)) < 2000
    stats = (await api.session(info["id"]))["stats"]
    assert stats["client_latency_ms"]["samples"] >= 25
    assert stats["latency_ms"]["p50"] is not None


class InputProbe(Driver):
    """Test-only driver that needs audio and video: counts what reaches its queues."""

    name = "inputprobe"
    needs_audio = True
    needs_video = True
    seen: dict[str, dict[str, int]] = {}

    async def frames(self):
        counts = self.seen.setdefault(self.context.session_id, {"audio": 0, "video": 0, "shape": None})
        while True:
            while not self.context.video_in.empty():
                image, capture_ns = self.context.video_in.get_nowait()
                counts["video"] += 1
                counts["shape"] = image.shape
            while not self.context.audio_in.empty():
                chunk = self.context.audio_in.get_nowait()
                assert chunk.samples.dtype == np.int16 and chunk.samples.ndim == 2
                counts["audio"] += 1
            yield FlameFrame(expression=np.zeros(self.context.head.n_expression, np.float32))


class ProbePlugin:
    @hookimpl
    def flamecast_register_drivers(self, register):
        register(InputProbe)


async def test_browser_mic_and_camera_reach_a_driver_that_needs_them(worker):
    from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

    async with running_app(settings_for(worker), host=plugin_host(("probe", ProbePlugin()))) as http:
        async with FlamecastClient(str(http.make_url("/"))) as client:
            probe = await client.create_session(driver="inputprobe")
            idle = await client.create_session(driver="idle")
            senders = [AudioStreamTrack(), VideoStreamTrack()]
            async with await client.connect(probe["id"], tracks=["front"], send=senders) as conn:
                await drain(conn, "front", 5)
                async with asyncio.timeout(20):
                    while InputProbe.seen.get(probe["id"], {}).get("video", 0) < 10 or InputProbe.seen[probe["id"]]["audio"] < 10:
                        await drain(conn, "front", 1)
            assert InputProbe.seen[probe["id"]]["shape"] == (480, 640, 3)
            # a driver that does not need input gets none: its session's queues stay empty
            async with await client.connect(idle["id"], tracks=["front"], send=[VideoStreamTrack()]) as conn:
                await drain(conn, "front", 20)
            session = http.app[SESSIONS].get(idle["id"])
            assert all(q is None or q.empty() for inputs in session.inputs.values() for q in (inputs.audio, inputs.video))
            assert session.inputs_dropped == 0


async def test_two_sessions_with_different_portraits_never_mix(api):
    red = await api.create_session(portrait=face_png(tint=(1.0, 0.45, 0.45)))
    blue = await api.create_session(portrait=face_png(tint=(0.45, 0.45, 1.0)))
    async with await api.connect(red["id"], tracks=["front"]) as a, await api.connect(blue["id"], tracks=["front"]) as b:
        frames_a, frames_b = await asyncio.gather(drain(a, "front", 60), drain(b, "front", 60))
    def tone(frame):
        img = frame.to_ndarray(format="rgb24").astype(int)
        return img[:, :, 0].mean() - img[:, :, 2].mean()  # red minus blue, bar included in both
    tones_a = [tone(f) for f in frames_a[5:]]
    tones_b = [tone(f) for f in frames_b[5:]]
    assert min(tones_a) > 10, "a frame of the red session is not red"
    assert max(tones_b) < -10, "a frame of the blue session is not blue"


async def test_control_over_the_data_channel(api):
    info = await api.create_session()
    async with await api.connect(info["id"], tracks=["front"]) as conn:
        await drain(conn, "front", 5)
        async with asyncio.timeout(20):
            while conn.channel.readyState != "open":
                await drain(conn, "front", 1)
        conn.send_control(kind="driver", driver="idle", options={"fps": 30})
        conn.send_control(kind="prompt", text="x" * 600)
        async with asyncio.timeout(20):
            while len([e for e in conn.events if e.get("type") == "reply"]) < 2:
                await drain(conn, "front", 1)
    replies = sorted((e["status"], e["ok"]) for e in conn.events if e.get("type") == "reply")
    assert replies == [(200, True), (413, False)]
    assert "600 characters" in next(e["error"] for e in conn.events if e.get("status") == 413)
    assert (await api.session(info["id"]))["options"]["fps"] == 30


async def test_viewers_per_session_are_limited(worker):
    async with running_app(settings_for(worker, max_viewers=1)) as http:
        async with FlamecastClient(str(http.make_url("/"))) as client:
            info = await client.create_session()
            async with await client.connect(info["id"], tracks=["front"]) as conn:
                await drain(conn, "front", 2)
                with pytest.raises(ClientError) as exc:
                    await client.connect(info["id"], tracks=["front"])
                assert exc.value.status == 429 and "viewers" in exc.value.message
                await drain(conn, "front", 5)  # the first viewer is unaffected


async def test_many_viewers_share_one_source(api, http):
    info = await api.create_session()
    conns = [await api.connect(info["id"], tracks=["front"]) for _ in range(3)]
    try:
        await asyncio.gather(*(drain(c, "front", 30) for c in conns))
        session = http.app[SESSIONS].get(info["id"])
        assert len(session.viewers) == 3
    finally:
        for c in conns:
            await c.close()
    async with asyncio.timeout(10):
        while session.viewers:
            await asyncio.sleep(0.05)


async def test_vanished_client_session_is_reaped_and_others_go_on(worker, tmp_path):
    settings = settings_for(worker, viewer_timeout=2.0, idle_timeout=1.0)
    async with running_app(settings) as http:
        url = str(http.make_url("/"))
        async with FlamecastClient(url) as client:
            other = await client.create_session()
            async with await client.connect(other["id"], tracks=["front"]) as keep:
                await drain(keep, "front", 10)
                ready = tmp_path / "ready"
                proc = await asyncio.create_subprocess_exec(sys.executable, "-c", VANISHING_CLIENT, url, str(ready))
                try:
                    async with asyncio.timeout(60):
                        while not ready.exists():
                            await asyncio.sleep(0.1)
                    gone = ready.read_text()
                    proc.kill()  # no goodbye: no DTLS close, no DELETE
                    await proc.wait()
                    async with asyncio.timeout(30):
                        while gone in http.app[SESSIONS].sessions:
                            await drain(keep, "front", 1)  # the other session streams on meanwhile
                finally:
                    if proc.returncode is None:
                        proc.kill()
                assert http.app[SESSIONS].ended["client-gone"] == 1
                await drain(keep, "front", 25)
                assert (await client.session(other["id"]))["state"] == "running"


VANISHING_CLIENT = """
import asyncio, sys
from pathlib import Path
from flamecast.server.api_client import ClientError, FlamecastClient, drain

async def main(url, ready):
    client = FlamecastClient(url)
    info = await client.create_session()
    conn = await client.connect(info["id"], tracks=["front"])
    await drain(conn, "front", 10)
    Path(ready).write_text(info["id"])
    while True:
        await conn.recv("front")

asyncio.run(main(*sys.argv[1:]))
"""


class Beeper(Driver):
    """Test-only driver that passes audio through: a 440 Hz tone, 40 ms per frame."""

    name = "beeper"
    provides_audio = True

    async def frames(self):
        rate, n, seq = 48000, 1920, 0
        t = np.arange(n) / rate
        while True:
            tone = (8000 * np.sin(2 * np.pi * 440 * (t + seq * n / rate))).astype(np.int16)[:, None]
            self.context.emit_audio(AudioChunk(self.context.session_id, seq, time.time_ns(), rate, tone))
            seq += 1
            yield FlameFrame(expression=np.zeros(self.context.head.n_expression, np.float32))


class BeeperPlugin:
    @hookimpl
    def flamecast_register_drivers(self, register):
        register(Beeper)


async def test_driver_audio_reaches_clients_as_an_audio_track(worker):
    async with running_app(settings_for(worker), host=plugin_host(("beeper", BeeperPlugin()))) as http:
        async with FlamecastClient(str(http.make_url("/"))) as client:
            info = await client.create_session(driver="beeper")
            async with await client.connect(info["id"], tracks=["front"], audio=True) as conn:
                await drain(conn, "front", 10)
                frames = [await conn.recv_audio() for _ in range(50)]
    pcm = np.concatenate([f.to_ndarray().reshape(-1) for f in frames[10:]]).astype(np.float32)
    assert np.sqrt(np.mean(pcm ** 2)) > 1000, "the tone did not come through"


async def test_session_survives_a_worker_restart():
    """A worker that restarts on the same endpoints loses its sessions; the server offers each
    again once its video stops, and the viewer's stream resumes on the same connection."""
    from flamecast.renderer.worker import GeneratorWorker, WorkerSettings

    def start(inp="tcp://127.0.0.1:0", out="tcp://127.0.0.1:0"):
        w = GeneratorWorker(WorkerSettings(input=inp, output=out, backends=("swatch",), default_backend="swatch",
                                           stats_interval_s=0), host=plugin_host())
        w.start()
        return w

    first = start()
    endpoints = dict(first.endpoints)
    second = None
    try:
        async with running_app(settings_for(first)) as http:
            async with FlamecastClient(str(http.make_url("/"))) as client:
                info = await client.create_session()
                async with await client.connect(info["id"], tracks=["front"]) as conn:
                    await drain(conn, "front", 10)
                    await asyncio.to_thread(first.stop)
                    second = await asyncio.to_thread(start, endpoints["input"], endpoints["output"])
                    await drain(conn, "front", 25, timeout=40)
                stats = (await client.session(info["id"]))["stats"]
        assert stats["reopens"] >= 1
    finally:
        first.stop()
        if second is not None:
            second.stop()

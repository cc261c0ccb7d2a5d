"""Outputs (virtual camera, recorder), session backgrounds and recordings with audio in sync.

The ``flash`` generator paints a view white while the head is turned (yaw > 0.25) and black
otherwise, with a round matte; the ``clicker`` driver turns the head for three frames every
second and passes a 1 kHz tone through for exactly those frames (silence between). In a
recording the white pictures and the tones must line up.
"""

from __future__ import annotations

import argparse
import asyncio

import av
import numpy as np
import pytest

from flamecast.plugins import (
    Driver,
    FlameFrame,
    Generator,
    GeneratorSession,
    RenderedFrame,
    hookimpl,
    pose_slice,
)
from flamecast.plugins.protocol import AudioChunk, VideoFrame
from flamecast.server import outputs as outputs_plugin
from flamecast.server.media import Background, SessionVideo, mosaic, over_color, pack_matte
from flamecast.server.state import SESSIONS
from flamecast.server.stats import SessionStats
from flamecast.plugins.manager import make_plugin_host

from .conftest import SwatchPlugin, running_app, settings_for, start_worker

SIZE = 64
RATE = 25
TONE_HZ = 1000
SR = 16000


def disc(size: int) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 3) ** 2).astype(np.uint8) * 255


class FlashSession(GeneratorSession):
    def __init__(self, size, views):
        self.size, self.view_ids = size, views

    def step(self, frames):
        out = []
        for f in frames:
            turned = float(f.pose[pose_slice("neck")][1]) > 0.25
            views = np.full((len(self.view_ids), self.size, self.size, 3), 255 if turned else 0, np.uint8)
            matte = np.repeat(disc(self.size)[None], len(self.view_ids), 0)
            out.append(RenderedFrame(f, views, self.view_ids, matte=matte))
        return out


class FlashGenerator(Generator):
    name = "flash"
    description = "white while the head is turned, black otherwise; a round matte (tests)"

    def open_session(self, spec):
        return FlashSession(spec.options.size, tuple(spec.options.views or ("front",)))


class ClickerDriver(Driver):
    name = "clicker"
    description = "turns the head for 3 frames each second and beeps exactly then (tests)"
    rate = RATE
    provides_audio = True

    async def frames(self):
        i = 0
        n = SR // RATE
        tone = (0.5 * 32767 * np.sin(2 * np.pi * TONE_HZ * np.arange(n) / SR)).astype(np.int16)[:, None]
        while True:
            on = i % RATE < 3
            pose = np.zeros(15, np.float32)
            pose[pose_slice("neck")] = [0.0, 0.5 if on else 0.0, 0.0]
            samples = tone if on else np.zeros_like(tone)
            self.context.emit_audio(AudioChunk(self.context.session_id, i, self.context.clock.now_ns(), SR, samples))
            yield FlameFrame(pose=pose, expression=np.zeros(self.context.head.n_expression, np.float32))
            i += 1


class TestPlugin:
    @hookimpl
    def flamecast_register_generators(self, register):
        register(FlashGenerator)

    @hookimpl
    def flamecast_register_drivers(self, register):
        register(ClickerDriver)


def host():
    return make_plugin_host(extra_plugins=[("swatch", SwatchPlugin()), ("flashplugin", TestPlugin())])


@pytest.fixture(scope="module")
def flash_worker():
    w = start_worker(host(), "flash")
    yield w
    w.stop()


async def until(condition, timeout: float = 20.0) -> None:
    """Wait until ``condition()`` holds (checked as the event loop turns), or fail."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.02)


def flash_settings(worker):
    return settings_for(worker, generator="flash", size=SIZE, default_driver="clicker")


# --- backgrounds ------------------------------------------------------------------------------


def test_backgrounds_parse_and_compose():
    assert Background.parse(None).kind == "portrait" and Background.parse("transparent").kind == "transparent"
    assert Background.parse("#00FF00").rgb == (0, 255, 0) and Background.parse("#00ff00").value == "#00ff00"
    with pytest.raises(ValueError, match="portrait"):
        Background.parse("green")
    views = np.full((2, 4, 4, 3), 200, np.uint8)
    mattes = np.zeros((2, 4, 4), np.uint8)
    mattes[:, 1:3, 1:3] = 255
    out = over_color(views, mattes, (0, 255, 0))
    assert (out[:, 0, 0] == [0, 255, 0]).all() and (out[:, 1, 1] == 200).all()
    packed = pack_matte(views[0], mattes[0])
    assert packed.shape == (4, 8, 3) and (packed[:, 4:, 0] == mattes[0]).all() and (packed[:, :4] == 200).all()
    assert mosaic(mattes).shape == (4, 8)


async def test_a_transparent_session_sends_colour_and_matte_side_by_side():
    video = SessionVideo(("front", "left"), SessionStats(), lambda frame, pts: None)
    video.background = Background.parse("transparent")
    views = np.full((2, 8, 8, 3), 90, np.uint8)
    mattes = np.zeros((2, 8, 8), np.uint8)
    mattes[:, 2:6, 2:6] = 255
    frame = VideoFrame("s", 1, video.epoch_ns + 1_000_000, 0, views, ("front", "left"))
    opaque = video.push(frame, mattes)
    assert opaque.views is views  # outputs get the generator's picture: a file has no alpha
    front = (await video.sources["front"].recv()).to_ndarray(format="rgb24")
    assert front.shape == (8, 16, 3)
    assert front[4, 12].mean() > 230 and front[0, 8].mean() < 25 and abs(int(front[4, 4].mean()) - 90) < 12
    assert (await video.sources["mosaic"].recv()).width == 32
    # without a matte the background cannot apply: the picture passes and the session says so
    video.push(frame, None)
    assert video.matte_missing and (await video.sources["front"].recv()).width == 8
    video.stop()


# --- the virtual camera ------------------------------------------------------------------------


class FakeCamera:
    """A pyvirtualcam backend that keeps what it is sent (pyvirtualcam.register_backend)."""

    instances: list["FakeCamera"] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw):
        self.size, self.fps, self.frames, self.closed = (width, height), fps, [], False
        FakeCamera.instances.append(self)

    def device(self):
        return "/dev/fake0"

    def native_fourcc(self):
        return None

    def send(self, frame):
        self.frames.append(frame.copy())

    def close(self):
        self.closed = True


async def test_virtual_camera_output_sends_the_view_to_the_camera(flash_worker):
    pyvirtualcam = pytest.importorskip("pyvirtualcam")
    pyvirtualcam.register_backend("fake", FakeCamera)
    FakeCamera.instances.clear()
    async with running_app(flash_settings(flash_worker), host=host()) as http:
        session = await (await http.post("/api/sessions", json={"background": "#00ff00"})).json()
        resp = await http.post(f"/api/sessions/{session['id']}/outputs",
                               json={"name": "virtualcam", "options": {"backend": "fake", "view": "front"}})
        assert resp.status == 201, await resp.text()
        assert (await resp.json())["device"] == "/dev/fake0"
        camera = FakeCamera.instances[-1]
        assert camera.size == (SIZE, SIZE)
        await until(lambda: len(camera.frames) >= 30)
        frames = np.stack(camera.frames).reshape(-1, SIZE, SIZE, 3)  # pyvirtualcam hands backends flat RGB
        centre = frames[:, SIZE // 2, SIZE // 2]
        assert centre.max() == 255 and centre.min() == 0  # the flashes reach the camera
        if hasattr(VideoFrame, "mattes"):  # the wire carries the generator's matte
            assert (frames[:, 0, 0] == [0, 255, 0]).all()  # composed over the session's chroma green
        listed = await (await http.get(f"/api/sessions/{session['id']}/outputs")).json()
        assert listed["outputs"][0]["name"] == "virtualcam" and "record" in listed["available"]
        resp = await http.post(f"/api/sessions/{session['id']}/outputs", json={"name": "virtualcam"})
        assert resp.status == 409
        resp = await http.delete(f"/api/sessions/{session['id']}/outputs/virtualcam")
        assert resp.status == 200 and camera.closed


async def test_without_a_camera_backend_the_message_says_what_to_install(flash_worker):
    pytest.importorskip("pyvirtualcam")
    import glob

    if glob.glob("/dev/video*"):
        pytest.skip("this machine has video devices (perhaps a real v4l2loopback)")
    async with running_app(flash_settings(flash_worker), host=host()) as http:
        session = await (await http.post("/api/sessions", json={})).json()
        resp = await http.post(f"/api/sessions/{session['id']}/outputs",
                               json={"name": "virtualcam", "options": {"backend": "v4l2loopback"}})
        message = (await resp.json())["error"]
        assert resp.status == 503 and "v4l2loopback" in message and "OBS" in message
        resp = await http.post("/api/sessions", json={"outputs": [{"name": "nope"}]})
        assert resp.status == 422 and "virtualcam" in (await resp.json())["error"]


# --- recordings with sound ---------------------------------------------------------------------


def beeps_and_flashes(path):
    """(times the picture turns white, times a tone starts), in seconds, from an MP4."""
    with av.open(str(path)) as c:
        assert [s.type for s in c.streams] == ["video", "audio"]
        flashes, prev = [], False
        for frame in c.decode(video=0):
            white = frame.to_ndarray(format="gray").mean() > 128
            if white and not prev:
                flashes.append(float(frame.pts * frame.time_base))
            prev = white
    with av.open(str(path)) as c:
        beeps, prev, t_prev = [], False, None
        for frame in c.decode(audio=0):
            pcm = frame.to_ndarray()[0]
            t0 = float(frame.pts * frame.time_base)
            for k in range(0, len(pcm), 240):  # 5 ms blocks at 48 kHz
                loud = np.abs(pcm[k:k + 240]).max() > 0.2
                if loud and not prev:
                    beeps.append(t0 + k / frame.sample_rate)
                prev = loud
    return flashes, beeps


def assert_in_sync(flashes, beeps, tolerance):
    assert len(flashes) >= 2 and len(beeps) >= 2, (flashes, beeps)
    offsets = [min(beeps, key=lambda b: abs(b - f)) - f for f in flashes]
    assert max(abs(o) for o in offsets) < tolerance, offsets


async def test_the_recorder_output_writes_audio_in_sync(flash_worker, tmp_path, monkeypatch):
    monkeypatch.setenv("FLAMECAST_DATA_DIR", str(tmp_path))
    async with running_app(flash_settings(flash_worker), host=host()) as http:
        body = {"outputs": [{"name": "record", "options": {"file": "take.mp4", "seconds": 3.5}}]}
        session = await (await http.post("/api/sessions", json=body)).json()
        assert session["outputs"][0]["path"] == str(tmp_path / "recordings" / "take.mp4")
        live = http.app[SESSIONS].get(session["id"])
        await until(lambda: live.outputs.describe()[0]["finished"])
        assert live.outputs.describe()[0]["frames"] > 60
    flashes, beeps = beeps_and_flashes(tmp_path / "recordings" / "take.mp4")
    assert_in_sync(flashes, beeps, tolerance=0.045)


async def test_flamecast_record_writes_an_mp4_with_audio_in_sync(flash_worker, tmp_path):
    from flamecast.cli import record as record_cli

    async with running_app(flash_settings(flash_worker), host=host()) as http:
        session = await (await http.post("/api/sessions", json={"channel": "main"})).json()
        args = argparse.Namespace(out=str(tmp_path / "rec.mp4"), url=str(http.make_url("/")).rstrip("/"),
                                  seconds=3.5, view="front", session=None, channel="main", driver=None, option=[],
                                  token=None, audio=True)
        summary = await record_cli.record(record_cli.RecordCommand.from_args(args))
        assert summary["frames"]["front"] > 60 and summary["audio_seconds"] > 3
        assert (await (await http.get(f"/api/sessions/{session['id']}")).json())["state"] == "running"
    flashes, beeps = beeps_and_flashes(tmp_path / "rec.mp4")
    assert_in_sync(flashes, beeps, tolerance=0.1)

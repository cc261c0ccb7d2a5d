"""Headless Chromium sends a fake camera (a video of a photograph that tilts) and a fake
microphone (espeak-ng speech) over WebRTC; the webcam layer turns the avatar's head with the
camera while the microphone layer moves its mouth with the voice."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from flamecast.plugins import pose_slice
from flamecast.server.state import SESSIONS

from .conftest import running_app, settings_for

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]
ROLL_DEG = 20.0
PERIOD_S = 3.0

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium (CI installs it)"),
    pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (CI installs it)"),
]

# Offer the session's front view, send the fake camera and microphone, answer through the API.
SEND_MEDIA = """async ([sid]) => {
  const media = await navigator.mediaDevices.getUserMedia({video: {width: 320, height: 240}, audio: true});
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', {direction: 'recvonly'});
  for (const track of media.getTracks()) pc.addTransceiver(track, {direction: 'sendonly'});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(done => {
    if (pc.iceGatheringState === 'complete') return done();
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && done());
  });
  const resp = await fetch(`/api/sessions/${sid}/offer`, {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: 'offer', tracks: ['front']})});
  if (!resp.ok) throw new Error(await resp.text());
  await pc.setRemoteDescription(await resp.json());
  window.flamecastPeer = pc;
  return media.getTracks().map(t => t.kind).sort().join(',');
}"""


def _tilting_photo_y4m(path: Path, fps: int = 30) -> Path:
    """The astronaut photograph rolling +-20 degrees over a 3 s period, as Chromium's fake camera."""
    import av
    import cv2
    from skimage import data

    face = cv2.resize(data.astronaut()[10:290, 100:380], (200, 200), interpolation=cv2.INTER_AREA)
    with av.open(str(path), "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for i in range(int(PERIOD_S * fps)):
            angle = ROLL_DEG * np.sin(2 * np.pi * i / (PERIOD_S * fps))
            m = cv2.getRotationMatrix2D((100, 100), angle, 1.0)
            m[:, 2] += [60, 20]
            frame = cv2.warpAffine(face, m, (320, 240), borderMode=cv2.BORDER_REPLICATE)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _speech_wav(path: Path) -> Path:
    text = "Hello there. My mouth moves when I speak, and it closes in the pauses. Mama made apple pie."
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), text], check=True, capture_output=True)
    return path


def _roll(frame) -> float:
    return float(frame.pose[pose_slice("global")][2] + frame.pose[pose_slice("neck")][2])


async def test_head_follows_the_camera_while_the_mouth_follows_the_voice(mesh_worker, tmp_path):
    from playwright.async_api import async_playwright

    video, audio = _tilting_photo_y4m(tmp_path / "tilt.y4m"), _speech_wav(tmp_path / "speech.wav")
    settings = settings_for(mesh_worker, generator="mesh", size=128, open_timeout=120)
    layers = [{"driver": "webcam", "options": {"source": "browser"}, "channels": ["head", "eyes"]},
              {"driver": "microphone", "options": {"source": "client", "passthrough": False},
               "channels": ["jaw", "mouth"]}]
    async with running_app(settings) as http, async_playwright() as pw:
        resp = await http.post("/api/sessions", json={"layers": layers, "views": ["front"]})
        assert resp.status == 201, await resp.text()
        sid = (await resp.json())["id"]
        session = http.app[SESSIONS].get(sid)
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[
            *ARGS, f"--use-file-for-fake-video-capture={video}", f"--use-file-for-fake-audio-capture={audio}"])
        try:
            page = await browser.new_page()
            await page.goto(str(http.make_url("/")))
            assert await page.evaluate(SEND_MEDIA, [sid]) == "audio,video"
            rolls, jaws, owners = [], [], set()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(rolls) < 8 * 25:
                await asyncio.sleep(0.04)
                frame = session.stack.last_frame
                layer_state = {layer.name: layer.is_active() for layer in session.stack.layers}
                if frame is None or not layer_state.get("webcam"):
                    continue
                rolls.append(_roll(frame))
                jaws.append(float(frame.pose[pose_slice("jaw")][0]))
                owners.add(session.stack.stats().owners["jaw"])
            webcam = next(layer for layer in session.describe_layers() if layer["name"] == "webcam")
            assert webcam["driver_stats"]["tracker"] == "landmarks", "the session's stats say which tracker runs"
        finally:
            await browser.close()
    assert len(rolls) >= 100, f"the webcam layer tracked only {len(rolls)} frames in 60 s"
    rolls_deg = np.degrees(np.array(rolls))
    assert rolls_deg.max() - rolls_deg.min() > ROLL_DEG, "the head does not tilt with the camera"
    assert rolls_deg.max() > 5 and rolls_deg.min() < -5, "the head tilts one way only"
    jaws = np.array(jaws)
    assert jaws.max() > 0.08 and jaws.std() > 0.02, "the mouth does not move with the voice"
    assert "microphone" in owners, "the microphone layer never drove the jaw"

"""Headless Chromium on the OBS page: a channel link that follows sessions, and real transparency.

The transparent session's frames are the real ``mesh`` generator's (rendered here, with its
matte) pushed into the session the way the worker link delivers them; the page composes the
colour and matte halves of the track into a canvas with alpha.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pytest

from flamecast.plugins import FlameFrame, GeneratorSessionSpec, pose_slice
from flamecast.plugins.protocol import VideoFrame
from flamecast.server.state import LINK, SESSIONS

from .conftest import running_app, settings_for
from .test_browser import ARGS, CHROMIUM

SHOTS = os.environ.get("FLAMECAST_SCREENSHOTS")  # a folder: write docs/images/obs_*.png there
SIZE = 128

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium (CI installs it)"),
]


@dataclasses.dataclass(frozen=True)
class MattedFrame(VideoFrame):
    """A video message with the generator's mattes, as the worker link hands it to a session."""

    mattes: np.ndarray | None = None


def mesh_frames(n: int = 12):
    """``n`` frames of the real mesh generator (front view), each with its matte."""
    from flamecast.renderer.generators.mesh import MeshGenerator, MeshOptions

    gen = MeshGenerator()
    session = gen.open_session(GeneratorSessionSpec("obs", None, MeshOptions(size=SIZE, views=("front",),
                                                                             fit_iterations=30)))
    frames = []
    for i in range(n):
        pose = np.zeros(15, np.float32)
        pose[pose_slice("neck")] = [0.0, 0.25 * np.sin(2 * np.pi * i / n), 0.0]
        frames.append(FlameFrame(pose=pose, expression=np.zeros(16, np.float32)).stamped(session_id="obs", seq=i,
                                                                                         capture_ns=i))
    return session.step(frames)


async def feed(session, rendered) -> None:
    """Push the rendered frames into the session at 25 fps, as the worker link would."""
    i = 0
    while True:
        r = rendered[i % len(rendered)]
        session.on_video(MattedFrame(session.id, i, time.time_ns(), 0, r.views, r.view_ids, r.matte))
        i += 1
        await asyncio.sleep(0.04)


async def page_text(page) -> str:
    return await page.evaluate("() => document.body.innerText")


async def test_obs_page_follows_a_channel_and_is_transparent_outside_the_head(worker):
    from playwright.async_api import async_playwright

    rendered = await asyncio.to_thread(mesh_frames)
    assert rendered[0].matte is not None and 0.1 < (rendered[0].matte > 0).mean() < 0.9
    settings = settings_for(worker, size=SIZE)
    async with running_app(settings) as http, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        feeder = None
        try:
            obs = await browser.new_page(viewport={"width": 480, "height": 480})
            await obs.goto(str(http.make_url("/obs.html?channel=main&view=front")))
            await obs.wait_for_function("() => /Nothing is live on channel \"main\"/.test(document.body.innerText)")
            # a transparent session takes the channel: the page shows it with alpha
            first = await (await http.post("/api/sessions", json={"channel": "main", "background": "transparent",
                                                                  "views": ["front"]})).json()
            live = http.app[SESSIONS].get(first["id"])
            http.app[LINK].detach(live.id)  # from now on its frames are the mesh generator's, with mattes
            feeder = asyncio.create_task(feed(live, rendered))
            await obs.wait_for_function(
                "() => { const c = document.querySelector('canvas'); return c && !c.hidden && c.width === %d; }" % SIZE,
                timeout=30000)
            await obs.wait_for_function("() => document.querySelector('video').currentTime > 0.5", timeout=30000)
            alpha = decode(await obs.screenshot(omit_background=True))[..., 3]  # the page itself is see-through
            n = alpha.shape[0] // 6
            assert alpha[:n, :n].max() < 10 and alpha[-n:, -n:].max() < 10 and alpha[n * 3, n * 3] > 245
            await obs.add_style_tag(content="html { background: #ff00ff !important; }")  # as OBS over a scene
            shot = await obs.screenshot(path=str(Path(SHOTS) / "obs_transparent.png") if SHOTS else None)
            pixels = decode(shot)
            h, w = pixels.shape[:2]
            magenta = (np.abs(pixels[..., :3].astype(int) - [255, 0, 255]).sum(-1) < 40)
            k = h // 6
            for corner in (magenta[:k, :k], magenta[:k, -k:], magenta[-k:, :k], magenta[-k:, -k:]):
                assert corner.mean() > 0.97  # outside the head: the page shows through
            assert magenta[h // 2 - 20:h // 2 + 20, w // 2 - 20:w // 2 + 20].mean() < 0.05  # the face covers the page
            # the session ends: the page says so, then shows the next session on the channel
            feeder.cancel()
            await http.delete(f"/api/sessions/{first['id']}")
            await obs.wait_for_function("() => /Nothing is live/.test(document.body.innerText)", timeout=20000)
            second = await (await http.post("/api/sessions", json={"channel": "main"})).json()
            await obs.wait_for_function(f"() => window.flamecastObs.session === '{second['id']}'", timeout=20000)
            await obs.wait_for_function(
                "() => { const v = document.querySelector('video'); return v && !v.hidden && v.currentTime > 0.5; }",
                timeout=30000)
            assert (await page_text(obs)).strip() == ""
            # a link to a session that is gone says so instead of showing a black box
            stale = await browser.new_page(viewport={"width": 480, "height": 270})
            await stale.goto(str(http.make_url(f"/obs.html?session={first['id']}&view=front")))
            await stale.wait_for_function("() => /No session/.test(document.body.innerText)")
            assert "channel=main" in await page_text(stale)
            if SHOTS:
                await stale.add_style_tag(content="html { background: #3a5a40 !important; }")
                await stale.screenshot(path=str(Path(SHOTS) / "obs_no_session.png"))
        finally:
            if feeder is not None:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await feeder
            await browser.close()


def decode(png: bytes) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))

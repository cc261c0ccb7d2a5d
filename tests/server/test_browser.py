"""Headless Chromium opens the client page, starts a session and plays the video."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flamecast.server.state import SESSIONS

from .conftest import face_png, running_app, settings_for

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream"]
SCREENSHOT = os.environ.get("FLAMECAST_SCREENSHOT")  # set to write docs/images/browser_client.png

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium (CI installs it)"),
]


async def test_page_starts_a_session_and_the_video_plays(mesh_worker, tmp_path):
    from playwright.async_api import async_playwright

    settings = settings_for(mesh_worker, generator="mesh", size=256, open_timeout=120)
    async with running_app(settings) as http, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            messages = []
            page.on("console", lambda m: messages.append(m.text))
            await page.goto(str(http.make_url("/")))
            await page.wait_for_selector("#driver option[value=idle]", state="attached", timeout=15000)
            # uploads: a non-image is refused with the server's message; a photo becomes a thumbnail
            await page.set_input_files("#portrait-file", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                                                  "buffer": b"not a picture"}])
            await page.wait_for_function("() => /not an image/.test(document.getElementById('portrait-error').textContent)")
            await page.set_input_files("#portrait-file", files=[{"name": "face.png", "mimeType": "image/png",
                                                                  "buffer": face_png()}])
            await page.wait_for_selector("#portraits img", timeout=15000)
            await page.click("#portraits [data-id='']")  # back to the default portrait for the session
            await page.click("#start")
            video = page.locator("video").first
            await video.wait_for(timeout=120000)
            await page.wait_for_function(
                "() => { const v = document.querySelector('video'); return v && v.currentTime > 0.5; }",
                timeout=30000)
            t0 = await video.evaluate("v => v.currentTime")
            await page.wait_for_function(f"() => document.querySelector('video').currentTime > {t0} + 1.0",
                                         timeout=20000)
            size = await video.evaluate("v => [v.videoWidth, v.videoHeight]")
            assert size[0] > 0 and size[1] > 0
            await page.wait_for_function("() => /latency p50 \\d+/.test(document.getElementById('overlay').textContent)",
                                         timeout=20000)
            await page.evaluate("() => { document.activeElement.blur(); document.getElementById('controls').scrollTop = 0; }")
            shot = await page.screenshot(path=SCREENSHOT or str(tmp_path / "page.png"))
            assert len(shot) > 10_000
            sessions = http.app[SESSIONS].sessions
            assert len(sessions) == 1
            # the server drops the page's peer connection: the page reconnects by itself
            session = next(iter(sessions.values()))
            await page.evaluate("() => document.querySelectorAll('video').forEach(v => v.dataset.old = '1')")
            for viewer in list(session.viewers):
                await viewer.close()
            await page.wait_for_function(
                "() => { const v = document.querySelector('video:not([data-old])'); return v && v.currentTime > 0.5; }",
                timeout=60000)
            assert len(session.viewers) == 1
            # the OBS page: one view of that session and nothing else
            obs = await browser.new_page(viewport={"width": 640, "height": 360})
            await obs.goto(str(http.make_url(f"/obs.html?session={session.id}&view=front")))
            await obs.wait_for_function(
                "() => { const v = document.querySelector('video'); return v && v.currentTime > 0.5; }", timeout=60000)
            assert await obs.evaluate("() => document.body.innerText.trim()") == ""
            assert await obs.locator("video").count() == 1
            await obs.close()
            await page.click("#stop")
            await page.wait_for_function("() => document.getElementById('status').textContent === 'not connected'")
        finally:
            await browser.close()

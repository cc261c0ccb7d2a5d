"""Headless Chromium on the client page: what a streamer sees and does.

Advanced options stay folded, a refused portrait leaves a red message and no black tiles, the
next action clears it, layouts fit the window, expression buttons and hotkeys reach the layer
that takes emotions, layers can be added and muted, a driver switch is logged once.
Set FLAMECAST_SCREENSHOTS=DIR to write the client_*.png pictures of docs/client.md there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flamecast.plugins.manager import make_plugin_host

from .conftest import SwatchPlugin, png, running_app, settings_for
from .test_browser import ARGS, CHROMIUM

SHOTS = os.environ.get("FLAMECAST_SCREENSHOTS")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium (CI installs it)"),
]


async def shot(page, name: str) -> None:
    if SHOTS:
        await page.screenshot(path=str(Path(SHOTS) / name))


async def test_the_client_explains_itself(mesh_worker):
    from playwright.async_api import async_playwright

    host = make_plugin_host(extra_plugins=[("swatch", SwatchPlugin())])
    settings = settings_for(mesh_worker, generator="mesh", size=192, open_timeout=120)
    async with running_app(settings, host=host) as http, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            await page.goto(str(http.make_url("/")))
            await page.wait_for_selector("#driver option[value=text]", state="attached", timeout=15000)
            # the text driver's internal settings are folded away under "Advanced"
            await page.select_option("#driver", "text")
            assert await page.locator("#driver-options .basic [name=prompt]").count() == 1
            for name in ("steps", "guidance", "weights", "encoder", "clip_path"):
                assert await page.locator(f"#advanced-options [name={name}]").count() == 1, name
            assert not await page.locator("#advanced-options").is_visible()
            await page.select_option("#driver", "idle")
            # a portrait without a face is refused: a red message, no tiles
            await page.set_input_files("#portrait-file", files=[{"name": "blank.png", "mimeType": "image/png",
                                                                  "buffer": png(size=(256, 256))}])
            await page.wait_for_selector("#portraits img", timeout=15000)
            await page.click("#start")
            await page.wait_for_function("() => document.getElementById('message').classList.contains('error')",
                                         timeout=60000)
            assert "face" in await page.text_content("#message")
            assert await page.locator("#videos video").count() == 0
            assert await page.locator("#videos .placeholder").is_visible()
            await shot(page, "client_refused_portrait.png")
            # the next action clears it; the default portrait starts
            await page.click("#portraits [data-id='']")
            assert not await page.locator("#message").is_visible()
            await page.fill("#channel", "main")
            await page.click("#start")
            await page.wait_for_function(
                "() => [...document.querySelectorAll('video')].length >= 4 && "
                "[...document.querySelectorAll('video')].every(v => v.currentTime > 0.3)", timeout=120000)
            assert "obs.html?channel=main&view=front" in await page.text_content("#obs-link")
            # an expression nobody takes says so, in red
            await page.click("#emotions [data-emotion=happy]")
            await page.wait_for_function("() => document.getElementById('message').classList.contains('error')")
            assert "emotion" in await page.text_content("#message")
            # a text layer for emotions: the hotkey reaches it and the reply reads as words
            await page.select_option("#layer-driver", "text")
            for box in await page.locator("#layer-channels input").all():
                if await box.get_attribute("value") != "emotion":
                    await box.uncheck()
            await page.fill("#layer-name", "mood")
            await page.click("#add-layer")
            await page.wait_for_function("() => /mood \\(text\\) · running/.test(document.getElementById('layers').innerText)",
                                         timeout=60000)
            await page.click("#stage")
            await page.keyboard.press("1")
            await page.wait_for_function("() => /^mood layer:/.test(document.getElementById('message').textContent)",
                                         timeout=60000)
            assert "{" not in await page.text_content("#message")
            await page.click("#layers li:has-text('mood') button:has-text('mute')")
            await page.wait_for_function("() => /mood \\(text\\) · \\w+ · muted/.test(document.getElementById('layers').innerText)")
            # every view fits the window
            for box in [await v.bounding_box() for v in await page.locator("#videos video").all()]:
                assert box["y"] + box["height"] <= 800 + 1 and box["x"] + box["width"] <= 1280 + 1
            await page.wait_for_function("() => /latency p50/.test(document.getElementById('overlay').textContent)",
                                         timeout=20000)
            await shot(page, "client_live.png")
            await page.select_option("#layout", "mosaic")
            await page.wait_for_function("() => { const v = document.querySelector('video[data-track=mosaic]');"
                                         " return v && v.currentTime > 0.3; }", timeout=60000)
            box = await page.locator("video[data-track=mosaic]").bounding_box()
            assert box["y"] + box["height"] <= 800 + 1 and box["height"] > 300
            await shot(page, "client_mosaic.png")
            # switching the driver is logged once
            await page.select_option("#driver", "idle")
            await page.click("#apply-driver")
            await page.wait_for_function("() => /driver switched to idle/.test(document.getElementById('events').innerText)")
            await page.wait_for_timeout(1500)  # a second copy would arrive on the data channel within this time
            assert (await page.text_content("#events")).count("driver switched") == 1
            assert errors == []
            await page.click("#stop")
            await page.wait_for_function("() => document.getElementById('status').textContent === 'not connected'")
        finally:
            await browser.close()

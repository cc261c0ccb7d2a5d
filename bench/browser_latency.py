"""Glass-to-glass latency in headless Chromium: driver capture -> frame presented by the page.

Runs `flamecast serve --port 0` (server + mesh worker processes), opens the client page in
Debian's chromium through Playwright, starts an idle session showing one view (or every view),
discards a warm-up and reports p50/p95 of the page's own measurement (requestVideoFrameCallback:
the frame's RTP timestamp mapped to the driver's capture stamp, against presentation time).

    python bench/browser_latency.py --seconds 20 --views front
    python bench/browser_latency.py --seconds 20 --layout grid
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess

import numpy as np

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--use-fake-ui-for-media-stream", "--autoplay-policy=no-user-gesture-required"]
SAMPLES_JS = "() => [...window.flamecast.viewer.matchers.values()].flatMap(m => m.all)"
CLEAR_JS = "() => window.flamecast.viewer.matchers.forEach(m => { m.all.length = 0; })"


async def measure(url: str, args: argparse.Namespace) -> list[float]:
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=args.chromium, args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 860})
            await page.goto(url + (f"?views={args.views}" if args.views else ""))
            await page.wait_for_selector("#driver option[value=idle]", state="attached")
            await page.select_option("#layout", args.layout)
            await page.click("#start")
            await page.wait_for_function("() => { const v = document.querySelector('video'); "
                                         "return v && v.currentTime > 0.5; }", timeout=180_000)
            await page.wait_for_timeout(args.warmup * 1000)
            await page.evaluate(CLEAR_JS)
            await page.wait_for_timeout(args.seconds * 1000)
            return await page.evaluate(SAMPLES_JS)
        finally:
            await browser.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--layout", default="single", choices=("single", "grid", "mosaic"))
    p.add_argument("--views", default="", help="views the session renders, e.g. front (default: all)")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    args = p.parse_args()
    serve = subprocess.Popen(["flamecast", "serve", "--port", "0"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)
    try:
        url = None
        while url is None:
            line = serve.stdout.readline()
            if not line:
                raise SystemExit("flamecast serve exited")
            if m := re.search(r"serving on (http://\S+/)", line):
                url = m.group(1)
        samples = np.array(asyncio.run(measure(url, args)))
    finally:
        serve.terminate()
        serve.wait(30)
    print(json.dumps({"layout": args.layout, "views": args.views or "all", "samples": int(samples.size),
                      "fps": round(samples.size / args.seconds, 1),
                      "p50_ms": round(float(np.percentile(samples, 50)), 1),
                      "p95_ms": round(float(np.percentile(samples, 95)), 1),
                      "load_average": [round(x, 1) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()

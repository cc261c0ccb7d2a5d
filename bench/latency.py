"""Glass-to-glass latency on loopback: driver capture time -> frame decoded at an aiortc client.

Starts what `flamecast serve` starts (a generator worker process and the server, in this
process), creates a session with the idle driver, receives its video with the Python client
and reports p50/p95 of (decode time - driver capture time) per frame, plus frame rates.
With --serve-process the server runs as `flamecast serve` in its own process, as users run
it, and only the client runs here (its decoders then do not share the server's event loop).

    python bench/latency.py --generator mesh --seconds 30
    python bench/latency.py --serve-process --seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import re
import signal
import sys
import time

import numpy as np


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", default="mesh")
    p.add_argument("--seconds", type=float, default=30.0, help="measurement time after warm-up")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds received before measuring")
    p.add_argument("--views", default="", help="comma-separated view ids to render (default: the generator's set)")
    p.add_argument("--tracks", default="", help="comma-separated tracks to receive (default: every view)")
    p.add_argument("--size", type=int, default=None, help="video side in pixels (default: the generator's)")
    p.add_argument("--codec", default=None, choices=("vp8", "h264"))
    p.add_argument("--serve-process", action="store_true",
                   help="run `flamecast serve` as a separate process (with its own worker) instead of in this one")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    return p.parse_args()


async def receive(conn, name: str, until: float) -> int:
    n = 0
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        await conn.recv(name, timeout=30)
        n += 1
    return n


@contextlib.asynccontextmanager
async def in_process_server(args: argparse.Namespace, host=None, **overrides):
    """The server in this process (with ``host``'s plugins, default the installed ones; settings
    ``overrides``), its generator worker in a child process; yields the URL."""
    from aiohttp import web

    from flamecast.server.app import create_app
    from flamecast.server.settings import Settings
    from flamecast.server.worker_proc import WorkerProcess

    worker = WorkerProcess(args.generator)
    endpoints = await worker.start()
    settings = Settings(port=0, worker_input=endpoints["input"], worker_output=endpoints["output"],
                        generator=args.generator, size=args.size, open_timeout=120,
                        worker_keys=str(worker.key_folder)).replace(**overrides)
    runner = web.AppRunner(create_app(settings, host=host))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{next(iter(runner.addresses))[1]}"
    finally:
        await runner.cleanup()
        worker.stop()


@contextlib.asynccontextmanager
async def serve_process(args: argparse.Namespace):
    """`flamecast serve --port 0` as a child process; yields the URL it prints."""
    cmd = [sys.executable, "-m", "flamecast.cli", "serve", "--port", "0", "--generator", args.generator]
    if args.size:
        cmd += ["--size", str(args.size)]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        while True:
            line = (await asyncio.wait_for(proc.stdout.readline(), 180)).decode()
            if not line:
                raise RuntimeError("flamecast serve exited before printing its URL")
            if m := re.search(r"serving on (http://\S+?)/", line):
                break
        drain = asyncio.ensure_future(proc.stdout.read())  # keep its pipe from filling up
        yield m.group(1)
        drain.cancel()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 30)


async def main(args: argparse.Namespace) -> dict:
    from flamecast.server.api_client import FlamecastClient

    server = serve_process(args) if args.serve_process else in_process_server(args)
    async with server as url, FlamecastClient(url) as client:
        t0 = time.perf_counter()
        fields = {"views": args.views.split(",")} if args.views else {}
        info = await client.create_session(driver="idle", **fields)
        open_s = time.perf_counter() - t0
        tracks = args.tracks.split(",") if args.tracks else info["views"]
        async with await client.connect(info["id"], tracks=tracks, codec=args.codec) as conn:
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(receive(conn, t, loop.time() + args.warmup) for t in tracks))
            for m in conn.matchers.values():
                m.samples.clear()
            counts = await asyncio.gather(*(receive(conn, t, loop.time() + args.seconds) for t in tracks))
            samples = np.array(conn.latency_ms())
            stats = (await client.session(info["id"]))["stats"]
    return {
        "server": "flamecast serve process" if args.serve_process else "in this process",
        "generator": args.generator, "views": info["views"], "size": info["size"], "tracks": tracks,
        "session_open_s": round(open_s, 2), "frames": dict(zip(tracks, counts)),
        "fps_per_track": round(sum(counts) / len(tracks) / args.seconds, 1),
        "latency_ms": {"p50": round(float(np.percentile(samples, 50)), 1),
                       "p95": round(float(np.percentile(samples, 95)), 1), "samples": int(samples.size)},
        "server_latency_ms": stats["latency_ms"], "render_ms": stats["render_ms"],
        "dropped": stats["dropped"], "load_average": [round(x, 1) for x in __import__("os").getloadavg()],
        "machine": f"{platform.machine()} {platform.processor() or ''} "
        f"{__import__('os').cpu_count()} cores".strip(),
    }


if __name__ == "__main__":
    args = parse_args()
    result = asyncio.run(main(args))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>18}: {value}")

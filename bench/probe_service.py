"""Probe a real `flamecast serve` on loopback as an attacker and a careless client would, and
report what it survived (docs/reliability.md).

    python bench/probe_service.py [--kills 3] [--zmq 20000] [--out bench/results/probe_service.json]

It starts `flamecast serve --port 0` (its own local worker), then, each loop bounded and ending
by itself:

* HTTP: hostile requests on every route (deep nesting, huge integers, wrong content types,
  foreign Origin and Host, long names, oversized views, server-only options, odd images);
* the events WebSocket and a WebRTC data channel: garbage, then a real control message;
* ZeroMQ: a process without the keys subscribes and sends (opens, closes, frames); a process
  with the keys sends malformed messages (shapes numpy refuses, seq 2**63, random bytes);
* faults: the worker is killed ``--kills`` times; the time until /healthz is ok again and until
  an existing viewer receives video again is measured.

It counts requests, 5xx answers, crashes (server or worker exits) and recovery seconds. Loopback
only: it never talks to another host.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import msgpack
import numpy as np
import zmq
from PIL import Image

FLAMECAST = [sys.executable, "-m", "flamecast.cli"]
DEEP = "[" * 100_000 + "]" * 100_000


class Server:
    def __init__(self, generator: str) -> None:
        self.proc = subprocess.Popen([*FLAMECAST, "serve", "--port", "0", "--generator", generator],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.url = self.worker_pid = None
        self.lines: list[str] = []
        deadline = time.monotonic() + 180
        while self.url is None and time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise SystemExit("serve exited:\n" + "".join(self.lines))
            self.lines.append(line)
            if m := re.search(r"generator worker \S+ \(pid (\d+)\)", line):
                self.worker_pid = int(m.group(1))
            if m := re.search(r"serving on (http://\S+?/)", line):
                self.url = m.group(1)
        # keep reading its output, or the server blocks writing its log into a full pipe
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            del self.lines[:-200]

    def worker_files(self) -> tuple[dict, Path]:
        """The worker's endpoints (its ready file) and key folder, from its command line."""
        args = Path(f"/proc/{self.worker_pid}/cmdline").read_bytes().decode().split("\0")
        ready = json.loads(Path(args[args.index("--ready-file") + 1]).read_text())
        return ready, Path(args[args.index("--keys") + 1])

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return -9


class Tally:
    def __init__(self) -> None:
        self.requests = 0
        self.statuses: dict[str, int] = {}
        self.server_errors: list[str] = []

    def add(self, what: str, status: int) -> None:
        self.requests += 1
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        if status >= 500 or status < 0:
            self.server_errors.append(f"{what}: {status}")


def _image(fmt: str, size=(64, 64)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 150, 120)).save(buf, format=fmt)
    return buf.getvalue()


def hostile_requests(sid: str) -> list[tuple[str, str, dict]]:
    """(method, path, aiohttp kwargs) for every route."""
    s = f"/api/sessions/{sid}"
    big_int = '{"kind": "prompt", "data": {"n": ' + "7" * 5001 + "}}"
    json_paths = ["/api/sessions", f"{s}/offer", f"{s}/input", f"{s}/layers"]
    out: list[tuple[str, str, dict]] = []
    for path in json_paths:
        for body in (DEEP, big_int, "{", "\xff", '"just a string"', "[]", "null", '{"kind": 5}', "1e999"):
            out.append(("POST", path, {"data": body.encode("utf-8", "replace"),
                                       "headers": {"Content-Type": "application/json"}}))
        out.append(("POST", path, {"data": b"{}", "headers": {"Content-Type": "text/plain"}}))
        out.append(("POST", path, {"json": {}, "headers": {"Origin": "http://evil.example"}}))
    for body in ({"views": [f"v{i}" for i in range(24)], "size": 1024}, {"views": [f"left{i}" for i in range(2000)], "size": 32},
                 {"views": ["left" + "9" * 400]}, {"views": ["x" * 300 + str(i) for i in range(330)]},
                 {"size": 10**6}, {"size": -1}, {"generator": "nope"}, {"driver": "text", "options": {"weights": "/etc"}},
                 {"layers": [{"driver": "text", "options": {"clip_path": "/proc/self"}}]}, {"layers": "x"},
                 {"driver": "nope"}, {"portrait_id": "../../etc/passwd"}):
        out.append(("POST", "/api/sessions", {"json": body}))
    for body in ({"kind": "prompt", "text": "nod", "data": {"seconds": [1]}}, {"kind": "option", "data": {"weights": "/etc"}},
                 {"kind": "driver", "driver": "text", "options": {"weights": "/root"}}, {"kind": "prompt", "text": "x" * 10_000},
                 {"kind": "layer", "action": "move", "name": "base", "index": 10**30}, {"kind": "nope"}):
        out.append(("POST", f"{s}/input", {"json": body}))
    for body in ({"sdp": "v=0\r\n" + "a=x\r\n" * 50_000, "type": "offer"}, {"sdp": "garbage"}, {"tracks": ["x"] * 100}):
        out.append(("POST", f"{s}/offer", {"json": body}))
    for fmt in ("GIF", "BMP", "TIFF", "ICO"):
        out.append(("POST", "/api/portraits", {"data": _image(fmt), "headers": {"Content-Type": "application/octet-stream"}}))
    out.append(("POST", "/api/portraits", {"data": os.urandom(4096), "headers": {"Content-Type": "image/png"}}))
    for path in ("/" + "a" * 5000 + ".js", "/../setup.py", "/%2e%2e/pyproject.toml", "/api/sessions/" + "x" * 5000,
                 f"{s}/layers/" + "y" * 5000, "/api/portraits/" + "z" * 5000, "/metrics", "/api/plugins"):
        out.append(("GET", path, {}))
    out.append(("GET", "/api/sessions", {"headers": {"Host": "evil.example"}}))
    out.append(("GET", "/api/plugins?token=leak", {}))
    out.append(("PATCH", f"{s}/layers/base", {"json": {"index": "x"}}))
    out.append(("DELETE", f"{s}/layers/base", {}))
    out.append(("DELETE", "/api/sessions/nope", {}))
    return out


async def probe_http(http: aiohttp.ClientSession, url: str, sid: str, tally: Tally) -> None:
    for method, path, kw in hostile_requests(sid):
        try:
            async with http.request(method, url.rstrip("/") + path, **kw) as resp:
                await resp.read()
                tally.add(f"{method} {path[:60]}", resp.status)
        except aiohttp.ClientError as exc:
            tally.add(f"{method} {path[:60]} ({exc.__class__.__name__})", -1)


async def probe_events(http: aiohttp.ClientSession, url: str, sid: str, tally: Tally) -> bool:
    async with http.ws_connect(url.rstrip("/") + f"/api/sessions/{sid}/events") as ws:
        for text in (DEEP, "7" * 5001, "{", '{"kind": "option", "data": {"weights": "/etc"}}', "[1e999]"):
            await ws.send_str(text)
            tally.add("events " + text[:20], await _reply_status(ws))
        await ws.send_json({"kind": "driver", "driver": "idle"})
        status = await _reply_status(ws)
        tally.add("events control after garbage", status)
        return status == 200


async def _reply_status(ws) -> int:
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive_json()
            if msg.get("type") == "reply":
                return int(msg["status"])


async def probe_channel(client, sid: str, tally: Tally) -> dict:
    from flamecast.server.api_client import drain

    async with await client.connect(sid, tracks=["front"]) as conn:
        await drain(conn, "front", 5)
        for text in ("[" * 30_000 + "]" * 30_000, "7" * 5001, "{", '{"kind": "option", "data": {"clip_path": "/etc"}}'):
            conn.channel.send(text)
        conn.channel.send(json.dumps({"kind": "prompt", "text": "nod"}))
        await drain(conn, "front", 10)
        replies = [e for e in conn.events if e.get("type") == "reply"]
        for r in replies:
            tally.add("data channel", int(r["status"]))
        return {"replies": len(replies), "frames_after": 10}


def probe_zmq(ready: dict, keys: Path, n: int, seconds: float = 2.0) -> dict:
    from flamecast.plugins import FlameFrame
    from flamecast.plugins import protocol as wire
    from flamecast.plugins.publish import load_keys, secure_client

    ctx = zmq.Context()
    out = {"unauthenticated_sent": 0, "unauthenticated_heard": 0, "authenticated_malformed_sent": 0}
    stranger_pub, stranger_sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    stranger_sub.setsockopt(zmq.SUBSCRIBE, b"")
    stranger_pub.connect(ready["input"])
    stranger_sub.connect(ready["output"])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # try to open, close and feed sessions; listen for session ids
        for msg in (wire.session_open_message("mine", generator="mesh", options={}, portrait=None),
                    wire.session_close_message("x"),
                    wire.flame_message(FlameFrame(session_id="s1", seq=2**62, expression=np.zeros(16, np.float32)))):
            stranger_pub.send_multipart(msg)
            out["unauthenticated_sent"] += 1
        while stranger_sub.poll(10):
            stranger_sub.recv_multipart()
            out["unauthenticated_heard"] += 1
    rng = random.Random(0)
    pub = ctx.socket(zmq.PUB)
    secure_client(pub, load_keys(keys, "server"))
    pub.connect(ready["input"])
    time.sleep(0.5)
    hostile = [
        [b"s", msgpack.packb({"v": 1, "type": "flame", "buffers": [{"name": "pose", "dtype": "<f4", "shape": [0, 2**63]}]}), b""],
        [b"s", msgpack.packb({"v": 1, "type": "flame", "seq": 2**64 - 1})],
        [b"s", msgpack.packb({"v": 1, "type": "session.open", "meta": {"options": {"views": ["v"] * 5000}}})],
        [b"s", b"\xc1" * 100], [b"x" * 1000, b"{}"],
    ]
    for i in range(n):
        msg = hostile[i % len(hostile)] if i % 2 else [rng.randbytes(rng.randint(0, 40)) for _ in range(rng.randint(1, 4))]
        pub.send_multipart(msg)
        out["authenticated_malformed_sent"] += 1
    for sock in (stranger_pub, stranger_sub, pub):
        sock.close(linger=500)
    ctx.term()
    return out


async def frames_in(http, url: str, sid: str) -> int:
    async with http.get(url.rstrip("/") + f"/api/sessions/{sid}") as resp:
        return (await resp.json())["stats"]["frames_in"]


async def kill_and_recover(server: Server, http, url: str, client, sid: str) -> dict:
    from flamecast.server.api_client import drain

    print("probe: killing the worker", flush=True, file=sys.stderr)
    async with await client.connect(sid, tracks=["front"]) as conn:
        await drain(conn, "front", 5)
        old = server.worker_pid
        async with http.get(url + "healthz") as resp:
            restarts = (await resp.json())["worker"]["restarts"]
        t0 = time.monotonic()
        os.kill(old, signal.SIGKILL)
        healthy = video = None
        deadline = t0 + 60
        while time.monotonic() < deadline and (healthy is None or video is None):
            if healthy is None:
                async with http.get(url + "healthz") as resp:
                    body = await resp.json()
                    if resp.status == 200 and body["worker"]["restarts"] > restarts:  # the new worker is heard
                        healthy = time.monotonic() - t0
            if video is None:
                try:
                    await drain(conn, "front", 1, timeout=0.5)
                    if time.monotonic() - t0 > 0.5:  # a frame rendered after the kill
                        before = await frames_in(http, url, sid)
                        await drain(conn, "front", 3, timeout=5)
                        if await frames_in(http, url, sid) > before:
                            video = time.monotonic() - t0
                except Exception:
                    pass
        server.worker_pid = _child_worker(server.proc.pid)
        return {"healthz_ok_after_s": healthy, "video_after_s": video, "new_worker_pid": server.worker_pid != old}


def _child_worker(pid: int) -> int | None:
    import psutil

    for child in psutil.Process(pid).children():
        if "generator" in child.cmdline():
            return child.pid
    return None


async def main(args: argparse.Namespace) -> dict:
    from flamecast.server.api_client import FlamecastClient

    server = Server(args.generator)
    url = server.url
    results: dict = {"generator": args.generator}
    tally = Tally()
    try:
        async with aiohttp.ClientSession() as http, FlamecastClient(url) as client:
            sid = (await client.create_session(size=64))["id"]
            await probe_http(http, url, sid, tally)
            print(f"probe: {tally.requests} HTTP requests", file=sys.stderr, flush=True)
            results["events_socket_alive"] = await probe_events(http, url, sid, tally)
            results["data_channel"] = await probe_channel(client, sid, tally)
            ready, keys = server.worker_files()
            before = await frames_in(http, url, sid)
            results["zmq"] = await asyncio.to_thread(probe_zmq, ready, keys, args.zmq)
            results["zmq"]["worker_alive"] = server.worker_pid is not None and Path(f"/proc/{server.worker_pid}").exists()
            await asyncio.sleep(1.0)
            results["zmq"]["session_frames_after"] = await frames_in(http, url, sid) - before
            results["kills"] = [await kill_and_recover(server, http, url, client, sid) for _ in range(args.kills)]
            async with http.get(url + "healthz") as resp:
                results["final_healthz"] = resp.status
    except BaseException:
        print("".join(server.lines[-20:]), file=sys.stderr)
        raise
    finally:
        results["server_alive_until_stopped"] = server.proc.poll() is None
        results["server_exit"] = server.stop()
    results["http"] = {"requests": tally.requests, "statuses": tally.statuses, "server_errors": tally.server_errors}
    return results


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", default="mesh")
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--zmq", type=int, default=20_000, help="malformed messages sent with the keys")
    p.add_argument("--out", type=Path, default=Path("bench/results/probe_service.json"))
    a = p.parse_args()
    res = asyncio.run(main(a))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))

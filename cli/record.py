"""``flamecast record``: receive a session over WebRTC and write it to an MP4 file."""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
from dataclasses import dataclass
from pathlib import Path

from flamecast.plugins import Command, CommandError

FPS_HINT = 25


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output file, e.g. out.mp4")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server URL (default http://127.0.0.1:8080)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to record (default 10)")
    p.add_argument("--view", default="mosaic", help="view id, 'mosaic' (default) or 'all'")
    p.add_argument("--session", help="join this session instead of creating one")
    p.add_argument("--driver", default=None, help="driver of the session to create (default: the server's)")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=JSON", help="driver option (repeatable)")
    p.add_argument("--token", help="API access token of the server")


@dataclass(frozen=True)
class RecordCommand:
    out: Path
    url: str
    seconds: float
    view: str
    session: str | None
    driver: str | None
    options: dict
    token: str | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RecordCommand:
        if args.seconds <= 0:
            raise CommandError("--seconds must be positive")
        if args.session and (args.driver or args.option):
            raise CommandError("--driver/--option create a session; they cannot be used with --session")
        return cls(Path(args.out), args.url, args.seconds, args.view, args.session, args.driver,
                   _options(args.option), args.token)


def _options(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--option {pair!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    cmd = RecordCommand.from_args(args)
    counts = asyncio.run(record(cmd))
    print(f"wrote {cmd.out}: " + ", ".join(f"{n} frames of {name}" for name, n in counts.items()))
    return 0


async def record(cmd: RecordCommand) -> dict[str, int]:
    from flamecast.server.client import ClientError, FlamecastClient

    async with FlamecastClient(cmd.url, cmd.token) as client:
        try:
            session_id = cmd.session or await _create(client, cmd)
            info = await client.session(session_id)
        except ClientError as exc:
            raise CommandError(f"the server at {cmd.url} said: {exc.message}") from None
        except OSError as exc:
            raise CommandError(f"cannot reach {cmd.url}: {exc}; is `flamecast serve` running?") from None
        tracks = _tracks(cmd.view, info)
        try:
            conn = await client.connect(session_id, tracks=tracks)
            async with conn:
                return await _write(conn, tracks, cmd)
        finally:
            if not cmd.session:
                await client.delete_session(session_id)


async def _create(client, cmd: RecordCommand) -> str:
    fields = {"options": cmd.options}
    if cmd.driver:
        fields["driver"] = cmd.driver
    return (await client.create_session(**fields))["id"]


def _tracks(view: str, info: dict) -> list[str]:
    if view == "all":
        return list(info["views"])
    if view not in info["tracks"]:
        raise CommandError(f"--view {view!r}: this session has {', '.join(info['tracks'])} (or 'all')")
    return [view]


async def _write(conn, tracks: list[str], cmd: RecordCommand) -> dict[str, int]:
    import av

    cmd.out.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(cmd.out), mode="w")
    writers = {name: _TrackWriter(container, name) for name in tracks}
    try:
        async with asyncio.timeout(cmd.seconds + 30):
            await asyncio.gather(*(w.run(conn, cmd.seconds) for w in writers.values()))
    finally:
        for w in writers.values():
            w.flush()
        container.close()
    return {name: w.frames for name, w in writers.items()}


class _TrackWriter:
    """Writes one received track as one H.264 stream, timed by the capture-clock pts."""

    def __init__(self, container, name: str) -> None:
        self.container = container
        self.name = name
        self.stream = None
        self.frames = 0
        self._first_pts: int | None = None
        self._last_pts = -1

    async def run(self, conn, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        end = None
        while end is None or loop.time() < end:
            frame = await conn.recv(self.name, timeout=20.0)
            if end is None:
                end = loop.time() + seconds
            self._encode(frame)

    def _encode(self, frame) -> None:
        if self.stream is None:
            self.stream = self.container.add_stream("libx264", rate=FPS_HINT)
            self.stream.width, self.stream.height = frame.width, frame.height
            self.stream.pix_fmt = "yuv420p"
            self.stream.time_base = fractions.Fraction(1, 90000)
            # the encoder counts in 90 kHz too: at the default 1/25 two frames closer than 40 ms
            # (a driver catching up after a stall) would share a pts and the muxer refuses that
            self.stream.codec_context.time_base = fractions.Fraction(1, 90000)
            self.stream.options = {"preset": "veryfast", "tune": "zerolatency"}
        if self._first_pts is None:
            self._first_pts = frame.pts
        pts = max(frame.pts - self._first_pts, self._last_pts + 1)
        self._last_pts = pts
        frame = frame.reformat(width=self.stream.width, height=self.stream.height, format="yuv420p")
        frame.pts, frame.time_base = pts, fractions.Fraction(1, 90000)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def flush(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode(None):
                self.container.mux(packet)


COMMAND = Command(
    path=("record",),
    help="record a session to an MP4 file",
    description=(
        "Join a session (--session ID) or create one (--driver, --option), receive its video over "
        "WebRTC and write it to an MP4 (H.264). --view picks one view, 'mosaic' (default: every view tiled "
        "in one picture) or 'all' (one video stream per view)."
    ),
    configure=configure,
    run=run,
)

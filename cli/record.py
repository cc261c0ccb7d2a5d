"""``flamecast record``: receive a session over WebRTC and write it, with its audio, to an MP4 file."""

from __future__ import annotations

import argparse
import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from flamecast.plugins import Command, CommandError



def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output file, e.g. out.mp4")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server URL (default http://127.0.0.1:8080)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to record (default 10)")
    p.add_argument("--view", default="mosaic", help="view id, 'mosaic' (default) or 'all'")
    p.add_argument("--session", help="join this session instead of creating one")
    p.add_argument("--channel", help="join the session that holds this channel name (e.g. main)")
    p.add_argument("--no-audio", dest="audio", action="store_false",
                   help="leave the audio out (default: an AAC stream with the session's audio, silence when it has none)")
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
    channel: str | None = None
    audio: bool = True

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RecordCommand:
        if args.seconds <= 0:
            raise CommandError("--seconds must be positive")
        joins = getattr(args, "channel", None) or args.session
        if joins and (args.driver or args.option):
            raise CommandError("--driver/--option create a session; they cannot be used with --session or --channel")
        if args.session and getattr(args, "channel", None):
            raise CommandError("give --session or --channel, not both")
        return cls(Path(args.out), args.url, args.seconds, args.view, args.session, args.driver,
                   _options(args.option), args.token, getattr(args, "channel", None), getattr(args, "audio", True))


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
    quiet_media_logs()
    summary = asyncio.run(record(cmd))
    print(f"wrote {cmd.out}: " + ", ".join(f"{n} frames of {name}" for name, n in summary["frames"].items())
          + (f", {summary['audio_seconds']:.1f} s of audio" if cmd.audio else ""))
    return 0


def quiet_media_logs() -> None:
    """aioice and aiortc log every ICE step at INFO; a recording needs none of it."""
    import logging

    for name in ("aioice", "aiortc"):
        logging.getLogger(name).setLevel(logging.WARNING)


async def record(cmd: RecordCommand) -> dict:
    from flamecast.server.api_client import ClientError, FlamecastClient

    async with FlamecastClient(cmd.url, cmd.token) as client:
        try:
            session_id = cmd.session or await _from_channel(client, cmd) or await _create(client, cmd)
            info = await client.session(session_id)
        except ClientError as exc:
            raise CommandError(f"the server at {cmd.url} said: {exc.message}") from None
        except OSError as exc:
            raise CommandError(f"cannot reach {cmd.url}: {exc}; is `flamecast serve` running?") from None
        tracks = _tracks(cmd.view, info)
        try:
            conn = await client.connect(session_id, tracks=tracks, audio=cmd.audio)
            async with conn:
                return await _write(conn, tracks, cmd)
        finally:
            if not cmd.session and not cmd.channel:
                await client.delete_session(session_id)


async def _from_channel(client, cmd: RecordCommand) -> str | None:
    if not cmd.channel:
        return None
    held = await client._request("GET", f"/api/channels/{cmd.channel}")
    if not held.get("session"):
        raise CommandError(f"no session holds channel {cmd.channel!r} now; start one in the client (channel "
                           f"{cmd.channel!r}) or record with --driver to create one")
    return held["session"]


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


async def _write(conn, tracks: list[str], cmd: RecordCommand) -> dict:
    """Receive every track (and the audio) for ``cmd.seconds`` after the first picture and write
    them into one MP4. Each stream keeps its own pts; the streams are lined up by when their first
    frame arrived (the server sends audio delayed to match the video)."""
    from flamecast.server.media import Mp4Writer

    clock = _Clock()
    writer = await asyncio.to_thread(Mp4Writer, cmd.out, audio=cmd.audio, videos=len(tracks))
    video = [_VideoTrack(conn, name, i, writer, clock) for i, name in enumerate(tracks)]
    readers = [asyncio.create_task(v.run(cmd.seconds)) for v in video]
    audio = asyncio.create_task(_AudioTrack(conn, writer, clock).run()) if cmd.audio else None
    try:
        async with asyncio.timeout(cmd.seconds + 30):
            await asyncio.gather(*readers)
    finally:
        tasks = [t for t in (*readers, audio) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=5.0)  # bounded: the file is written whatever a reader does
        summary = await asyncio.to_thread(writer.close)
    return {**summary, "frames": {v.name: v.frames for v in video}}


class _Clock:
    """Seconds since the first picture arrived (None before)."""

    def __init__(self) -> None:
        self.start: float | None = None

    def now(self) -> float:
        return asyncio.get_running_loop().time()


class _VideoTrack:
    """One received track: the picture's time is its pts after the track's first picture, placed
    at the moment that first picture arrived."""

    def __init__(self, conn, name: str, index: int, writer, clock: _Clock) -> None:
        self.conn, self.name, self.index, self.writer, self.clock = conn, name, index, writer, clock
        self.frames = 0

    async def run(self, seconds: float) -> None:
        first_pts = offset = None
        while True:
            frame = await self.conn.recv(self.name, timeout=20.0)
            now = self.clock.now()
            if self.clock.start is None:
                self.clock.start = now
            if first_pts is None:
                first_pts, offset = frame.pts, now - self.clock.start
            t = offset + (frame.pts - first_pts) / 90000
            if t > seconds:
                return
            await asyncio.to_thread(self.writer.video, frame, t, self.index)
            self.frames += 1


class _AudioTrack:
    """The session's audio: continuous from its first frame, placed at the moment it arrived."""

    def __init__(self, conn, writer, clock: _Clock) -> None:
        self.conn, self.writer, self.clock = conn, writer, clock

    async def run(self) -> None:
        first = True
        while True:
            frame = await self.conn.recv_audio(timeout=3600.0)
            if self.clock.start is None:
                continue  # before the first picture
            pcm = frame.to_ndarray()
            channels = len(frame.layout.channels)
            samples = pcm.reshape(-1, channels) if frame.format.is_packed else pcm.T
            t = (self.clock.now() - self.clock.start - samples.shape[0] / frame.sample_rate) if first else None
            first = False
            await asyncio.to_thread(self.writer.audio, _int16(samples), frame.sample_rate, t)


def _int16(samples):
    import numpy as np

    if samples.dtype == np.int16:
        return samples
    return (np.clip(samples, -1, 1) * 32767).astype(np.int16)


COMMAND = Command(
    path=("record",),
    help="record a session to an MP4 file",
    description=(
        "Join a session (--session ID, or --channel NAME) or create one (--driver, --option), receive its "
        "video and audio over WebRTC and write them to an MP4 (H.264 + AAC, in sync). --view picks one view, "
        "'mosaic' (default: every view tiled in one picture) or 'all' (one video stream per view). The server "
        "can also record by itself: `flamecast output add record --session ID`."
    ),
    configure=configure,
    run=run,
)

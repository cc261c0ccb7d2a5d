"""Outputs: sinks a session feeds besides its WebRTC viewers, and the built-in ones.

A plugin module (entry point ``outputs`` in the ``flamecast`` group) that registers

* ``virtualcam``: the session as a camera other programs see (Zoom, Meet, Discord, OBS), through
  pyvirtualcam: v4l2loopback on Linux, OBS's virtual camera on Windows and macOS;
* ``record``: an MP4 (H.264 + AAC) of the session with its audio, in the server's recordings
  folder;

and the ``flamecast output add|remove|list`` command. The server attaches outputs per session
(``POST /api/sessions/ID/outputs``, or ``"outputs"`` at creation); ``OutputSet`` runs each one in
its own task behind a newest-wins frame slot and a bounded audio queue, so a slow output drops
frames and never delays the session or the others.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import Field, ValidationError

from flamecast.plugins import Command, CommandError, Output, hookimpl
from flamecast.plugins.driver import format_validation_error
from flamecast.plugins.generator import OutputOptions, OutputUnavailable

log = logging.getLogger(__name__)

MAX_OUTPUTS = 4  # per session
AUDIO_BACKLOG = 256  # chunks an output may fall behind before the oldest are dropped
CLOSE_TIMEOUT = 10.0

EventSink = Callable[[dict[str, Any]], None]

VIRTUALCAM_HELP = (
    "Install a virtual camera: on Linux the v4l2loopback kernel module (Debian/Ubuntu: `sudo apt install "
    "v4l2loopback-dkms`, then `sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=flamecast`); on "
    "Windows and macOS OBS Studio 26.1 or newer (start its Virtual Camera once). The Python side is `pip install "
    "pyvirtualcam`."
)


# --- errors ---------------------------------------------------------------------------------


class OutputError(Exception):
    """An output that cannot be attached or detached; ``status`` is the HTTP status."""

    status = 422


class NoSuchOutput(OutputError):
    status = 404


class OutputConflict(OutputError):
    status = 409


class OutputDown(OutputError):
    """The output cannot run on this machine (OutputUnavailable); the message says what to install."""

    status = 503


# --- running outputs ------------------------------------------------------------------------


class OutputRunner:
    """One attached output: its task, its newest-frame slot and its audio queue."""

    def __init__(self, output: Output, on_event: EventSink) -> None:
        self.output = output
        self.name = output.name
        self._on_event = on_event
        self._frame: Any = None
        self._audio: collections.deque = collections.deque()
        self._wake = asyncio.Event()
        self._closing = False
        self.frames = self.dropped = self.audio_dropped = 0
        self.state = "running"
        self.error: str | None = None
        self._task = asyncio.create_task(self._run(), name=f"output-{self.name}")

    def video(self, frame: Any) -> None:
        if self._frame is not None:
            self.dropped += 1
        self._frame = frame
        self._wake.set()

    def audio(self, chunk: Any) -> None:
        if not self.output.wants_audio:
            return
        if len(self._audio) >= AUDIO_BACKLOG:
            self._audio.popleft()
            self.audio_dropped += 1
        self._audio.append(chunk)
        self._wake.set()

    async def _run(self) -> None:
        try:
            while not self._closing:
                await self._wake.wait()
                self._wake.clear()
                await self._drain()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an output must not take the session down
            self.state, self.error = "failed", f"{exc.__class__.__name__}: {exc}"
            log.warning("output %s failed: %s", self.name, self.error)
            self._on_event({"type": "output", "output": self.name, "event": "failed", "error": self.error})

    async def _drain(self) -> None:
        while self._audio:
            await self.output.write_audio(self._audio.popleft())
        frame, self._frame = self._frame, None
        if frame is not None:
            await self.output.write(frame)
            self.frames += 1

    async def close(self) -> None:
        """Let the current write finish, then ``aclose`` the output."""
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), CLOSE_TIMEOUT)
        except (TimeoutError, asyncio.TimeoutError):
            self._task.cancel()
        with contextlib.suppress(Exception):
            await self._task
        try:
            await self.output.aclose()
        except Exception as exc:
            log.warning("output %s failed to close: %s", self.name, exc)
        if self.state == "running":
            self.state = "closed"

    def describe(self) -> dict[str, Any]:
        try:
            extra = self.output.describe()
        except Exception as exc:
            extra = {"describe_error": str(exc)}
        return {"name": self.name, "options": self.output.options.model_dump(), "state": self.state,
                "error": self.error, "frames": self.frames, "dropped": self.dropped,
                "audio_dropped": self.audio_dropped, **extra}


class OutputSet:
    """A session's attached outputs, by name (one instance of each output per session)."""

    def __init__(self, on_event: EventSink) -> None:
        self._on_event = on_event
        self.runners: dict[str, OutputRunner] = {}

    async def attach(self, output_cls: type[Output], options: Any, session: Any, latest: Any = None) -> OutputRunner:
        """Build, open and start an output; ``latest`` (the newest frame) is written at once so
        that a device that cannot take it fails here, with its message. Raises OutputError."""
        name = output_cls.name
        if name in self.runners:
            raise OutputConflict(f"output {name!r} is attached to this session already; remove it first "
                                 f"(DELETE /api/sessions/ID/outputs/{name})")
        if len(self.runners) >= MAX_OUTPUTS:
            raise OutputError(f"a session takes at most {MAX_OUTPUTS} outputs; remove one first")
        output = output_cls(parse_output_options(output_cls, options), session)
        try:
            await output.open()
            if latest is not None:
                await output.write(latest)
        except OutputUnavailable as exc:
            await _quiet_close(output)
            raise OutputDown(f"output {name!r} cannot run here: {exc}") from None
        except ValueError as exc:
            await _quiet_close(output)
            raise OutputError(f"output {name!r}: {exc}") from None
        runner = OutputRunner(output, self._on_event)
        self.runners[name] = runner
        self._on_event({"type": "output", "output": name, "event": "attached"})
        return runner

    async def detach(self, name: str) -> dict[str, Any]:
        runner = self.runners.pop(name, None)
        if runner is None:
            attached = ", ".join(self.runners) or "none"
            raise NoSuchOutput(f"output {name!r} is not attached to this session (attached: {attached})")
        await runner.close()
        self._on_event({"type": "output", "output": name, "event": "detached"})
        return runner.describe()

    def video(self, frame: Any) -> None:
        for runner in self.runners.values():
            if runner.state == "running":
                runner.video(frame)

    def audio(self, chunk: Any) -> None:
        for runner in self.runners.values():
            if runner.state == "running":
                runner.audio(chunk)

    async def close(self) -> None:
        for name in list(self.runners):
            await self.detach(name)

    def describe(self) -> list[dict[str, Any]]:
        return [runner.describe() for runner in self.runners.values()]


def parse_output_options(output_cls: type[Output], options: Any) -> OutputOptions:
    if options is not None and not isinstance(options, dict):
        raise OutputError("field 'options' must be a JSON object of the output's options")
    try:
        return output_cls.Options.model_validate(options or {})
    except ValidationError as exc:
        raise OutputError(f"output {output_cls.name!r}: {format_validation_error(exc)}") from None


async def _quiet_close(output: Output) -> None:
    with contextlib.suppress(Exception):
        await output.aclose()


# --- pictures -------------------------------------------------------------------------------


def pick_view(frame: Any, view: str | None):
    """The (H, W, 3) picture of ``view`` ("mosaic": every view tiled; None: the first view)."""
    from .media import MOSAIC, mosaic

    if view == MOSAIC:
        return mosaic(frame.views)
    index = frame.view_ids.index(view) if view is not None else 0
    return frame.views[index]


def check_view(view: str | None, session: Any) -> None:
    views = tuple(getattr(session, "views", ()) or ())
    if view is not None and view != "mosaic" and views and view not in views:
        raise ValueError(f"this session has no view {view!r}; it has {', '.join(views)} (or 'mosaic')")


def data_dir() -> Path:
    """Where the server keeps files: $FLAMECAST_DATA_DIR, else $XDG_DATA_HOME/flamecast
    (~/.local/share/flamecast)."""
    if os.environ.get("FLAMECAST_DATA_DIR"):
        return Path(os.environ["FLAMECAST_DATA_DIR"])
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "flamecast"


# --- the virtual camera ---------------------------------------------------------------------


class VirtualCameraOptions(OutputOptions):
    view: str | None = Field(None, max_length=32, description="The view to show ('mosaic': every view; default: the first).")
    device: str | None = Field(None, max_length=128, description="The camera device, e.g. /dev/video2 (default: the first free one).")
    backend: str | None = Field(None, max_length=32, description="pyvirtualcam backend: v4l2loopback, obs, unitycapture (default: the first that works).")
    fps: float = Field(25.0, gt=0, le=60, description="The frame rate the camera announces.")


class VirtualCamera(Output):
    """The session's picture as a system camera, through pyvirtualcam."""

    name = "virtualcam"
    description = "the avatar as a camera for Zoom, Meet, Discord or OBS (pyvirtualcam: v4l2loopback, OBS Virtual Camera)"
    Options = VirtualCameraOptions

    def __init__(self, options: VirtualCameraOptions, session: Any = None) -> None:
        super().__init__(options, session)
        self._camera = None
        self._pyvirtualcam = None

    async def open(self) -> None:
        check_view(self.options.view, self.session)
        try:
            import pyvirtualcam
        except ImportError:
            raise OutputUnavailable(f"pyvirtualcam is not installed. {VIRTUALCAM_HELP}") from None
        self._pyvirtualcam = pyvirtualcam

    async def write(self, frame: Any) -> None:
        picture = pick_view(frame, self.options.view)
        await asyncio.to_thread(self._send, picture)

    def _send(self, picture) -> None:
        import numpy as np

        h, w = picture.shape[:2]
        if self._camera is not None and (self._camera.width, self._camera.height) != (w, h):
            self._close_camera()
        if self._camera is None:
            try:
                self._camera = self._pyvirtualcam.Camera(w, h, self.options.fps, device=self.options.device,
                                                         backend=self.options.backend)
            except (RuntimeError, KeyError, OSError) as exc:
                raise OutputUnavailable(f"no virtual camera backend works here ({str(exc).strip()}). "
                                        f"{VIRTUALCAM_HELP}") from None
            log.info("virtual camera %s (%s) opened at %dx%d", self._camera.device, self._camera.backend, w, h)
        self._camera.send(np.ascontiguousarray(picture))

    def describe(self) -> dict[str, Any]:
        if self._camera is None:
            return {"device": None}
        return {"device": self._camera.device, "backend": self._camera.backend,
                "width": self._camera.width, "height": self._camera.height}

    def _close_camera(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            camera.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self._close_camera)


# --- the recorder ---------------------------------------------------------------------------


class RecordOptions(OutputOptions):
    file: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}\.mp4$",
                             description="File name in the server's recordings folder (default: SESSION-TIME.mp4).")
    view: str = Field("mosaic", max_length=32, description="The view to record ('mosaic': every view tiled).")
    audio: bool = Field(True, description="Record the session's audio (silence when it has none).")
    seconds: float | None = Field(None, gt=0, le=24 * 3600, description="Stop recording after this long.")


class Recorder(Output):
    """An MP4 of the session: video and audio on the capture clock, so they play in sync."""

    name = "record"
    description = "an MP4 (H.264 + AAC) of the session and its audio, in the server's recordings folder"
    Options = RecordOptions
    wants_audio = True

    def __init__(self, options: RecordOptions, session: Any = None) -> None:
        super().__init__(options, session)
        sid = getattr(session, "id", "session")
        name = options.file or f"{sid}-{time.strftime('%Y%m%d-%H%M%S')}.mp4"
        self.path = data_dir() / "recordings" / name
        self._writer = None
        self._t0: int | None = None
        self._done = False
        self._summary: dict[str, Any] = {}

    async def open(self) -> None:
        check_view(self.options.view, self.session)
        from .media import Mp4Writer

        self._writer = await asyncio.to_thread(Mp4Writer, self.path, audio=self.options.audio)

    async def write(self, frame: Any) -> None:
        if self._done:
            return
        if self._t0 is None:
            self._t0 = frame.capture_ns
        t = (frame.capture_ns - self._t0) / 1e9
        if self.options.seconds is not None and t > self.options.seconds:
            await self._finish()
            return
        await asyncio.to_thread(self._writer.video, pick_view(frame, self.options.view), t)

    async def write_audio(self, chunk: Any) -> None:
        if self._t0 is None or self._done or not self.options.audio:
            return
        await asyncio.to_thread(self._writer.audio, chunk.samples, chunk.sample_rate, (chunk.capture_ns - self._t0) / 1e9)

    async def _finish(self) -> None:
        if not self._done and self._writer is not None:
            self._done = True
            self._summary = await asyncio.to_thread(self._writer.close)
            log.info("recorded %s: %s", self.path, self._summary)

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "finished": self._done, **self._summary}

    async def aclose(self) -> None:
        await self._finish()


# --- the command ----------------------------------------------------------------------------


def configure(p) -> None:
    p.add_argument("action", choices=("add", "remove", "list"), help="attach an output, detach it, or list them")
    p.add_argument("output", nargs="?", help="the output's name (see `flamecast plugins`), e.g. virtualcam or record")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--session", help="the session's id")
    target.add_argument("--channel", help="the session that holds this channel name, e.g. main")
    p.add_argument("--option", "-o", action="append", default=[], metavar="KEY=JSON", help="output option (repeatable)")
    p.add_argument("--url", default="http://127.0.0.1:8080", help="server URL (default http://127.0.0.1:8080)")
    p.add_argument("--token", help="API access token of the server")


def run(args) -> int:
    import json

    if args.action != "list" and not args.output:
        raise CommandError(f"`flamecast output {args.action}` needs the output's name, e.g. virtualcam")
    options = {}
    for pair in args.option:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--option {pair!r} is not KEY=VALUE")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    print(json.dumps(asyncio.run(_call(args, options)), indent=2))
    return 0


async def _call(args, options: dict) -> Any:
    from .api_client import ClientError, FlamecastClient

    async with FlamecastClient(args.url, args.token) as client:
        try:
            sid = args.session or await _channel_session(client, args.channel)
            base = f"/api/sessions/{sid}/outputs"
            if args.action == "add":
                return await client._request("POST", base, json={"name": args.output, "options": options})
            if args.action == "remove":
                return await client._request("DELETE", f"{base}/{args.output}")
            return await client._request("GET", base)
        except ClientError as exc:
            raise CommandError(f"the server at {args.url} said: {exc.message}") from None
        except OSError as exc:
            raise CommandError(f"cannot reach {args.url}: {exc}; is `flamecast serve` running?") from None


async def _channel_session(client, channel: str) -> str:
    info = await client._request("GET", f"/api/channels/{channel}")
    if not info.get("session"):
        raise CommandError(f"no session holds channel {channel!r} now; start one with \"channel\": \"{channel}\"")
    return info["session"]


COMMAND = Command(
    path=("output",),
    help="attach an output (virtual camera, recorder) to a running session, detach it, or list them",
    description=("`flamecast output add virtualcam --channel main` shows the session as a camera; "
                 "`flamecast output add record --session ID -o seconds=30` records it on the server; "
                 "`flamecast output remove NAME ...` detaches; `flamecast output list ...` lists."),
    configure=configure,
    run=run,
)


@hookimpl
def flamecast_register_outputs(register):
    register(VirtualCamera)
    register(Recorder)


@hookimpl
def flamecast_register_commands(register):
    register(COMMAND)

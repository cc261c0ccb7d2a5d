"""Sessions: one stack of driver layers, one frame publisher and one set of video tracks per
session, isolated from every other session; and the manager that creates, limits and reaps them."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol

from aiortc.mediastreams import MediaStreamTrack

from flamecast.plugins import (
    Control, ControlNotSupported, Driver, DriverContext, DriverOptions, HeadSpace, SessionInfo, builtin_head_space,
)
from flamecast.plugins.layers import EmotionMode
from flamecast.plugins.manager import PluginHost
from flamecast.plugins.protocol import AudioChunk, VideoFrame
from flamecast.plugins.publish import FramePublisher
from flamecast.plugins.stack import BASE_LAYER, DriverStack, LayerError, StackThread, UnknownLayer

from .control import SessionPhase, BadControl, ControlReply, NoSuchLayer, apply_control
from .layers import LayerRequest, apply_layer_action
from .channels import ChannelRegistry
from .media import AudioSource, Background, SessionVideo
from .outputs import OutputError, OutputSet
from .settings import Settings
from .stats import SessionStats
from .worker_link import WorkerLink

log = logging.getLogger(__name__)

AUDIO_QUEUE = 256  # chunks (about 5 s of 20 ms chunks)
VIDEO_QUEUE = 4  # camera frames: a driver only wants the newest
EVENT_QUEUE = 64  # events per listener
REAP_INTERVAL = 0.5
REOPEN_AFTER = 5.0  # seconds without video before the session is offered to the worker again
FIRST_FRAME_WAIT = 5.0  # seconds an output attached to a new session waits for its first frame


class SessionLimit(Exception):
    """The server runs ``max_sessions`` sessions already."""


class EventSubscriber(Protocol):
    """What a session publishes its events to (an events socket, a viewer)."""

    def on_event(self, event: dict[str, Any]) -> None:
        """One event (JSON-able); must not block: buffer it, bounded, or send it now."""


class ViewerSubscriber(EventSubscriber, Protocol):
    """A peer connection watching the session: it also hears which driving frame went out with
    which pts, and the session closes it when the session ends."""

    def on_frame_sent(self, seq: int, capture_ns: int, pts: int) -> None: ...

    async def close(self) -> None: ...


class EventQueue:
    """An events socket's subscription: the session's events in a bounded queue, newest wins."""

    def __init__(self, size: int = EVENT_QUEUE) -> None:
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=size)

    def on_event(self, event: dict[str, Any]) -> None:
        put_newest(self._queue, event)

    async def get(self) -> dict[str, Any]:
        return await self._queue.get()


def head_from(meta: Any) -> HeadSpace:
    """The head space a worker reported for a session; the built-in head when it said none (an
    older worker) or something that is not a head space."""
    if meta is None:
        return builtin_head_space()
    try:
        return HeadSpace.from_wire(meta)
    except ValueError as exc:
        log.warning("the worker reported an unusable head space (%s); drivers use the built-in head", exc)
        return builtin_head_space()


@dataclass(frozen=True)
class SessionRequest:
    """A validated request for a new session (see docs/api.md, POST /api/sessions): the driver
    layers above the idle base, bottom first, and what to render."""

    layers: tuple[LayerRequest, ...]
    generator: str
    generator_options: dict[str, Any] = field(default_factory=dict)
    profile: str = ""
    portrait: bytes | None = None
    emotion: EmotionMode = EmotionMode.ADD
    background: Background = Background()
    channel: str | None = None  # a channel name to publish the session under
    outputs: tuple[tuple[str, dict], ...] = ()  # (output name, options) to attach once it runs
    external: bool = False  # an outside process drives it (flamecast driver --connect)


@dataclass
class LayerInputs:
    """A layer's own input queues (each layer that needs audio or video gets every chunk)."""

    audio: asyncio.Queue | None
    video: asyncio.Queue | None


def put_newest(queue: asyncio.Queue, item: Any) -> bool:
    """Put without waiting; when full, drop the oldest item. Returns True when one was dropped."""
    dropped = False
    while True:
        try:
            queue.put_nowait(item)
            return dropped
        except asyncio.QueueFull:
            try:
                queue.get_nowait()
                dropped = True
            except asyncio.QueueEmpty:
                pass


class Session:
    """One live session. The manager builds it, ``open``s it on the worker and ``close``s it."""

    def __init__(self, session_id: str, request: SessionRequest, host: PluginHost, link: WorkerLink) -> None:
        self.id = session_id
        self.request = request
        self.host = host
        self.link = link
        self.created_ns = time.time_ns()
        self.state = SessionPhase.OPENING
        self.stats = SessionStats()
        self.inputs: dict[str, LayerInputs] = {}
        self.inputs_dropped = 0
        self.viewers: set[ViewerSubscriber] = set()
        self.listeners: set[EventSubscriber] = set()
        self.recent_events: collections.deque[dict] = collections.deque(maxlen=20)
        self.last_client = time.monotonic()
        self.last_video = self.last_reopen = time.monotonic()
        self.reopens = 0
        self.layers: dict[str, LayerRequest] = {layer.name: layer for layer in request.layers}
        self.video: SessionVideo | None = None
        self.audio = AudioSource(self.stats, self._audio_delay_ms)
        self.view_ids: tuple[str, ...] = ()
        self.size: list[int] = []
        self.head: HeadSpace = builtin_head_space()  # the generator's, once the worker says
        self.worker_error: str | None = None
        self.channel: str | None = None
        self.external = request.external
        self.outputs = OutputSet(self.emit)
        self.first_video = asyncio.Event()
        self._stack: DriverStack | None = None
        self._task: asyncio.Task | None = None
        self._publisher: FramePublisher | None = None

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def info(self) -> SessionInfo:
        top = self.top_layer
        return SessionInfo(
            id=self.id, driver=self.driver_name, generator=self.request.generator, views=self.view_ids,
            profile=self.request.profile, created_ns=self.created_ns,
            options=top.options.model_dump() if top else {},
        )

    async def open(self, timeout: float) -> None:
        """Open the session on the worker (raises PortraitRejected / WorkerUnavailable), then
        start the driver."""
        self.link.attach(self.id, self)
        options = dict(self.request.generator_options)
        if self.request.profile:
            options["profile"] = self.request.profile
        meta = await self.link.open_session(
            self.id, generator=self.request.generator, options=options, portrait=self.request.portrait, timeout=timeout
        )
        self._open_options = options
        self.view_ids = tuple(str(v) for v in meta.get("view_ids", ()))
        self.size = list(meta.get("size") or [])
        self.head = head_from(meta.get("head"))
        self.video = SessionVideo(self.view_ids, self.stats, self._frame_sent)
        self.video.background = self.request.background
        self._start_driver()
        self.state = SessionPhase.RUNNING

    def _start_driver(self) -> None:
        """The driver layers run in a thread of their own (``StackThread``): a driver that
        blocks stalls only this session. Frames go out on the thread's own socket, addressed by
        the session's wire token; events and audio come back to this loop."""
        self._loop = asyncio.get_running_loop()
        self._publisher = FramePublisher(self.link.input_endpoint, self.link.context, self.link.keys)
        top = self.top_layer
        rate = top.driver_cls.rate_for(top.options) if top else idle_driver_class(self.host).rate
        stack = DriverStack(self._make_base, self._publish, session_id=self.link.wire_id(self.id), rate=rate,
                            head=self.head, emotion=self.request.emotion,
                            on_event=lambda event: self._to_loop(self.emit, event))
        self._stack = StackThread(stack, name=f"driver-{self.id}", on_exit=self._publisher.close)
        for layer in self.request.layers:
            self._stack.add(layer.name, self._factory(layer), layer.channels, muted=layer.muted)
        self._task = asyncio.create_task(self._stack.run(), name=f"driver-{self.id}")

    def _to_loop(self, fn, *args) -> None:
        """Run ``fn(*args)`` on the server's loop (called from the drivers' thread)."""
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop closed (shutdown)
            pass

    def _to_driver(self, queue: asyncio.Queue, item: Any) -> None:
        """Hand an input chunk to a driver's queue on the drivers' loop (newest wins)."""
        def put() -> None:
            self.inputs_dropped += put_newest(queue, item)

        if self._stack is None:
            put()
        else:
            self._stack.call_soon(put)

    def _inputs_for(self, name: str, driver_cls: type[Driver]) -> LayerInputs:
        """The layer's input queues, made when the layer is added: audio or video a client sends
        before the layer's driver has started waits there instead of being lost."""
        return self.inputs.setdefault(name, LayerInputs(
            asyncio.Queue(maxsize=AUDIO_QUEUE) if driver_cls.needs_audio else None,
            asyncio.Queue(maxsize=VIDEO_QUEUE) if driver_cls.needs_video else None))

    def _context(self, name: str, driver_cls: type[Driver], options: DriverOptions) -> DriverContext:
        inputs = self._inputs_for(name, driver_cls)
        return DriverContext(
            session_id=self.id, rate=driver_cls.rate_for(options), head=self.head,
            audio_in=inputs.audio, video_in=inputs.video,
            emit=lambda event: self._to_loop(self._driver_event, name, event),
            emit_audio=lambda chunk: self._to_loop(self._audio_out, chunk),
        )

    def _factory(self, layer: LayerRequest):
        self._inputs_for(layer.name, layer.driver_cls)

        def make() -> Driver:
            return layer.driver_cls(layer.options, self._context(layer.name, layer.driver_cls, layer.options))

        return make

    def _make_base(self) -> Driver:
        idle = idle_driver_class(self.host)
        options = idle.parse_options({})
        return idle(options, self._context(BASE_LAYER, idle, options))

    async def close(self, reason: str) -> None:
        if self.state == SessionPhase.CLOSED:
            return
        self.state = SessionPhase.CLOSED
        if self._stack is not None:  # the drivers' thread ends by itself and closes its socket
            self._stack.stop()
        elif self._publisher is not None:
            self._publisher.close()
        await self.outputs.close()
        await self.link.close_session(self.id, reason)
        for viewer in list(self.viewers):
            await viewer.close()
        if self.video is not None:
            self.video.stop()
        self.audio.stop()
        self.emit({"type": "closed", "reason": reason})

    # --- driver layers ---------------------------------------------------------------------

    @property
    def stack(self) -> DriverStack | None:
        return self._stack

    @property
    def top_layer(self) -> LayerRequest | None:
        """The highest layer the client asked for (None: the idle base drives alone)."""
        names = [layer.name for layer in self._stack.layers[1:]] if self._stack else list(self.layers)
        return self.layers[names[-1]] if names else None

    @property
    def driver_name(self) -> str:
        top = self.top_layer
        return top.driver_cls.name if top else idle_driver_class(self.host).name

    async def control(self, body: Any) -> ControlReply:
        """A client's control message (decoded JSON): see ``control.apply_control``."""
        return await apply_control(self, body, self.host.drivers)

    async def driver_control(self, message: Control) -> Any:
        """The reply of the layer ``message.layer`` (or the highest that takes the kind)."""
        if self._stack is None:
            raise ControlNotSupported("the drivers have not started yet; try again shortly")
        try:
            return await self._stack.control(message, layer=message.layer)
        except (KeyError, IndexError) as exc:  # a value the driver looked for is missing: the client's to fix
            raise ValueError(f"missing or unusable value ({exc!r})") from None

    def switch_driver(self, driver_cls: type[Driver], options: DriverOptions) -> None:
        """Replace the top layer's driver (or add one above the base): the single-driver form."""
        top = self.top_layer
        layer = LayerRequest(top.name if top else driver_cls.name, driver_cls, options, frozenset(driver_cls.channels))
        self.layers[layer.name] = layer
        if self._stack is not None:
            self._stack.rate = driver_cls.rate_for(options)
            if top is None:
                self._stack.add(layer.name, self._factory(layer), layer.channels)
            else:
                self.inputs.pop(layer.name, None)
                asyncio.ensure_future(self._stack.replace(layer.name, self._factory(layer), layer.channels))
        self.emit({"type": "driver", "driver": driver_cls.name})

    async def layer_action(self, body: dict[str, Any]) -> dict[str, Any]:
        """``{"kind": "layer", "action": "add" | "remove" | "move" | "mute" | "unmute", ...}``."""
        try:
            return await apply_layer_action(self, body, self.host.drivers)
        except UnknownLayer as exc:
            raise NoSuchLayer(str(exc)) from None
        except LayerError as exc:
            raise BadControl(str(exc)) from None

    def layer_names(self) -> list[str]:
        return [layer.name for layer in self._stack.layers] if self._stack else [BASE_LAYER, *self.layers]

    def add_layer(self, layer: LayerRequest, index: int | None) -> None:
        self._stack.add(layer.name, self._factory(layer), layer.channels, index=index, muted=layer.muted)
        self.layers[layer.name] = layer

    async def remove_layer(self, name: str) -> None:
        await self._stack.remove(name)
        self.layers.pop(name, None)
        self.inputs.pop(name, None)

    def move_layer(self, name: str, index: int) -> None:
        self._stack.move(name, index)

    def mute_layer(self, name: str, muted: bool) -> None:
        self._stack.mute(name, muted)

    def describe_layers(self) -> list[dict[str, Any]]:
        """Every layer, bottom first: what it is and how it runs."""
        if self._stack is None:
            return [layer.describe() for layer in self.layers.values()]
        out = []
        for stats in self._stack.stats().layers:
            request = self.layers.get(stats["name"])
            out.append({**(request.describe() if request else {"name": stats["name"], "options": {}}), **stats})
        return out

    def feed_audio(self, chunk: AudioChunk) -> None:
        """Audio a client sends, to every layer whose driver needs audio (bounded, newest wins)."""
        for inputs in list(self.inputs.values()):
            if inputs.audio is not None:
                self._to_driver(inputs.audio, chunk)

    def feed_video(self, frame: Any) -> None:
        for inputs in list(self.inputs.values()):
            if inputs.video is not None:
                self._to_driver(inputs.video, frame)

    @property
    def wants_audio(self) -> bool:
        return any(layer.driver_cls.needs_audio for layer in self.layers.values())

    @property
    def wants_video(self) -> bool:
        return any(layer.driver_cls.needs_video for layer in self.layers.values())

    # --- worker sink ----------------------------------------------------------------------

    def on_video(self, frame: VideoFrame) -> None:
        if self.video is None:
            return
        self.last_video = time.monotonic()
        self.stats.frames_in += 1
        self.stats.fps_in.tick()
        self.stats.render_ms.add(frame.render_ns / 1e6)
        opaque = self.video.push(frame, getattr(frame, "mattes", None))
        if opaque is not None:
            self.first_video.set()
            self.outputs.video(opaque)

    def on_audio(self, chunk: AudioChunk) -> None:
        self._audio_out(chunk)  # a generator that makes audio: same track as driver audio

    def _audio_out(self, chunk: AudioChunk) -> None:
        """Audio a driver or the generator passes through: to the viewers and the outputs."""
        self.audio.put(chunk)
        self.outputs.audio(chunk)

    async def _publish(self, frame) -> None:
        """The driver stack's frames to the worker, unless an outside process drives the session."""
        if not self.external:
            await self._publisher.send(frame)

    def set_background(self, background: Background) -> None:
        self.request = dataclasses.replace(self.request, background=background)
        if self.video is not None:
            self.video.background = background
        self.emit({"type": "background", "background": background.value})

    def set_external(self, external: bool) -> None:
        self.external = bool(external)
        self.emit({"type": "external", "external": self.external})

    async def attach_output(self, name: str, options: Any) -> dict[str, Any]:
        """Attach the registered output ``name``; OutputError (with its HTTP status) otherwise."""
        try:
            output_cls = self.host.outputs.get(name)
        except KeyError as exc:
            raise OutputError(exc.args[0]) from None
        # the newest frame goes to the output at once, so a device that cannot take it fails here
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.first_video.wait(), FIRST_FRAME_WAIT)
        runner = await self.outputs.attach(output_cls, options, self.info, self.video.latest if self.video else None)
        return runner.describe()

    def external_endpoint(self) -> dict[str, Any] | None:
        """Where an outside driver publishes this session's frames, when the session is external."""
        if not self.external:
            return None
        endpoint, wire = self.link.input_endpoint, self.link.wire_id(self.id)  # frames are addressed by the wire token
        keys = f" --keys {self.link.key_folder}" if self.link.keys is not None and self.link.key_folder else ""
        head = f" --head {self.head.name}" if self.head.name.startswith("flame") else ""  # the frames' size
        return {"connect": endpoint, "session": wire, "curve": self.link.keys is not None,
                "keys": self.link.key_folder if keys else None,
                "command": f"flamecast driver NAME --connect {endpoint} --session {wire}{keys}{head}"}

    def _audio_delay_ms(self) -> float:
        """How late the video is (capture -> send, median), so audio can wait as long."""
        return self.stats.server_latency.percentile(50) or 0.0

    def on_status(self, meta: Mapping[str, Any]) -> None:
        if meta.get("state") == "error" and self.state == SessionPhase.RUNNING:
            self.worker_error = str(meta.get("error"))
            self.emit({"type": "error", "error": self.worker_error})

    async def heal(self) -> None:
        """No video for REOPEN_AFTER seconds: offer the session to the worker again (it may have
        restarted and lost it). Harmless when the worker has it."""
        now = time.monotonic()
        if self.state != SessionPhase.RUNNING or min(now - self.last_video, now - self.last_reopen) < REOPEN_AFTER:
            return
        self.last_reopen = now
        self.reopens += 1
        await self.link.reopen_session(self.id, generator=self.request.generator, options=self._open_options,
                                       portrait=self.request.portrait)

    def on_bad_message(self) -> None:
        self.stats.bad_messages += 1

    # --- clients --------------------------------------------------------------------------

    def video_track(self, name: str) -> MediaStreamTrack:
        """A viewer's track of view ``name`` (or "mosaic"); KeyError for an unknown name."""
        if self.video is None:
            raise KeyError(name)
        return self.video.subscribe(name)

    def audio_track(self) -> MediaStreamTrack:
        """A viewer's track of the audio the driver or generator passes through."""
        if self.video is None:
            raise KeyError("audio")
        return self.video.relay.subscribe(self.audio, buffered=False)

    def add_viewer(self, viewer: ViewerSubscriber) -> None:
        self.viewers.add(viewer)

    def add_listener(self, listener: EventSubscriber) -> None:
        self.listeners.add(listener)

    def remove_viewer(self, viewer: ViewerSubscriber) -> None:
        """Forget a viewer; the session counts as used until now (see idle_for)."""
        self.viewers.discard(viewer)
        self.touch()

    def remove_listener(self, listener: EventSubscriber) -> None:
        self.listeners.discard(listener)
        self.touch()

    def add_client_latency(self, ms: float) -> None:
        """A glass-to-glass latency a client measured."""
        self.stats.client_latency.add(ms)

    def _driver_event(self, layer: str, event: dict[str, Any]) -> None:
        self.emit({"type": "driver-event", "layer": layer, "event": event})

    def emit(self, event: dict[str, Any]) -> None:
        """Send an event to every events socket and data channel of this session only."""
        event = {**event, "session": self.id, "ts_ns": time.time_ns()}
        self.recent_events.append(event)
        for listener in list(self.listeners):
            listener.on_event(event)
        for viewer in list(self.viewers):
            viewer.on_event(event)

    def _frame_sent(self, frame: VideoFrame, pts: int) -> None:
        for viewer in list(self.viewers):
            viewer.on_frame_sent(frame.seq, frame.capture_ns, pts)

    def touch(self) -> None:
        self.last_client = time.monotonic()

    def idle_for(self) -> float:
        """Seconds since this session last had a viewer or an events socket."""
        if self.viewers or self.listeners:
            self.touch()
        return time.monotonic() - self.last_client

    def describe(self) -> dict[str, Any]:
        stack = self._stack.stats() if self._stack else None
        layers = self.describe_layers()
        top = self.top_layer
        restarts = sum(layer.get("restarts", 0) for layer in layers)
        errors = [layer["last_error"] for layer in layers if layer.get("last_error")]
        return {
            "id": self.id,
            "state": self.state,
            "driver": self.driver_name,
            "options": top.options.model_dump() if top else {},
            "layers": layers,
            "emotion": self.request.emotion.value,
            "background": self.request.background.value,
            "channel": self.channel,
            "external": self.external_endpoint(),
            "outputs": self.outputs.describe(),
            "generator": self.request.generator,
            "profile": self.request.profile,
            "views": list(self.view_ids),
            "tracks": list(self.video.track_names) if self.video else [],
            "size": self.size,
            "head": self.head.to_wire(),
            "pts_epoch_ns": self.video.epoch_ns if self.video else None,
            "created_ns": self.created_ns,
            "viewers": len(self.viewers),
            "stats": {
                **self.stats.as_dict(),
                "driver_restarts": restarts,
                "driver_state": _top_state(layers),
                "last_error": errors[-1] if errors else None,
                "channel_owners": stack.owners if stack else {},
                "inputs_dropped": self.inputs_dropped,
                "reopens": self.reopens,
                "worker_error": self.worker_error,
                "matte_missing": bool(self.video and self.video.matte_missing),
            },
        }


def _top_state(layers: list[dict[str, Any]]) -> str | None:
    """``running`` when the top layer drives, ``fallback`` when a lower one stands in for it."""
    if not layers or "state" not in layers[-1]:
        return None
    state = layers[-1]["state"]
    return "running" if state == "running" else "fallback" if len(layers) > 1 else state


def idle_driver_class(host: PluginHost) -> type[Driver]:
    if "idle" in host.drivers:
        return host.drivers.get("idle")
    from flamecast.drivers.idle import IdleDriver

    return IdleDriver


class SessionManager:
    """Creates sessions under the limit, finds them, ends them and reaps abandoned ones."""

    def __init__(self, settings: Settings, host: PluginHost, link: WorkerLink) -> None:
        self.settings = settings
        self.host = host
        self.link = link
        self.sessions: dict[str, Session] = {}
        self.channels = ChannelRegistry()
        self.ended = collections.Counter()
        self._lock = asyncio.Lock()

    async def create(self, request: SessionRequest) -> Session:
        async with self._lock:
            if len(self.sessions) >= self.settings.max_sessions:
                raise SessionLimit(
                    f"this server runs at most {self.settings.max_sessions} sessions and all are in use; "
                    "end one (DELETE /api/sessions/ID) or raise --max-sessions"
                )
            session = Session(secrets.token_hex(8), request, self.host, self.link)
            self.sessions[session.id] = session
        try:
            await session.open(self.settings.open_timeout)
        except BaseException:
            self.sessions.pop(session.id, None)
            self.link.detach(session.id)
            await session.close("error: open failed")
            raise
        try:
            for name, options in request.outputs:
                await session.attach_output(name, options)
        except BaseException:
            await self.end(session.id, "error: an output failed")
            raise
        if request.channel:
            self.publish(session, request.channel)
        self.host.notify("flamecast_session_started", session=session.info)
        log.info("session %s started (layers %s, views %s)", session.id, ",".join(session.layers) or "idle",
                 ",".join(session.view_ids))
        return session

    def get(self, session_id: str) -> Session:
        """The running session ``session_id``; KeyError when there is none."""
        session = self.sessions.get(session_id)
        if session is None or session.state == SessionPhase.OPENING:
            raise KeyError(session_id)
        return session

    async def end(self, session_id: str, reason: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None:
            return False
        self.channels.release(session_id)
        await session.close(reason)
        self.ended[reason.split(":")[0]] += 1
        self.host.notify("flamecast_session_ended", session=session.info, reason=reason)
        log.info("session %s ended: %s", session_id, reason)
        return True

    def publish(self, session: Session, channel: str | None) -> None:
        """Publish ``session`` under ``channel`` (None: unpublish it); the newest claim wins."""
        for name in self.channels.release(session.id):
            session.emit({"type": "channel", "channel": name, "event": "released"})
        session.channel = channel
        if channel is None:
            return
        previous = self.channels.claim(channel, session.id)
        if previous is not None and previous in self.sessions:
            self.sessions[previous].channel = None
            self.sessions[previous].emit({"type": "channel", "channel": channel, "event": "taken", "by": session.id})
        session.emit({"type": "channel", "channel": channel, "event": "published"})

    async def close_all(self, reason: str = "shutdown") -> None:
        await asyncio.gather(*(self.end(sid, reason) for sid in list(self.sessions)), return_exceptions=True)

    async def reap_forever(self) -> None:
        """End sessions that have had no viewer and no events socket for idle_timeout seconds."""
        while True:
            await asyncio.sleep(REAP_INTERVAL)
            for session in list(self.sessions.values()):
                if session.state == SessionPhase.RUNNING and session.idle_for() > self.settings.idle_timeout:
                    await self.end(session.id, "client-gone")
                else:
                    await session.heal()

"""The server's ZeroMQ links to a generator worker.

* one PUB (owned here) connected to the worker's input, for session.open / session.close;
  each session's FramePublisher is a further PUB connected to the same input;
* one SUB connected to the worker's output (video, audio, session.status for every session),
  read by one task that hands each message to the session whose id is its topic, exactly
  (ZeroMQ subscriptions match prefixes, so the link subscribes to everything and compares).

On the wire a session is addressed by a token of its own (``wire_id``), unguessable and never
shown to clients, not by its HTTP id. With CURVE keys every socket authenticates the worker
and is admitted by it. The worker's ``worker.status`` heartbeat tells whether it is alive
(``health``); when a new worker instance appears (a restart), the link opens every session
on it again at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Mapping, Protocol

import zmq
import zmq.asyncio

from flamecast.plugins import protocol as wire
from flamecast.plugins.publish import CurveKeys, secure_client
from flamecast.server.security import new_token

log = logging.getLogger(__name__)

VIDEO_RCVHWM = 64  # messages; stale video is dropped downstream (newest wins)
CONTROL_SNDHWM = 256
REOPEN_INTERVAL = 0.5  # seconds between session.open retries (PUB/SUB slow joiner)
HEARTBEAT_TIMEOUT = 3.0  # seconds without a worker.status before the worker counts as unreachable
REOPEN_FOR = 20.0  # seconds a restarted worker is offered the sessions before they wait for heal


class SessionSink(Protocol):
    def on_video(self, frame: wire.VideoFrame) -> None: ...
    def on_audio(self, chunk: wire.AudioChunk) -> None: ...
    def on_status(self, meta: Mapping[str, Any]) -> None: ...
    def on_bad_message(self) -> None: ...


class WorkerUnavailable(Exception):
    """The worker did not answer session.open in time."""


class PortraitRejected(Exception):
    """The worker refused the session. ``code`` says why: "portrait" or "options" (the
    client's to fix), "busy" or "unavailable" (the server's), "internal" (a generator bug)."""

    def __init__(self, message: str, code: str = "internal") -> None:
        super().__init__(message)
        self.code = code


class WorkerLink:
    """Connects to one generator worker; routes its output to sessions by id."""

    def __init__(self, input_endpoint: str, output_endpoint: str, context: zmq.asyncio.Context | None = None,
                 keys: CurveKeys | None = None, key_folder: str | None = None) -> None:
        self.input_endpoint = input_endpoint
        self.output_endpoint = output_endpoint
        self.context = context or zmq.asyncio.Context.instance()
        self.keys = keys
        self.key_folder = key_folder  # where ``keys`` came from: an outside driver on this host uses it too
        self._sinks: dict[str, SessionSink] = {}  # by wire token
        self._tokens: dict[str, str] = {}  # session id -> wire token
        self._opens: dict[str, list[bytes]] = {}  # wire token -> its session.open, for a restarted worker
        self._reopening: dict[str, float] = {}  # wire token -> until when it is offered again
        self._pending: dict[str, asyncio.Future] = {}
        self._heard = asyncio.Event()
        self.started_at = time.monotonic()
        self.last_heartbeat: float | None = None
        self.worker: dict[str, Any] = {}  # the last worker.status meta
        self.worker_restarts = 0
        self.restart_listeners: list[Any] = []  # called (no arguments) when a new worker instance appears
        self._pub: zmq.asyncio.Socket | None = None
        self._sub: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task | None = None
        self.bad_messages = 0
        self.unknown_topic = 0

    async def start(self) -> None:
        self._pub = self.context.socket(zmq.PUB)
        self._pub.setsockopt(zmq.SNDHWM, CONTROL_SNDHWM)
        self._pub.setsockopt(zmq.LINGER, 200)
        secure_client(self._pub, self.keys)
        self._pub.connect(self.input_endpoint)
        self._sub = self.context.socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, VIDEO_RCVHWM)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.MAXMSGSIZE, wire.MAX_MESSAGE_BYTES)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        secure_client(self._sub, self.keys)
        self._sub.connect(self.output_endpoint)
        self.started_at = time.monotonic()
        self._task = asyncio.create_task(self._receive(), name="worker-link")
        self._reopener = asyncio.create_task(self._reopen_loop(), name="worker-link-reopen")

    async def close(self) -> None:
        for task in (self._task, getattr(self, "_reopener", None)):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for sock in (self._pub, self._sub):
            if sock is not None:
                sock.close()

    def wire_id(self, session_id: str) -> str:
        """The session's address on the wire: a token made for it (``new_token``), never its HTTP id."""
        if session_id not in self._tokens:
            self._tokens[session_id] = new_token()
        return self._tokens[session_id]

    def attach(self, session_id: str, sink: SessionSink) -> None:
        self._sinks[self.wire_id(session_id)] = sink

    def detach(self, session_id: str) -> None:
        """Stop routing the session's messages (its token stays until ``close_session``)."""
        token = self._tokens.get(session_id)
        if token is not None:
            self._sinks.pop(token, None)
            self._opens.pop(token, None)
            self._reopening.pop(token, None)

    # --- the worker's health ---------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``state``: ``ok`` (heard within HEARTBEAT_TIMEOUT and its threads alive),
        ``degraded`` (heard, but a thread is down), ``unreachable`` (not heard for longer) or
        ``starting`` (not heard yet, started recently)."""
        now = time.monotonic()
        if self.last_heartbeat is None:
            state = "starting" if now - self.started_at < HEARTBEAT_TIMEOUT else "unreachable"
            return {"state": state, "seen_s_ago": None, "restarts": self.worker_restarts}
        ago = now - self.last_heartbeat
        threads = self.worker.get("threads") or {}
        warming = self.warming()
        state = ("unreachable" if ago > HEARTBEAT_TIMEOUT else "degraded" if not all(threads.values())
                 else "warming" if warming else "ok")
        return {"state": state, "seen_s_ago": round(ago, 3), "restarts": self.worker_restarts,
                "sessions": self.worker.get("sessions"), "thread_restarts": self.worker.get("thread_restarts"),
                "warming": warming}

    def warming(self) -> list[str]:
        """Generators the worker is still loading and warming up (compiling), from its heartbeat."""
        names = self.worker.get("warming") or []
        return [str(n) for n in names][:16] if isinstance(names, list) else []

    async def wait_heard(self, timeout: float) -> bool:
        """Wait until the worker's first heartbeat (at most ``timeout`` s); whether it came."""
        try:
            await asyncio.wait_for(self._heard.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _on_heartbeat(self, meta: Mapping[str, Any]) -> None:
        instance = meta.get("instance")
        known = self.worker.get("instance")
        self.last_heartbeat = time.monotonic()
        self.worker = dict(meta)
        self._heard.set()
        if known is not None and instance != known:
            self.worker_restarts += 1
            log.warning("the generator worker restarted (instance %s -> %s); opening %d sessions on it again",
                        known, instance, len(self._opens))
            until = time.monotonic() + REOPEN_FOR
            self._reopening = {token: until for token in self._opens}
            for listener in list(self.restart_listeners):
                try:
                    listener()
                except Exception:
                    log.exception("a worker restart listener failed")

    async def _reopen_loop(self) -> None:
        """Offer each session to a restarted worker until it answers (or REOPEN_FOR passed)."""
        while True:
            await asyncio.sleep(REOPEN_INTERVAL / 2)
            now = time.monotonic()
            for token, until in list(self._reopening.items()):
                message = self._opens.get(token)
                if message is None or now > until:
                    self._reopening.pop(token, None)
                else:
                    await self._send(message)

    async def open_session(
        self, session_id: str, *, generator: str, options: Mapping[str, Any], portrait: bytes | None, timeout: float
    ) -> Mapping[str, Any]:
        """Send session.open until the worker answers; return the "ready" meta.

        Raises PortraitRejected with the worker's message on "error", WorkerUnavailable on timeout.
        """
        token = self.wire_id(session_id)
        fut = asyncio.get_running_loop().create_future()
        self._pending[token] = fut
        message = wire.session_open_message(token, generator=generator, options=options, portrait=portrait)
        self._opens[token] = message
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self._send(message)
                    done, _ = await asyncio.wait({fut}, timeout=REOPEN_INTERVAL)
                    if done:
                        break
        except TimeoutError:
            if generator in self.warming():
                raise WorkerUnavailable(
                    f"the generator {generator!r} is still loading and warming up (compiling its models) on the "
                    f"worker; try again when GET /healthz says ok") from None
            raise WorkerUnavailable(
                f"the generator worker at {self.input_endpoint} did not answer within {timeout:g} s; "
                "check that `flamecast generator` is running there (see the server log)"
            ) from None
        finally:
            self._pending.pop(token, None)
        meta = fut.result()
        if meta.get("state") == "error":
            raise PortraitRejected(str(meta.get("error") or "the generator refused the session"),
                                   str(meta.get("code") or "internal"))
        return meta

    async def reopen_session(self, session_id: str, *, generator: str, options: Mapping[str, Any],
                             portrait: bytes | None) -> None:
        """Send session.open once more without waiting: a worker that restarted (and lost the
        session) opens it again; one that has it answers its status and changes nothing."""
        token = self.wire_id(session_id)
        message = wire.session_open_message(token, generator=generator, options=options, portrait=portrait)
        self._opens[token] = message
        await self._send(message)

    async def close_session(self, session_id: str, reason: str) -> None:
        self.detach(session_id)
        token = self._tokens.pop(session_id, None)
        if token is not None:
            await self._send(wire.session_close_message(token, reason))

    async def _send(self, frames: list[bytes]) -> None:
        assert self._pub is not None, "WorkerLink.start() first"
        try:
            await self._pub.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            log.warning("control message to the worker dropped (queue full)")

    async def _receive(self) -> None:
        assert self._sub is not None
        while True:
            frames = await self._sub.recv_multipart(copy=True)
            try:
                self._dispatch(wire.unpack(frames))
            except wire.ProtocolError as exc:
                self.bad_messages += 1
                log.debug("dropped a bad message from the worker: %s", exc)
            except Exception:  # a sink bug must not stop the link
                log.exception("error while handling a worker message")

    def _dispatch(self, env: wire.Envelope) -> None:
        if env.type == wire.WORKER_STATUS:
            self._on_heartbeat(env.meta)
            return
        if env.type == wire.SESSION_STATUS:
            if env.meta.get("state") in ("ready", "error"):
                self._reopening.pop(env.topic, None)
            fut = self._pending.get(env.topic)
            if fut is not None and not fut.done() and env.meta.get("state") in ("ready", "error"):
                fut.set_result(dict(env.meta))
        sink = self._sinks.get(env.topic)
        if sink is None:
            self.unknown_topic += 1
            return
        try:
            if env.type == wire.VIDEO:
                sink.on_video(wire.video_from_envelope(env))
            elif env.type == wire.AUDIO:
                sink.on_audio(wire.audio_from_envelope(env))
            elif env.type == wire.SESSION_STATUS:
                sink.on_status(env.meta)
        except wire.ProtocolError:
            sink.on_bad_message()
            raise

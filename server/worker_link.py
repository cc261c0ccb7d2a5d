"""The server's ZeroMQ links to a generator worker.

* one PUB (owned here) connected to the worker's input, for session.open / session.close;
  each session's FramePublisher is a further PUB connected to the same input;
* one SUB connected to the worker's output (video, audio, session.status for every session),
  read by one task that hands each message to the session whose id is its topic, exactly
  (ZeroMQ subscriptions match prefixes, so the link subscribes to everything and compares).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping, Protocol

import zmq
import zmq.asyncio

from flamecast.plugins import protocol as proto

log = logging.getLogger(__name__)

VIDEO_RCVHWM = 64  # messages; stale video is dropped downstream (newest wins)
CONTROL_SNDHWM = 256
REOPEN_INTERVAL = 0.5  # seconds between session.open retries (PUB/SUB slow joiner)


class SessionSink(Protocol):
    def on_video(self, frame: proto.VideoFrame) -> None: ...
    def on_audio(self, chunk: proto.AudioChunk) -> None: ...
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

    def __init__(self, input_endpoint: str, output_endpoint: str, context: zmq.asyncio.Context | None = None) -> None:
        self.input_endpoint = input_endpoint
        self.output_endpoint = output_endpoint
        self.context = context or zmq.asyncio.Context.instance()
        self._sinks: dict[str, SessionSink] = {}
        self._pending: dict[str, asyncio.Future] = {}
        self._pub: zmq.asyncio.Socket | None = None
        self._sub: zmq.asyncio.Socket | None = None
        self._task: asyncio.Task | None = None
        self.bad_messages = 0
        self.unknown_topic = 0

    async def start(self) -> None:
        self._pub = self.context.socket(zmq.PUB)
        self._pub.setsockopt(zmq.SNDHWM, CONTROL_SNDHWM)
        self._pub.setsockopt(zmq.LINGER, 200)
        self._pub.connect(self.input_endpoint)
        self._sub = self.context.socket(zmq.SUB)
        self._sub.setsockopt(zmq.RCVHWM, VIDEO_RCVHWM)
        self._sub.setsockopt(zmq.LINGER, 0)
        self._sub.setsockopt(zmq.SUBSCRIBE, b"")
        self._sub.connect(self.output_endpoint)
        self._task = asyncio.create_task(self._receive(), name="worker-link")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for sock in (self._pub, self._sub):
            if sock is not None:
                sock.close()

    def attach(self, session_id: str, sink: SessionSink) -> None:
        self._sinks[session_id] = sink

    def detach(self, session_id: str) -> None:
        self._sinks.pop(session_id, None)

    async def open_session(
        self, session_id: str, *, generator: str, options: Mapping[str, Any], portrait: bytes | None, timeout: float
    ) -> Mapping[str, Any]:
        """Send session.open until the worker answers; return the "ready" meta.

        Raises PortraitRejected with the worker's message on "error", WorkerUnavailable on timeout.
        """
        fut = asyncio.get_running_loop().create_future()
        self._pending[session_id] = fut
        message = proto.session_open_message(session_id, generator=generator, options=options, portrait=portrait)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    await self._send(message)
                    done, _ = await asyncio.wait({fut}, timeout=REOPEN_INTERVAL)
                    if done:
                        break
        except TimeoutError:
            raise WorkerUnavailable(
                f"the generator worker at {self.input_endpoint} did not answer within {timeout:g} s; "
                "check that `flamecast generator` is running there (see the server log)"
            ) from None
        finally:
            self._pending.pop(session_id, None)
        meta = fut.result()
        if meta.get("state") == "error":
            raise PortraitRejected(str(meta.get("error") or "the generator refused the session"),
                                   str(meta.get("code") or "internal"))
        return meta

    async def reopen_session(self, session_id: str, *, generator: str, options: Mapping[str, Any],
                             portrait: bytes | None) -> None:
        """Send session.open once more without waiting: a worker that restarted (and lost the
        session) opens it again; one that has it answers its status and changes nothing."""
        await self._send(proto.session_open_message(session_id, generator=generator, options=options, portrait=portrait))

    async def close_session(self, session_id: str, reason: str) -> None:
        self.detach(session_id)
        await self._send(proto.session_close_message(session_id, reason))

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
                self._dispatch(proto.unpack(frames))
            except proto.ProtocolError as exc:
                self.bad_messages += 1
                log.debug("dropped a bad message from the worker: %s", exc)
            except Exception:  # a sink bug must not stop the link
                log.exception("error while handling a worker message")

    def _dispatch(self, env: proto.Envelope) -> None:
        if env.type == proto.SESSION_STATUS:
            fut = self._pending.get(env.topic)
            if fut is not None and not fut.done() and env.meta.get("state") in ("ready", "error"):
                fut.set_result(dict(env.meta))
        sink = self._sinks.get(env.topic)
        if sink is None:
            self.unknown_topic += 1
            return
        try:
            if env.type == proto.VIDEO:
                sink.on_video(proto.video_from_envelope(env))
            elif env.type == proto.AUDIO:
                sink.on_audio(proto.audio_from_envelope(env))
            elif env.type == proto.SESSION_STATUS:
                sink.on_status(env.meta)
        except proto.ProtocolError:
            sink.on_bad_message()
            raise

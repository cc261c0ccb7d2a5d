"""Publishing FlameFrames on ZeroMQ: one PUB socket per session, owned by its runtime task."""

from __future__ import annotations

import time

import zmq
import zmq.asyncio

from .frame import FlameFrame
from .protocol import flame_message

# Two seconds of frames at 30 fps: a generator that stalls briefly loses nothing, one that
# stalls longer loses the oldest backlog instead of growing memory. Video sockets use far
# smaller marks (see the generator worker): stale video is worthless, stale poses are cheap.
FLAME_SNDHWM = 64
LINGER_MS = 200


class FramePublisher:
    """PUB socket that connects to a generator worker's flame endpoint."""

    def __init__(self, endpoint: str, context: zmq.asyncio.Context | None = None) -> None:
        self._ctx = context or zmq.asyncio.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, FLAME_SNDHWM)
        self._sock.setsockopt(zmq.LINGER, LINGER_MS)
        self._sock.connect(endpoint)
        self.sent = 0
        self.dropped = 0

    async def send(self, frame: FlameFrame) -> None:
        try:
            await self._sock.send_multipart(flame_message(frame, sent_ns=time.time_ns()), flags=zmq.NOBLOCK, copy=False)
            self.sent += 1
        except zmq.Again:
            self.dropped += 1

    def close(self) -> None:
        self._sock.close()

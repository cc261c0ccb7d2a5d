"""The inproc hand-off: the lifecycle and render threads give finished messages (video,
session.status) to the socket loop, which alone owns the PUB socket.

Each of those threads connects its own PUSH socket; the socket loop binds the one PULL socket.
A push never blocks: past the mark the message is dropped and the sender counts it.
"""

from __future__ import annotations

import uuid

import zmq

from .settings import HANDOFF_HWM


class Handoff:
    """One worker's PUSH/PULL pair on a private ``inproc://`` endpoint."""

    def __init__(self, ctx: zmq.Context) -> None:
        self.ctx = ctx
        self.endpoint = f"inproc://flamecast-worker-{uuid.uuid4().hex}"

    def bind_pull(self) -> zmq.Socket:
        pull = self.ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, HANDOFF_HWM)
        pull.bind(self.endpoint)
        return pull

    def connect_push(self) -> zmq.Socket:
        """A PUSH socket for the calling thread (a socket has one owner)."""
        push = self.ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, HANDOFF_HWM)
        push.connect(self.endpoint)
        return push


def send(push: zmq.Socket, frames: list[bytes]) -> bool:
    """Hand ``frames`` over without blocking; False when the hand-off is full (dropped)."""
    try:
        push.send_multipart(frames, zmq.NOBLOCK, copy=False)
        return True
    except zmq.Again:
        return False

"""The generator worker: FLAME frames in, multi-view video out, over ZeroMQ.

Three threads, each with its own job (docs/generator.md), around one ``SessionTable``:

* the socket loop (``sockets.GeneratorWorker``) owns both ZeroMQ sockets: a SUB on ``input``
  (flame frames, session.open/close) and a PUB on ``output`` (video, session.status). Each
  message is validated (``validation``) and handled (``inbox``): frames go into their session's
  newest-wins buffer. It forwards what the other threads produce through an ``inproc://``
  PUSH/PULL pair (``handoff``), so each socket keeps one owner. It never renders and never
  decodes a portrait.
* the lifecycle thread (``lifecycle``) loads generators and opens and closes generator sessions
  (decoding the portrait and fitting the avatar take a second or two; that must stall neither
  the sockets nor other sessions).
* the render thread (``render``) takes sessions round-robin, hands each its buffered frames in
  one batch (``GeneratorSession.step``) and publishes the results.

A session whose driver goes quiet costs nothing: no frames, no renders; its last video frame
stands (the server's tracks repeat it). Malformed input is counted, never fatal.
"""

from flamecast.plugins.protocol import RefusalCode, SessionState

from .settings import DEFAULT_INPUT, DEFAULT_OUTPUT, HANDOFF_HWM, INPUT_RCVHWM, POLL_MS, VIDEO_SNDHWM, WorkerSettings
from .sockets import GeneratorWorker
from .table import FrameBuffer, Session, SessionStats, SessionTable, StatusReport, WorkerStats

__all__ = [
    "DEFAULT_INPUT",
    "DEFAULT_OUTPUT",
    "FrameBuffer",
    "GeneratorWorker",
    "HANDOFF_HWM",
    "INPUT_RCVHWM",
    "POLL_MS",
    "RefusalCode",
    "Session",
    "SessionState",
    "SessionStats",
    "SessionTable",
    "StatusReport",
    "VIDEO_SNDHWM",
    "WorkerSettings",
    "WorkerStats",
]

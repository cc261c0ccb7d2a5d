"""The render thread: sessions round-robin, each turn one batch of all its buffered frames.

``SessionTable.next_batch`` picks the session and takes its frames; ``GeneratorSession.step``
renders them (outside the lock: the socket loop keeps filing frames meanwhile); the video goes
out through the hand-off, one message per driving frame.
"""

from __future__ import annotations

import logging
import time

from flamecast.plugins import FlameFrame, RenderedFrame
from flamecast.plugins import protocol as wire

from .handoff import Handoff, send
from .table import Session, SessionTable

log = logging.getLogger(__name__)


class RenderLoop:
    def __init__(self, table: SessionTable, handoff: Handoff) -> None:
        self.table = table
        self.handoff = handoff

    def run(self) -> None:
        """The thread's body: render until the table shuts down."""
        push = self.handoff.connect_push()
        try:
            while (batch := self.table.next_batch()) is not None:
                self._render(*batch, push)
        finally:
            push.close(linger=0)

    def _render(self, session: Session, frames: list[FlameFrame], push) -> None:
        """One session's turn. Whatever fails fails that session, with a reason; the loop and
        the other sessions go on."""
        t0 = time.perf_counter_ns()
        try:
            rendered = session.gen.step(frames)
            elapsed = time.perf_counter_ns() - t0
            messages = [self._message(session.id, r, elapsed // max(1, len(rendered))) for r in rendered]
        except Exception as exc:  # a generator bug, or frames the wire refuses
            log.exception("session %s: rendering failed", session.id)
            self._fail(session, f"generator {session.generator!r} failed while rendering: "
                                f"{exc.__class__.__name__}: {exc}; reopen the session", push)
            return
        self.table.finish(session, elapsed, len(rendered))
        for message in messages:
            if not send(push, message):
                self.table.count("video_dropped")

    def _fail(self, session: Session, message: str, push) -> None:
        report = self.table.step_failed(session, message)
        if report is not None:
            send(push, report.message())

    @staticmethod
    def _message(session_id: str, r: RenderedFrame, per_frame_ns: int) -> list[bytes]:
        """The video message of one rendered frame; ProtocolError when the wire refuses it."""
        video = wire.VideoFrame(session_id, r.source.seq, r.source.capture_ns, r.render_ns or per_frame_ns,
                                r.views, tuple(r.view_ids), getattr(r, "matte", None))
        return wire.video_message(video, sent_ns=time.time_ns())

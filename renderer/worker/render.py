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
        t0 = time.perf_counter_ns()
        try:
            rendered = session.gen.step(frames)
        except Exception as exc:  # that session fails; the others keep rendering
            log.exception("session %s: generator step failed", session.id)
            message = f"generator {session.generator!r} failed while rendering: {exc}; reopen the session"
            report = self.table.step_failed(session, message)
            if report is not None:
                send(push, report.message())
            return
        elapsed = time.perf_counter_ns() - t0
        self.table.finish(session, elapsed, len(rendered))
        self._publish(session.id, rendered, elapsed // max(1, len(rendered)), push)

    def _publish(self, session_id: str, rendered: list[RenderedFrame], per_frame_ns: int, push) -> None:
        for r in rendered:
            video = wire.VideoFrame(session_id, r.source.seq, r.source.capture_ns, r.render_ns or per_frame_ns,
                                    r.views, tuple(r.view_ids))
            if not send(push, wire.video_message(video, sent_ns=time.time_ns())):
                self.table.count("video_dropped")

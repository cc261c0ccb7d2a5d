"""The render thread: sessions round-robin, each turn one batch of all its buffered frames.

``SessionTable.next_group`` picks the session and takes its frames; ``GeneratorSession.step``
renders them (outside the lock: the socket loop keeps filing frames meanwhile); the video goes
out through the hand-off, one message per driving frame. A generator that renders several
sessions in one call (``Generator.step_sessions``, a GPU model batching their windows) gets
every ready session of its own that has frames in the same turn.
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
    def __init__(self, table: SessionTable, handoff: Handoff, max_group: int = 64) -> None:
        self.table = table
        self.handoff = handoff
        self.max_group = max_group

    def run(self) -> None:
        """The thread's body: render until the table shuts down."""
        push = self.handoff.connect_push()
        try:
            while (group := self.table.next_group(self.max_group)) is not None:
                self._render(group, push)
        finally:
            push.close(linger=0)

    def _render(self, group: list[tuple[Session, list[FlameFrame]]], push) -> None:
        """One turn: a session, or several of one batching generator in one ``step_sessions``
        call. Whatever fails fails the turn's sessions (a shared call's failure cannot be laid at
        one session's door), with a reason; the loop and the other sessions go on."""
        t0 = time.perf_counter_ns()
        batcher = group[0][0].batcher
        work = [(s.gen, frames) for s, frames in group]
        try:
            outs = batcher.step_sessions(work) if batcher is not None else [gen.step(frames) for gen, frames in work]
            if len(outs) != len(group):
                raise RuntimeError(f"step_sessions returned {len(outs)} results for {len(group)} sessions")
            elapsed = time.perf_counter_ns() - t0
            total = sum(len(o) for o in outs)
            messages = [[self._message(s.id, r, elapsed // max(1, total)) for r in out] for (s, _), out in zip(group, outs)]
        except Exception as exc:  # a generator bug, or frames the wire refuses
            log.exception("session(s) %s: rendering failed", ", ".join(s.id for s, _ in group))
            for s, _ in group:
                self._fail(s, f"generator {s.generator!r} failed while rendering: {exc.__class__.__name__}: "
                              f"{exc}; reopen the session", push)
            return
        for (s, _), out, session_messages in zip(group, outs, messages):
            self.table.finish(s, elapsed * len(out) // total if total else elapsed // len(group), len(out))
            for message in session_messages:
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

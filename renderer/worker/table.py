"""The session table: every session's state, buffered frames and counters, behind one lock.

Three threads share it: the socket loop files frames and opens and closes sessions, the
lifecycle thread activates (or fails) the sessions it built, the render thread takes batches
round-robin. Every method takes the lock once and nothing outside this module holds it; what a
method's caller must send comes back as a ``StatusReport``.

States (``SessionState``): OPENING -> READY or ERROR; READY -> ERROR; any -> CLOSED. A session
leaves the table when it is closed or replaced; its generator session is then handed to
``on_retired`` (the lifecycle thread closes it), at once or, while the render thread is stepping
it, as soon as that step ends.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from flamecast.plugins import FlameFrame, GeneratorSession, HeadSpace
from flamecast.plugins import protocol as wire
from flamecast.plugins.protocol import RefusalCode, SessionState

from .settings import MAX_SEQ_JUMP
from .validation import OpenRequest

_MOVES = {
    SessionState.OPENING: {SessionState.READY, SessionState.ERROR, SessionState.CLOSED},
    SessionState.READY: {SessionState.ERROR, SessionState.CLOSED},
    SessionState.ERROR: {SessionState.CLOSED},
    SessionState.CLOSED: set(),
}


@dataclass
class SessionStats:
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0  # pushed out of the newest-wins buffer before rendering
    rejected: int = 0  # wrong layout for this generator (e.g. expression size)
    render_ns: int = 0  # total time spent in step()
    last_render_ns: int = 0

    def as_dict(self) -> dict[str, int]:
        d = dict(vars(self))
        d["mean_render_ms"] = round(self.render_ns / max(1, self.frames_out) / 1e6, 3)
        return d


@dataclass
class WorkerStats:
    malformed: int = 0  # could not be decoded (garbage, wrong version, NaN, bad layout)
    unknown_session: int = 0  # flame frames for a session that is not open
    ignored: int = 0  # message types the worker does not handle
    video_dropped: int = 0  # hand-off full: the socket loop fell behind
    opens: int = 0
    errors: int = 0


class FrameBuffer:
    """At most ``depth`` frames, newest wins: a push into a full buffer drops the oldest."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self._frames: collections.deque[FlameFrame] = collections.deque()

    def push(self, frame: FlameFrame) -> bool:
        """Add ``frame``; True when the oldest frame was dropped to make room."""
        dropped = len(self._frames) >= self.depth
        if dropped:
            self._frames.popleft()
        self._frames.append(frame)
        return dropped

    def take(self) -> list[FlameFrame]:
        frames = list(self._frames)
        self._frames.clear()
        return frames

    def keep(self, pred: Callable[[FlameFrame], bool]) -> None:
        self._frames = collections.deque(f for f in self._frames if pred(f))

    def clear(self) -> None:
        self._frames.clear()

    def __len__(self) -> int:
        return len(self._frames)


@dataclass(frozen=True)
class StatusReport:
    """A session.status to send, read under the table's lock."""

    session_id: str
    state: SessionState
    error: str | None = None
    code: RefusalCode | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def message(self) -> list[bytes]:
        return wire.session_status_message(self.session_id, self.state, error=self.error, code=self.code, **self.meta)


@dataclass(eq=False)
class Session:
    """One session. The table changes ``state``, ``pending``, ``stats`` and ``rendering``; the
    lifecycle thread sets ``gen`` and friends through ``SessionTable.activate``."""

    id: str
    request: OpenRequest
    pending: FrameBuffer
    state: SessionState = SessionState.OPENING
    error: str | None = None
    code: RefusalCode | None = None
    gen: GeneratorSession | None = None
    head: HeadSpace | None = None
    batcher: Any = None  # the Generator, when it renders several of its sessions in one call
    view_ids: tuple[str, ...] = ()
    stats: SessionStats = field(default_factory=SessionStats)
    rendering: bool = False  # the render thread is stepping it: closing waits for the step

    @property
    def generator(self) -> str:
        return self.request.generator

    @property
    def options(self) -> Any:
        return self.request.options

    last_seq: int | None = None  # the newest seq filed: a frame far beyond it is rejected

    def accepts(self, frame: FlameFrame) -> bool:
        return self.head is None or frame.expression.shape[0] == self.head.n_expression

    def in_window(self, frame: FlameFrame, max_jump: int) -> bool:
        """False for a seq that jumps absurdly ahead (a forged or corrupt frame must not move
        the session's clock, which would make every later frame look stale)."""
        return self.last_seq is None or frame.seq <= self.last_seq + max_jump

    def report(self, **extra: Any) -> StatusReport:
        if self.state is SessionState.ERROR:
            return StatusReport(self.id, self.state, self.error, self.code)
        if self.state is SessionState.READY:
            size = getattr(self.options, "size", None)
            meta = {"generator": self.generator, "view_ids": list(self.view_ids),
                    "size": [size, size] if size else None,
                    "head": self.head.to_wire() if self.head is not None else None}
            return StatusReport(self.id, self.state, meta={**meta, **extra})
        return StatusReport(self.id, self.state, meta=extra)


@dataclass(frozen=True)
class OpenOutcome:
    """What a session.open leads to: a session to build, an answer now, or (a repeated open
    still being built) neither."""

    build: Session | None = None
    answer: StatusReport | None = None


class SessionTable:
    """Sessions by id, their round-robin turns and the worker's counters, behind one lock."""

    def __init__(self, *, depth: int, max_sessions: int, on_retired: Callable[[Session], None],
                 max_seq_jump: int = MAX_SEQ_JUMP) -> None:
        self._lock = threading.Condition()
        self._sessions: dict[str, Session] = {}
        self._turns: collections.deque[str] = collections.deque()
        self._depth = depth
        self._max_sessions = max_sessions
        self._on_retired = on_retired
        self._max_seq_jump = max_seq_jump
        self._stopping = False
        self._counters = WorkerStats()

    # --- the socket loop ----------------------------------------------------------------

    def count(self, counter: str) -> int:
        """Add one to a ``WorkerStats`` counter; its new value."""
        with self._lock:
            value = getattr(self._counters, counter) + 1
            setattr(self._counters, counter, value)
            return value

    def file_frame(self, frame: FlameFrame) -> None:
        """Buffer a frame for its session, or count it as unknown or rejected."""
        with self._lock:
            session = self._sessions.get(frame.session_id)
            if session is None or session.state not in (SessionState.OPENING, SessionState.READY):
                self._counters.unknown_session += 1
            elif not session.accepts(frame) or not session.in_window(frame, self._max_seq_jump):
                session.stats.rejected += 1
            else:
                session.last_seq = max(frame.seq, session.last_seq or 0)
                session.stats.frames_in += 1
                session.stats.dropped += session.pending.push(frame)
                if session.state is SessionState.READY:
                    self._lock.notify_all()

    def open(self, session_id: str, request: OpenRequest) -> OpenOutcome:
        """A repeated open is answered with the current status; new settings replace the
        session; a full table refuses."""
        key = request.key  # hashes the portrait: not under the lock
        with self._lock:
            current = self._sessions.get(session_id)
            if current is not None and current.request.key == key:
                repeat = current.state is not SessionState.OPENING
                return OpenOutcome(answer=self._report(current) if repeat else None)
            if current is None and self._live() >= self._max_sessions:
                message = f"worker is full ({self._max_sessions} sessions): close a session or start another worker"
                return OpenOutcome(answer=self._refuse(session_id, message, RefusalCode.BUSY))
            self._remove(session_id)
            session = Session(session_id, request, FrameBuffer(self._depth))
            self._sessions[session_id] = session
            self._turns.append(session_id)
            self._counters.opens += 1
            return OpenOutcome(build=session)

    def refuse(self, session_id: str, message: str, code: RefusalCode) -> StatusReport:
        """An open that cannot be served: the session (if any) is closed, the error counted."""
        with self._lock:
            self._remove(session_id)
            return self._refuse(session_id, message, code)

    def close(self, session_id: str) -> StatusReport | None:
        """Close a session; its closing status (with its counters), or None if it is unknown."""
        with self._lock:
            session = self._remove(session_id)
            if session is None:
                return None
            return StatusReport(session_id, SessionState.CLOSED, meta={"stats": session.stats.as_dict()})

    # --- the lifecycle thread -----------------------------------------------------------

    def activate(self, session: Session, gen: GeneratorSession, head: HeadSpace,
                 view_ids: tuple[str, ...], batcher: Any = None) -> StatusReport | None:
        """An opening session is built: READY. None when it was closed or replaced meanwhile
        (the caller then closes ``gen``). ``batcher``: the generator, when it steps several
        sessions in one call (``Generator.step_sessions``)."""
        with self._lock:
            if not self._move(session, SessionState.READY):
                return None
            session.gen, session.head, session.view_ids, session.batcher = gen, head, view_ids, batcher
            session.pending.keep(session.accepts)
            self._lock.notify_all()
            return self._report(session)

    def fail(self, session: Session, message: str, code: RefusalCode) -> StatusReport | None:
        """An opening or ready session failed: ERROR (None when it was closed meanwhile)."""
        with self._lock:
            return self._fail(session, message, code)

    # --- the render thread --------------------------------------------------------------

    def next_batch(self) -> tuple[Session, list[FlameFrame]] | None:
        """Wait for the next ready session with frames, round-robin, and take all its frames.
        None once the table shuts down. Call ``finish`` or ``fail`` when the step is done."""
        group = self.next_group(1)
        return None if group is None else group[0]

    def next_group(self, max_sessions: int) -> list[tuple[Session, list[FlameFrame]]] | None:
        """Like ``next_batch``, and when that session's generator batches sessions, the other
        ready sessions of the same generator that have frames too (at most ``max_sessions``, in
        turn order), each with all its frames. Call ``finish`` or ``fail`` for each."""
        with self._lock:
            while not self._stopping:
                first = self._next_turn()
                if first is not None:
                    group = [first]
                    if first.batcher is not None:
                        group += [s for s in self._waiting() if s is not first and s.batcher is first.batcher]
                    group = group[:max(1, max_sessions)]
                    for s in group:
                        s.rendering = True
                    return [(s, s.pending.take()) for s in group]
                self._lock.wait()
            return None

    def finish(self, session: Session, elapsed_ns: int, frames_out: int) -> None:
        with self._lock:
            session.stats.render_ns += elapsed_ns
            session.stats.last_render_ns = elapsed_ns
            session.stats.frames_out += frames_out
            self._end_step(session)

    def step_failed(self, session: Session, message: str) -> StatusReport | None:
        with self._lock:
            self._end_step(session)
            return self._fail(session, message, RefusalCode.INTERNAL)

    # --- the whole worker ---------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The worker's counters and each session's state and counters."""
        with self._lock:
            sessions = {sid: {"state": s.state.value, **s.stats.as_dict()} for sid, s in self._sessions.items()}
            return {**vars(self._counters), "sessions": sessions}

    def shutdown(self) -> None:
        """Wake the render thread for good: ``next_batch`` returns None from now on."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()

    def drain(self) -> list[Session]:
        """Take every session out (at shutdown, once the other threads ended)."""
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
            self._turns.clear()
            return sessions

    # --- with the lock held -------------------------------------------------------------

    def _move(self, session: Session, state: SessionState) -> bool:
        if state not in _MOVES[session.state]:
            return False
        session.state = state
        if state in (SessionState.ERROR, SessionState.CLOSED):
            session.pending.clear()
        return True

    def _fail(self, session: Session, message: str, code: RefusalCode) -> StatusReport | None:
        if not self._move(session, SessionState.ERROR):
            return None
        session.error, session.code = message, code
        self._counters.errors += 1
        return self._report(session)

    def _report(self, session: Session) -> StatusReport:
        if session.state is SessionState.READY:
            return session.report(malformed=self._counters.malformed)
        return session.report()

    def _refuse(self, session_id: str, message: str, code: RefusalCode) -> StatusReport:
        self._counters.errors += 1
        return StatusReport(session_id, SessionState.ERROR, message, code)

    def _live(self) -> int:
        return sum(s.state in (SessionState.OPENING, SessionState.READY) for s in self._sessions.values())

    def _remove(self, session_id: str) -> Session | None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return None
        self._turns.remove(session_id)
        self._move(session, SessionState.CLOSED)
        if not session.rendering:
            self._on_retired(session)
        return session

    def _next_turn(self) -> Session | None:
        for _ in range(len(self._turns)):
            session = self._sessions[self._turns[0]]
            self._turns.rotate(-1)
            if session.state is SessionState.READY and session.pending:
                return session
        return None

    def _waiting(self) -> list[Session]:
        """Ready sessions with frames, in turn order (the turn order is not changed)."""
        sessions = (self._sessions[sid] for sid in self._turns)
        return [s for s in sessions if s.state is SessionState.READY and s.pending and not s.rendering]

    def _end_step(self, session: Session) -> None:
        session.rendering = False
        if session.state is SessionState.CLOSED:
            self._on_retired(session)

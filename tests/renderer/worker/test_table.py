"""The session table on its own: states, newest-wins buffers, round-robin turns, retirement."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from flamecast.plugins import FlameFrame, GeneratorOptions, HeadSpace
from flamecast.plugins import protocol as wire
from flamecast.plugins.protocol import RefusalCode, SessionState
from flamecast.renderer.worker import FrameBuffer, SessionTable
from flamecast.renderer.worker.validation import OpenRequest

N_EXPR = 16


def head(n_expr: int = N_EXPR) -> HeadSpace:
    return HeadSpace("test", n_expr)


def frame(sid: str, seq: int, n_expr: int = N_EXPR) -> FlameFrame:
    return FlameFrame(session_id=sid, seq=seq, capture_ns=seq, expression=np.zeros(n_expr, np.float32))


def request(size: int = 16, portrait: bytes | None = None) -> OpenRequest:
    return OpenRequest("fake", GeneratorOptions(size=size), portrait)


class Table:
    """A table and what it retired, in order."""

    def __init__(self, depth: int = 4, max_sessions: int = 8) -> None:
        self.retired: list = []
        self.table = SessionTable(depth=depth, max_sessions=max_sessions, on_retired=self.retired.append)

    def ready(self, sid: str, n_expr: int = N_EXPR, req: OpenRequest | None = None):
        session = self.table.open(sid, req or request()).build
        assert session is not None
        report = self.table.activate(session, object(), head(n_expr), ("front",))
        assert report is not None and report.state is SessionState.READY
        return session


def test_frame_buffer_newest_wins():
    buf = FrameBuffer(3)
    dropped = [buf.push(frame("s", seq)) for seq in range(5)]
    assert dropped == [False, False, False, True, True]
    assert [f.seq for f in buf.take()] == [2, 3, 4]
    assert len(buf) == 0


def test_a_full_session_buffer_drops_the_oldest_and_counts_it():
    t = Table(depth=2)
    t.ready("a")
    for seq in range(5):
        t.table.file_frame(frame("a", seq))
    session, frames = t.table.next_batch()
    assert [f.seq for f in frames] == [3, 4]
    stats = t.table.snapshot()["sessions"]["a"]
    assert stats["frames_in"] == 5 and stats["dropped"] == 3


def test_round_robin_gives_every_busy_session_a_turn():
    t = Table()
    for sid in ("a", "b", "c"):
        t.ready(sid)
    turns = []
    for _ in range(9):
        for sid in ("a", "b", "c"):  # every session always has frames waiting
            t.table.file_frame(frame(sid, len(turns)))
        session, _ = t.table.next_batch()
        turns.append(session.id)
        t.table.finish(session, 1000, 1)
    assert turns == ["a", "b", "c"] * 3


def test_a_flooding_session_does_not_starve_a_trickling_one():
    t = Table()
    t.ready("flood")
    t.ready("trickle")
    turns = []
    for seq in range(6):
        for k in range(4):
            t.table.file_frame(frame("flood", 4 * seq + k))
        if seq % 2 == 0:
            t.table.file_frame(frame("trickle", seq))
        session, frames = t.table.next_batch()
        turns.append((session.id, len(frames)))
        t.table.finish(session, 1000, len(frames))
    assert ("trickle", 1) in turns[:2]  # at most one flood turn ahead of it
    assert sum(1 for sid, _ in turns if sid == "trickle") == 3


def test_states_move_one_way():
    t = Table()
    opening = t.table.open("s", request()).build
    assert opening.state is SessionState.OPENING
    assert t.table.snapshot()["sessions"]["s"]["state"] == "opening"
    assert t.table.activate(opening, object(), head(), ("front",)).state is SessionState.READY
    assert t.table.activate(opening, object(), head(), ("front",)) is None  # READY -> READY: no
    report = t.table.fail(opening, "it broke", RefusalCode.INTERNAL)
    assert (report.state, report.error, report.code) == (SessionState.ERROR, "it broke", RefusalCode.INTERNAL)
    assert t.table.activate(opening, object(), head(), ("front",)) is None  # ERROR -> READY: no
    closed = t.table.close("s")
    assert closed.state is SessionState.CLOSED and opening.state is SessionState.CLOSED
    assert t.table.fail(opening, "late", RefusalCode.INTERNAL) is None  # CLOSED is final
    assert t.table.close("s") is None and "s" not in t.table.snapshot()["sessions"]


def test_frames_are_buffered_while_opening_and_filtered_by_the_head_once_ready():
    t = Table()
    session = t.table.open("s", request()).build
    t.table.file_frame(frame("s", 0, n_expr=N_EXPR))
    t.table.file_frame(frame("s", 1, n_expr=5))  # the head is not known yet: kept for now
    t.table.activate(session, object(), head(), ("front",))
    t.table.file_frame(frame("s", 2, n_expr=5))  # now known: rejected at once
    _, frames = t.table.next_batch()
    assert [f.seq for f in frames] == [0]
    assert t.table.snapshot()["sessions"]["s"]["rejected"] == 1


def test_frames_for_unknown_or_failed_sessions_are_counted():
    t = Table()
    session = t.ready("s")
    t.table.file_frame(frame("nobody", 0))
    t.table.fail(session, "broke", RefusalCode.INTERNAL)
    t.table.file_frame(frame("s", 1))
    snap = t.table.snapshot()
    assert snap["unknown_session"] == 2 and snap["sessions"]["s"]["frames_in"] == 0


def test_a_repeated_open_answers_the_current_status_and_new_settings_replace():
    t = Table()
    first = t.table.open("s", request(portrait=b"png"))
    assert first.build is not None and first.answer is None
    pending = t.table.open("s", request(portrait=b"png"))
    assert pending.build is None and pending.answer is None  # still opening: the answer follows
    t.table.activate(first.build, object(), head(), ("front", "left"))
    again = t.table.open("s", request(portrait=b"png"))
    assert again.build is None and again.answer.state is SessionState.READY
    assert again.answer.meta["view_ids"] == ["front", "left"] and again.answer.meta["size"] == [16, 16]
    replaced = t.table.open("s", request(size=24, portrait=b"png"))
    assert replaced.build is not first.build and first.build.state is SessionState.CLOSED
    assert t.retired == [first.build]
    assert t.table.snapshot()["opens"] == 2


def test_a_full_table_refuses_as_busy_until_a_session_closes():
    t = Table(max_sessions=1)
    t.ready("a")
    refused = t.table.open("b", request()).answer
    assert refused.state is SessionState.ERROR and refused.code is RefusalCode.BUSY
    assert "worker is full (1 sessions)" in refused.error
    t.table.close("a")
    assert t.table.open("b", request()).build is not None


def test_a_session_closed_while_rendering_is_retired_when_the_step_ends():
    t = Table()
    t.ready("s")
    t.table.file_frame(frame("s", 0))
    session, _ = t.table.next_batch()
    t.table.close("s")  # the socket loop closes it mid-step
    assert t.retired == []  # its generator session is still in use
    t.table.finish(session, 1000, 1)
    assert t.retired == [session]


def test_a_failed_step_reports_an_error_unless_the_session_was_closed():
    t = Table()
    for sid in ("a", "b"):
        t.ready(sid)
        t.table.file_frame(frame(sid, 0))
    a, _ = t.table.next_batch()
    report = t.table.step_failed(a, "bug")
    assert report.state is SessionState.ERROR and report.code is RefusalCode.INTERNAL
    b, _ = t.table.next_batch()
    t.table.close("b")
    assert t.table.step_failed(b, "bug") is None and t.retired[-1] is b


def test_next_batch_waits_for_frames_and_returns_none_on_shutdown():
    t = Table()
    t.ready("s")
    got = []
    worker = threading.Thread(target=lambda: got.append(t.table.next_batch()))
    worker.start()
    t.table.file_frame(frame("s", 7))
    worker.join(5)
    assert got and [f.seq for f in got[0][1]] == [7]
    t.table.finish(got[0][0], 1, 1)
    worker = threading.Thread(target=lambda: got.append(t.table.next_batch()))
    worker.start()
    t.table.shutdown()
    worker.join(5)
    assert not worker.is_alive() and got[-1] is None


@pytest.mark.parametrize("state", list(SessionState))
def test_status_messages_carry_the_enum_values(state):
    env = wire.unpack(wire.session_status_message("s", state, error="e", code=RefusalCode.BUSY))
    assert env.meta["state"] == state.value and env.meta["code"] == "busy"
    assert type(env.meta["state"]) is str


def test_the_protocol_doc_lists_every_state_and_refusal_code():
    text = (Path(__file__).resolve().parents[3] / "docs" / "protocol.md").read_text()
    section = text[text.index("## Session status"):text.index("## Limits")]
    for state in SessionState:
        assert f"`{state.value}`" in section, state
    for code in RefusalCode:
        assert f"| `{code.value}` |" in section, code


def test_sessions_of_a_batching_generator_are_taken_together():
    t = Table()
    gpu, other = object(), object()
    for sid, batcher in (("a", gpu), ("b", None), ("c", gpu), ("d", other)):
        session = t.table.open(sid, request()).build
        t.table.activate(session, object(), head(), ("front",), batcher)
        t.table.file_frame(frame(sid, 0))
    group = t.table.next_group(8)
    assert [(s.id, [f.seq for f in frames]) for s, frames in group] == [("a", [0]), ("c", [0])]
    assert [s.id for s, _ in t.table.next_group(8)] == ["b"]  # no batcher: alone
    assert [s.id for s, _ in t.table.next_group(8)] == ["d"]  # another generator: its own turn
    for s, _ in group:
        t.table.finish(s, 1000, 1)
    t.table.file_frame(frame("a", 1))
    t.table.file_frame(frame("c", 1))
    assert [s.id for s, _ in t.table.next_group(1)] == ["a"]  # at most max_sessions

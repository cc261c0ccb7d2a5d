"""The lifecycle thread on its own: it builds sessions, reports through the hand-off, and
closes what was retired, including a session closed while it was being built."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import zmq

from flamecast.plugins import Generator, GeneratorUnavailable, OptionsRefused, PortraitError, hookimpl
from flamecast.plugins import protocol as wire
from flamecast.plugins.manager import make_plugin_host
from flamecast.plugins.protocol import RefusalCode, SessionState
from flamecast.renderer.worker import SessionTable, WorkerSettings
from flamecast.renderer.worker.handoff import Handoff
from flamecast.renderer.worker.lifecycle import Jobs, Lifecycle
from flamecast.renderer.worker.validation import OpenRequest

from .helpers import TIMEOUT, FakeSession


class InstantGenerator(Generator):
    """Opens at once (no portrait work); ``during_open`` runs inside open_session."""

    name = "instant"
    during_open = None
    head_space = None  # a per-session head space to give the sessions it opens
    opened: list[FakeSession] = []

    def open_session(self, spec):
        if InstantGenerator.during_open is not None:
            InstantGenerator.during_open(spec.session_id)
        session = FakeSession(np.zeros(3, np.uint8), spec.options.size, ("front",))
        session.head_space = InstantGenerator.head_space
        InstantGenerator.opened.append(session)
        return session


class Plugin:
    @hookimpl
    def flamecast_register_generators(self, register):
        register(InstantGenerator)


@pytest.fixture
def parts():
    InstantGenerator.during_open, InstantGenerator.head_space, InstantGenerator.opened = None, None, []
    ctx = zmq.Context()
    handoff = Handoff(ctx)
    pull = handoff.bind_pull()
    jobs = Jobs()
    table = SessionTable(depth=4, max_sessions=4, on_retired=jobs.close)
    registry = make_plugin_host(extra_plugins=[("instant", Plugin())], load_entry_points=False).generators
    lifecycle = Lifecycle(WorkerSettings(), table, jobs, registry, handoff)
    thread = threading.Thread(target=lifecycle.run, daemon=True)
    thread.start()
    yield table, jobs, lifecycle, pull
    jobs.stop()
    thread.join(TIMEOUT)
    pull.close(linger=0)
    ctx.term()


def open_request(size: int = 16) -> OpenRequest:
    return OpenRequest("instant", InstantGenerator.Options(size=size), None)


def test_an_open_job_builds_the_session_and_reports_ready(parts):
    table, jobs, _, pull = parts
    session = table.open("s", open_request()).build
    jobs.open(session)
    assert pull.poll(int(TIMEOUT * 1000))
    env = wire.unpack(pull.recv_multipart())
    assert env.topic == "s" and env.meta["state"] == "ready" and env.meta["view_ids"] == ["front"]
    assert session.state is SessionState.READY and session.gen is InstantGenerator.opened[0]


def test_a_session_closed_while_being_built_is_closed_and_not_reported(parts):
    table, jobs, _, pull = parts
    InstantGenerator.during_open = lambda sid: table.close(sid) if sid == "s" else None  # the socket loop, meanwhile
    session = table.open("s", open_request()).build
    jobs.open(session)
    jobs.open(table.open("marker", open_request()).build)  # runs after the first job
    assert pull.poll(int(TIMEOUT * 1000))
    assert wire.unpack(pull.recv_multipart()).topic == "marker"  # nothing was sent for "s"
    assert InstantGenerator.opened[0].closed and session.state is SessionState.CLOSED


def test_closing_a_ready_session_closes_its_generator_session(parts):
    table, jobs, _, pull = parts
    jobs.open(table.open("s", open_request()).build)
    assert pull.poll(int(TIMEOUT * 1000)) and wire.unpack(pull.recv_multipart()).topic == "s"
    table.close("s")
    jobs.open(table.open("marker", open_request()).build)  # queued after the close job
    assert pull.poll(int(TIMEOUT * 1000)) and wire.unpack(pull.recv_multipart()).topic == "marker"
    assert InstantGenerator.opened[0].closed


@pytest.mark.parametrize("exc, code, text", [
    (PortraitError("no face found"), RefusalCode.PORTRAIT, "portrait: no face found"),
    (GeneratorUnavailable("weights missing"), RefusalCode.UNAVAILABLE, "cannot run here: weights missing"),
    (OptionsRefused("profile 'hq' was not compiled"), RefusalCode.OPTIONS, ": profile 'hq' was not compiled"),
    (ZeroDivisionError("a bug"), RefusalCode.INTERNAL, "failed to open the session: a bug"),
])
def test_a_failed_open_says_whose_fault_it_is(parts, exc, code, text):
    table, jobs, _, pull = parts

    def fail(_sid):
        raise exc

    InstantGenerator.during_open = fail
    session = table.open("s", open_request()).build
    jobs.open(session)
    assert pull.poll(int(TIMEOUT * 1000))
    env = wire.unpack(pull.recv_multipart())
    assert env.meta["state"] == "error" and env.meta["code"] == code.value and text in env.meta["error"]
    assert session.state is SessionState.ERROR and session.code is code


def test_close_all_closes_sessions_still_queued_for_closing():
    InstantGenerator.opened = []
    jobs = Jobs()
    table = SessionTable(depth=4, max_sessions=4, on_retired=jobs.close)
    lifecycle = Lifecycle(WorkerSettings(), table, jobs, registry=None, handoff=None)
    kept, retired = FakeSession(np.zeros(3, np.uint8), 8, ()), FakeSession(np.zeros(3, np.uint8), 8, ())
    for sid, gen in (("kept", kept), ("retired", retired)):
        session = table.open(sid, open_request()).build
        table.activate(session, gen, InstantGenerator().head, ("front",))
    table.close("retired")  # queued for a lifecycle thread that never runs
    jobs.stop()
    lifecycle.close_all(table.drain())
    assert kept.closed and retired.closed


def test_ready_reports_the_head_space_the_session_speaks(parts):
    from flamecast.plugins import HeadSpace

    table, jobs, _, pull = parts
    builtin = table.open("a", open_request()).build
    jobs.open(builtin)
    assert pull.poll(int(TIMEOUT * 1000))
    head = wire.unpack(pull.recv_multipart()).meta["head"]
    assert HeadSpace.from_wire(head) == InstantGenerator().head  # the generator's head by default
    flame = HeadSpace("flame2023", 100, None, has_eyelids=False)
    InstantGenerator.head_space = flame
    session = table.open("b", open_request()).build
    jobs.open(session)
    assert pull.poll(int(TIMEOUT * 1000))
    assert HeadSpace.from_wire(wire.unpack(pull.recv_multipart()).meta["head"]) == flame
    assert session.accepts(frame_with(100)) and not session.accepts(frame_with(16))


def frame_with(n_expression: int):
    from flamecast.plugins import FlameFrame

    return FlameFrame(session_id="b", seq=0, pose=np.zeros(15, np.float32),
                      expression=np.zeros(n_expression, np.float32))


class WarmGenerator(InstantGenerator):
    name = "warm"
    warmed = 0

    def warm_up(self) -> None:
        WarmGenerator.warmed += 1


class WarmPlugin:
    @hookimpl
    def flamecast_register_generators(self, register):
        register(WarmGenerator)


def warm_lifecycle(table: SessionTable, jobs: Jobs, freeze: bool, gc_timer=None) -> Lifecycle:
    """A lifecycle serving ``WarmGenerator``, run by hand (no thread, no hand-off)."""
    registry = make_plugin_host(extra_plugins=[("warm", WarmPlugin())], load_entry_points=False).generators
    return Lifecycle(WorkerSettings(gc_freeze=freeze), table, jobs, registry, handoff=None, gc_timer=gc_timer)


@pytest.mark.parametrize("freeze", [True, False])
def test_loading_freezes_the_heap_after_warm_up_when_set(freeze):
    import gc

    jobs = Jobs()
    lifecycle = warm_lifecycle(SessionTable(depth=4, max_sessions=4, on_retired=jobs.close), jobs, freeze)
    assert gc.get_freeze_count() == 0
    WarmGenerator.warmed = 0
    lifecycle._load("warm")
    assert WarmGenerator.warmed == 1
    assert (gc.get_freeze_count() > 0) is freeze


def test_a_generator_loaded_while_sessions_render_leaves_the_heap_unfrozen():
    """Freezing then would freeze those sessions' objects for good."""
    import gc

    jobs = Jobs()
    table = SessionTable(depth=4, max_sessions=4, on_retired=jobs.close)
    session = table.open("s", open_request()).build
    table.activate(session, FakeSession(np.zeros(3, np.uint8), 8, ()), InstantGenerator().head, ("front",))
    warm_lifecycle(table, jobs, freeze=True)._load("warm")
    assert gc.get_freeze_count() == 0


def test_the_pauses_counted_start_once_the_generator_is_ready():
    """A load's own collections (the freeze's among them) are not the serving's."""
    import gc

    from flamecast.renderer.worker.heap import CollectionTimer

    jobs = Jobs()
    timer = CollectionTimer().start()
    try:
        gc.collect()
        assert timer.summary()["gc_full_collections"] >= 1
        warm_lifecycle(SessionTable(depth=4, max_sessions=4, on_retired=jobs.close), jobs, True, timer)._load("warm")
        assert timer.summary()["gc_full_collections"] == 0  # the freeze collected, before the count started over
        gc.collect()
        assert timer.summary()["gc_full_collections"] >= 1
    finally:
        timer.stop()

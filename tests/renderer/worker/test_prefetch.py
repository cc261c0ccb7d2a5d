"""``GeneratorSession.prefetch``: the worker hands each frame to its session as it arrives, on
the socket thread, while the render thread may be busy with an earlier step; a prefetch that
fails is counted and the frame is still rendered."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from flamecast.plugins import hookimpl
from flamecast.plugins import protocol as wire
from flamecast.plugins.manager import make_plugin_host
from flamecast.renderer.worker import GeneratorWorker

from .helpers import FakeGenerator, FakePlugin, FakeSession, flame, local_settings


class SeeingSession(FakeSession):
    """Records which frames it was told of, on which thread, and which it was stepped with."""

    def __init__(self, broken: bool) -> None:
        super().__init__(np.full(3, 9, np.uint8), 16, ("front",))
        self.broken = broken
        self.seen: list[tuple[int, str]] = []
        self.stepped: list[int] = []

    def prefetch(self, frames):
        if self.broken:
            raise RuntimeError("prefetch bug")
        self.seen += [(f.seq, threading.current_thread().name) for f in frames]

    def step(self, frames):
        SeeingGenerator.gate.wait(5.0)  # a long step: frames keep arriving meanwhile
        self.stepped += [f.seq for f in frames]
        return super().step(frames)


class SeeingGenerator(FakeGenerator):
    name = "seeing"
    sessions: dict[str, SeeingSession] = {}
    gate = threading.Event()

    def open_session(self, spec):
        session = SeeingSession(broken=spec.session_id.startswith("broken"))
        SeeingGenerator.sessions[spec.session_id] = session
        return session


class Plugin:
    @hookimpl
    def flamecast_register_generators(self, register):
        register(SeeingGenerator)


@pytest.fixture
def worker():
    SeeingGenerator.sessions.clear()
    SeeingGenerator.gate.set()
    host = make_plugin_host(extra_plugins=[("fake", FakePlugin()), ("seeing", Plugin())], load_entry_points=False)
    w = GeneratorWorker(local_settings(backends=("fake", "seeing"), queue_depth=64), host=host)
    w.start()
    yield w
    SeeingGenerator.gate.set()
    w.stop()


def _video(client, sid: str, seq: int):
    return client.wait_for(lambda e: e.type == wire.VIDEO and e.topic == sid and e.seq == seq, resend=flame(sid, seq))


def test_frames_are_prefetched_as_they_arrive_while_a_step_runs(worker, client):
    assert client.open("a", generator="seeing", size=16).meta["state"] == "ready"
    session = SeeingGenerator.sessions["a"]
    _video(client, "a", 0)
    SeeingGenerator.gate.clear()  # the next step blocks until the gate opens
    client.send(flame("a", 1))
    for seq in range(2, 6):
        client.send(flame("a", seq))
    pause = threading.Event()
    for _ in range(100):  # frames 2..5 arrive while the render thread is held in a step
        if {s for s, _ in session.seen} >= {2, 3, 4, 5}:
            break
        pause.wait(0.1)
    assert {s for s, _ in session.seen} >= {1, 2, 3, 4, 5}
    assert not {2, 3, 4, 5} & set(session.stepped)  # told of before being stepped
    assert all("render" not in name for _, name in session.seen)  # on the socket thread
    SeeingGenerator.gate.set()
    _video(client, "a", 5)
    assert {2, 3, 4, 5} <= set(session.stepped)


def test_a_failing_prefetch_is_counted_and_the_frame_still_rendered(worker, client):
    assert client.open("broken", generator="seeing", size=16).meta["state"] == "ready"
    for seq in range(3):
        assert _video(client, "broken", seq).seq == seq
    assert worker.stats()["prefetch_failed"] >= 3
    assert SeeingGenerator.sessions["broken"].stepped[:1] == [0]

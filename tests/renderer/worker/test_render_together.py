"""A generator that renders several sessions in one call (``Generator.step_sessions``) gets the
ready sessions together; each session gets its own frames back, and a failure of the shared
call fails those sessions with the reason while the worker and other sessions go on."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from flamecast.plugins import hookimpl
from flamecast.plugins import protocol as wire
from flamecast.plugins.manager import make_plugin_host
from flamecast.renderer.worker import GeneratorWorker

from .helpers import FakeGenerator, FakePlugin, FakeSession, flame, local_settings


class TogetherGenerator(FakeGenerator):
    """Steps every session it is handed in one call, and keeps the group sizes."""

    name = "together"
    groups: list[int] = []
    broken = threading.Event()
    gate = threading.Event()

    def open_session(self, spec):
        return FakeSession(np.full(3, 7, np.uint8), spec.options.size, ("front",))

    def step_sessions(self, work):
        TogetherGenerator.gate.wait(5.0)  # frames of several sessions pile up meanwhile
        if TogetherGenerator.broken.is_set():
            raise RuntimeError("the batched model call failed")
        TogetherGenerator.groups.append(len(work))
        return [session.step(frames) for session, frames in work]


class Plugin:
    @hookimpl
    def flamecast_register_generators(self, register):
        register(TogetherGenerator)


@pytest.fixture
def worker():
    TogetherGenerator.groups.clear()
    TogetherGenerator.broken.clear()
    TogetherGenerator.gate.set()
    host = make_plugin_host(extra_plugins=[("fake", FakePlugin()), ("together", Plugin())], load_entry_points=False)
    w = GeneratorWorker(local_settings(backends=("fake", "together")), host=host)
    w.start()
    yield w
    TogetherGenerator.gate.set()
    w.stop()


def _videos(client, sids, n):
    got = {sid: set() for sid in sids}
    seq = 0
    while min(len(v) for v in got.values()) < n:
        for sid in sids:
            client.send(flame(sid, seq))
        seq += 1
        env = client.wait_for(lambda e: e.type == wire.VIDEO or e.type == wire.SESSION_STATUS and e.meta.get("state") == "error")
        assert env.type == wire.VIDEO, env.meta
        got[env.topic].add(env.seq)
    return got


def test_ready_sessions_are_rendered_in_one_call(worker, client):
    assert TogetherGenerator.batches_sessions() and not FakeGenerator.batches_sessions()
    for sid in ("a", "b", "c"):
        assert client.open(sid, generator="together", size=16).meta["state"] == "ready"
    TogetherGenerator.gate.clear()
    threading.Timer(0.3, TogetherGenerator.gate.set).start()
    got = _videos(client, ("a", "b", "c"), 5)
    assert max(TogetherGenerator.groups) >= 2  # sessions went through the model together
    assert all(len(v) >= 5 for v in got.values())


def test_a_failed_shared_call_fails_its_sessions_with_the_reason(worker, client):
    for sid in ("a", "b"):
        assert client.open(sid, generator="together", size=16).meta["state"] == "ready"
    assert client.open("alone", generator="fake", size=16).meta["state"] == "ready"
    TogetherGenerator.broken.set()
    failed = set()
    for seq in range(100):
        for sid in ("a", "b", "alone"):
            client.send(flame(sid, seq))
        while (env := client.recv(0.02)) is not None:
            if env.type == wire.SESSION_STATUS and env.meta.get("state") == "error":
                assert "the batched model call failed" in env.meta["error"]
                failed.add(env.topic)
        if failed == {"a", "b"}:
            break
    assert failed == {"a", "b"}
    frames = client.wait_for(lambda e: e.type == wire.VIDEO and e.topic == "alone", resend=flame("alone", 10_000))
    assert frames.topic == "alone"

"""The worker under hostile input and faults: no message, session or generator can stop it, and
with CURVE keys nobody but the key holder can see or drive a session."""

from __future__ import annotations

import time

import msgpack
import numpy as np
import pytest

from flamecast.plugins import Generator, GeneratorSession, RenderedFrame, hookimpl
from flamecast.plugins import protocol as wire
from flamecast.plugins.manager import make_plugin_host
from flamecast.plugins.publish import load_keys, make_key_folder
from flamecast.renderer.worker import GeneratorWorker

from .helpers import Client, flame, local_settings, video_frames, wait_stats


class FlatSession(GeneratorSession):
    def __init__(self, size: int, views: tuple[str, ...]) -> None:
        self.size, self.view_ids = size, views

    def step(self, frames):
        return [RenderedFrame(f, np.full((len(self.view_ids), self.size, self.size, 3), f.seq % 256, np.uint8),
                              self.view_ids) for f in frames]


class FlatGenerator(Generator):
    name = "flat"

    def open_session(self, spec):
        return FlatSession(spec.options.size, tuple(spec.options.views or ("front",)))


class HugeSession(FlatSession):
    def step(self, frames):  # ignores its size: 24 views of 1024^2, more than one message may carry
        return [RenderedFrame(f, np.zeros((24, 1024, 1024, 3), np.uint8), tuple(f"v{i}" for i in range(24)))
                for f in frames[-1:]]


class HugeGenerator(FlatGenerator):
    name = "huge"

    def open_session(self, spec):
        return HugeSession(8, ("front",))


class Plugin:
    @hookimpl
    def flamecast_register_generators(self, register):
        register(FlatGenerator)
        register(HugeGenerator)


def host():
    return make_plugin_host(extra_plugins=[("rel", Plugin())], load_entry_points=False)


@pytest.fixture(scope="module")
def worker():
    w = GeneratorWorker(local_settings(default_backend="flat", heartbeat_s=0.1), host=host())
    w.start()
    yield w
    w.stop()


def _flat(c: Client, sid: str, **options) -> wire.Envelope:
    return c.open(sid, generator="flat", **{"size": 8, **options})


def test_a_buffer_numpy_cannot_shape_is_dropped_and_counted(worker, client):
    assert _flat(client, "before-bad").meta["state"] == "ready"  # connected: nothing sent now is lost
    before = worker.stats()["malformed"]
    header = msgpack.packb({"v": 1, "type": "flame", "buffers": [{"name": "pose", "dtype": "<f4", "shape": [0, 2**63]}]})
    client.send([b"x", header, b""])
    header = msgpack.packb({"v": 1, "type": "flame", "seq": 2**64 - 1})
    client.send([b"x", header])
    wait_stats(worker, lambda s: s["malformed"] >= before + 2)
    assert _flat(client, "after-bad").meta["state"] == "ready", "the worker still serves"


def test_views_that_cannot_fit_a_message_are_refused_at_open(client):
    status = client.open("too-many", generator="flat", size=8, views=[f"v{i}" for i in range(17)])
    assert status.meta["state"] == "error" and status.meta["code"] == "options"
    assert "at most 16 views" in status.meta["error"]
    status = client.open("too-big", generator="flat", size=2048, views=[f"v{i}" for i in range(16)])
    assert status.meta["code"] == "options" and "ask for fewer views or a smaller size" in status.meta["error"]
    status = client.open("long-id", generator="flat", size=8, views=["left" + "9" * 400])
    assert status.meta["code"] == "options" and "is not an id" in status.meta["error"]


def test_a_frame_the_wire_refuses_fails_only_its_session(worker, client):
    good = "good-1"
    assert _flat(client, good).meta["state"] == "ready"
    assert client.open("huge-1", generator="huge", size=8).meta["state"] == "ready"
    failed = client.wait_for(lambda e: e.topic == "huge-1" and e.meta.get("state") == "error", resend=flame("huge-1", 0))
    assert failed.meta["code"] == "internal" and "larger than" in failed.meta["error"]
    assert len(video_frames(client, good, 3, lambda seq: client.send(flame(good, seq)))) >= 3


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_dead_render_thread_is_restarted(worker, client):
    table = worker.table
    real = table.next_group
    calls = {"n": 0}

    def dies_once(max_sessions):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("render thread killed")
        return real(max_sessions)

    restarts = worker.thread_restarts
    table.next_group = dies_once
    try:
        with table._lock:
            table._lock.notify_all()  # wake the render thread so it calls next_group again
        assert _flat(client, "after-death").meta["state"] == "ready"
        assert len(video_frames(client, "after-death", 3, lambda seq: client.send(flame("after-death", seq)))) >= 3
    finally:
        table.next_group = real
    assert worker.thread_restarts == restarts + 1
    beat = client.wait_for(lambda e: e.type == wire.WORKER_STATUS)
    assert beat.meta["threads"] == {"lifecycle": True, "render": True} and beat.meta["thread_restarts"] >= 1
    assert beat.meta["instance"] == worker.instance


def test_an_absurd_seq_cannot_move_the_clock(worker, client):
    sid = "clock"
    assert _flat(client, sid).meta["state"] == "ready"
    video_frames(client, sid, 2, lambda seq: client.send(flame(sid, seq)))
    client.send(flame(sid, 2**62))
    wait_stats(worker, lambda s: s["sessions"][sid]["rejected"] >= 1)
    client.received.clear()
    got = video_frames(client, sid, 3, lambda seq: client.send(flame(sid, 100 + seq)))
    assert max(v.seq for v in got) < 2**20


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return make_key_folder(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def secure_worker(keys):
    w = GeneratorWorker(local_settings(default_backend="flat", heartbeat_s=0.1, keys=load_keys(keys, "worker")),
                        host=host())
    w.start()
    yield w
    w.stop()


def _stranger_keys(keys):
    other = make_key_folder(keys.parent / "stranger")
    server = load_keys(other, "server")
    return type(server)(server.public, server.secret, peer=load_keys(keys, "server").peer)


def test_curve_admits_the_server_only(secure_worker, keys):
    owner = Client(secure_worker.endpoints, keys=load_keys(keys, "server"))
    try:
        assert _flat(owner, "secret-session").meta["state"] == "ready"
        for intruder_keys in (None, _stranger_keys(keys)):  # plain text, then a CURVE key the worker does not know
            intruder = Client(secure_worker.endpoints, keys=intruder_keys)
            try:
                deadline = time.monotonic() + 1.5
                while time.monotonic() < deadline:  # try to close it, open one, and listen
                    intruder.send(wire.session_close_message("secret-session"))
                    intruder.send(wire.session_open_message("mine", generator="flat", options={"size": 8}, portrait=None))
                    assert intruder.recv(0.1) is None, "an unauthenticated peer heard the worker"
            finally:
                intruder.close()
        assert "mine" not in secure_worker.stats()["sessions"]
        assert len(video_frames(owner, "secret-session", 2, lambda s: owner.send(flame("secret-session", s)))) >= 2
    finally:
        owner.close()

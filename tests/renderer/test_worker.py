"""The generator worker over real ZeroMQ sockets on loopback (port 0).

Most tests use a small fake generator that still decodes portraits with the real
``renderer.portrait`` (so bad-portrait messages are the real ones) but renders a flat colour
per portrait and frame; ``test_mesh_*`` run the real ``mesh`` generator.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zmq

from flamecast.plugins import FlameFrame, Generator, GeneratorSession, GeneratorUnavailable, RenderedFrame, hookimpl
from flamecast.plugins import protocol as wire
from flamecast.plugins.manager import make_plugin_host
from flamecast.renderer.portrait import default_portrait_image, encode_png, load_portrait
from flamecast.renderer.worker import GeneratorWorker, WorkerSettings

TIMEOUT = 20.0
FLAMECAST = [sys.executable, "-m", "flamecast.cli"]
N_EXPR = 16


class FakeSession(GeneratorSession):
    def __init__(self, tone: np.ndarray, size: int, views: tuple[str, ...]) -> None:
        self.tone, self.size, self.view_ids = tone, size, views
        self.closed = False

    def step(self, frames):
        out = []
        for f in frames:
            img = np.empty((len(self.view_ids), self.size, self.size, 3), np.uint8)
            img[...] = self.tone
            img[:, 0, 0, 0] = f.seq % 256
            out.append(RenderedFrame(f, img, self.view_ids))
        return out

    def close(self):
        self.closed = True


class FakeGenerator(Generator):
    name = "fake"
    description = "flat colour from the portrait (tests)"

    def open_session(self, spec):
        portrait = load_portrait(spec.portrait)
        x0, y0 = portrait.landmarks[:, :2].min(0).astype(int)
        x1, y1 = portrait.landmarks[:, :2].max(0).astype(int)
        tone = portrait.image[y0:y1, x0:x1].reshape(-1, 3).mean(0).astype(np.uint8)
        return FakeSession(tone, spec.options.size, spec.options.views or ("front", "left"))


class SlowSession(FakeSession):
    def step(self, frames):
        time.sleep(0.05)  # slower than frames arrive: the buffer must stay bounded
        return super().step(frames)


class SlowGenerator(FakeGenerator):
    name = "slow"

    def open_session(self, spec):
        return SlowSession(np.zeros(3, np.uint8), spec.options.size, ("front",))


class NoWeightsGenerator(FakeGenerator):
    name = "noweights"

    def open_session(self, spec):
        raise GeneratorUnavailable("weights missing: put unet/ in ~/.cache/flamecast/weights")


class BrokenGenerator(FakeGenerator):
    name = "broken"

    def open_session(self, spec):
        raise ZeroDivisionError("a bug")


class FakePlugin:
    @hookimpl
    def flamecast_register_generators(self, register):
        for cls in (FakeGenerator, SlowGenerator, NoWeightsGenerator, BrokenGenerator):
            register(cls)


def fake_host():
    return make_plugin_host(extra_plugins=[("fake", FakePlugin())], load_entry_points=False)


def local_settings(**kw) -> WorkerSettings:
    return WorkerSettings(input="tcp://127.0.0.1:0", output="tcp://127.0.0.1:0", default_backend="fake",
                          stats_interval_s=0, **kw)


class Client:
    """What the server does: a PUB into the worker's input, a SUB on its output."""

    def __init__(self, endpoints: dict[str, str]) -> None:
        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.connect(endpoints["input"])
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.SUBSCRIBE, b"")
        self.sub.connect(endpoints["output"])
        self.received: list[wire.Envelope] = []

    def send(self, frames) -> None:
        self.pub.send_multipart(frames)

    def recv(self, timeout: float) -> wire.Envelope | None:
        if not self.sub.poll(int(timeout * 1000)):
            return None
        env = wire.unpack(self.sub.recv_multipart())
        self.received.append(env)
        return env

    def wait_for(self, pred, timeout: float = TIMEOUT, resend=None) -> wire.Envelope:
        """Receive until ``pred(env)``; ``resend`` is sent again every 0.2 s (slow joiner)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if resend is not None:
                self.send(resend)
            env = self.recv(0.2)
            if env is not None and pred(env):
                return env
        raise AssertionError(f"timed out; received {[(e.topic, e.type, dict(e.meta)) for e in self.received][-5:]}")

    def open(self, sid: str, portrait: bytes | None = None, generator: str = "fake", **options) -> wire.Envelope:
        msg = wire.session_open_message(sid, generator=generator, options=options, portrait=portrait)
        return self.wait_for(lambda e: e.topic == sid and e.type == wire.SESSION_STATUS, resend=msg)

    def close(self) -> None:
        self.pub.close(linger=0)
        self.sub.close(linger=0)
        self.ctx.term()


def flame(sid: str, seq: int, n_expr: int = N_EXPR, yaw: float = 0.0) -> list[bytes]:
    pose = np.zeros(15, np.float32)
    pose[1] = yaw
    return wire.flame_message(FlameFrame(session_id=sid, seq=seq, capture_ns=1000 + seq, pose=pose,
                                         expression=np.zeros(n_expr, np.float32)))


@pytest.fixture(scope="module")
def worker():
    w = GeneratorWorker(local_settings(), host=fake_host())
    w.start()
    yield w
    w.stop()


@pytest.fixture
def client(worker):
    c = Client(worker.endpoints)
    yield c
    c.close()


def camera_portrait() -> bytes:
    from skimage import data

    return encode_png(np.stack([data.camera()] * 3, -1))


def two_faces_portrait() -> bytes:
    crop = default_portrait_image()[0:300, 80:380]
    return encode_png(np.concatenate([crop, crop], axis=1))


def no_face_portrait() -> bytes:
    from skimage import data

    return encode_png(data.chelsea())  # a cat


def wait_stats(worker, pred, timeout: float = TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = worker.stats()
        if pred(snap):
            return snap
        time.sleep(0.02)
    raise AssertionError(f"stats never matched: {worker.stats()}")


def video_frames(client: Client, sid: str, n: int, send) -> list[wire.VideoFrame]:
    """Send frames with ``send(seq)`` until n video frames of ``sid`` arrived."""
    got, seq = [], 0
    deadline = time.monotonic() + TIMEOUT
    while len(got) < n and time.monotonic() < deadline:
        send(seq)
        seq += 1
        env = client.recv(0.05)
        while env is not None:
            if env.type == wire.VIDEO and env.topic == sid:
                got.append(wire.video_from_envelope(env))
            env = client.recv(0)
    assert len(got) >= n, f"only {len(got)} video frames for {sid}"
    return got


def test_ready_carries_views_and_size(client):
    status = client.open("s-ready", size=32, views=["front", "left30", "right30"])
    assert status.meta["state"] == "ready", status.meta
    assert status.meta["view_ids"] == ["front", "left30", "right30"]
    assert status.meta["size"] == [32, 32]


def test_two_sessions_no_cross_talk(worker, client):
    a, b = "sess-a", "sess-b"
    assert client.open(a, None, size=16).meta["state"] == "ready"
    assert client.open(b, camera_portrait(), size=16).meta["state"] == "ready"
    client.received.clear()
    video_frames(client, a, 3, lambda seq: (client.send(flame(a, seq)), client.send(flame(b, seq))))
    video_frames(client, b, 3, lambda seq: (client.send(flame(a, 1000 + seq)), client.send(flame(b, 1000 + seq))))
    videos = [wire.video_from_envelope(e) for e in client.received if e.type == wire.VIDEO]
    by_topic = {sid: [v for v in videos if v.session_id == sid] for sid in (a, b)}
    assert set(v.session_id for v in videos) == {a, b}
    # every frame on a topic was rendered from that session's portrait, never the other's
    tone = {sid: {tuple(v.views[0, 1, 1]) for v in vs} for sid, vs in by_topic.items()}
    assert len(tone[a]) == 1 and len(tone[b]) == 1 and tone[a] != tone[b]
    # each video frame carries its driving frame's seq and capture time
    for v in videos:
        assert v.capture_ns == 1000 + v.seq and v.views[0, 0, 0, 0] == v.seq % 256
    # a subscriber to one topic only ever sees that topic
    only_a = client.ctx.socket(zmq.SUB)
    only_a.setsockopt(zmq.SUBSCRIBE, a.encode())
    only_a.connect(worker.endpoints["output"])
    seen, deadline, seq = [], time.monotonic() + TIMEOUT, 5000
    while len(seen) < 3 and time.monotonic() < deadline:
        client.send(flame(b, seq))
        client.send(flame(a, seq))
        seq += 1
        if only_a.poll(50):
            seen.append(wire.unpack(only_a.recv_multipart()).topic)
    only_a.close(linger=0)
    assert seen and set(seen) == {a}


def test_garbage_is_counted_and_worker_keeps_serving(worker, client):
    sid = "sess-garbage"
    assert client.open(sid, size=16).meta["state"] == "ready"
    before = worker.stats()["malformed"]
    client.send([b"x"])  # too few frames
    client.send([b"sess-garbage", b"\xff\x00garbage"])  # header not msgpack
    client.send([b"\xff\xfe", b"junk", b"more"])  # topic not UTF-8
    bad = flame(sid, 1)
    bad[2] = bad[2][:-4]  # truncated pose buffer
    client.send(bad)
    nan = flame(sid, 2)
    nan[3] = np.full(N_EXPR, np.nan, np.float32).tobytes()  # NaN expression
    client.send(nan)
    client.send(wire.pack("control", sid, meta={"kind": "x", "data": {}}))  # a type the worker ignores
    wait_stats(worker, lambda s: s["malformed"] >= before + 5 and s["ignored"] >= 1)
    assert video_frames(client, sid, 2, lambda seq: client.send(flame(sid, 10 + seq)))


def test_unknown_session_and_wrong_sizes_are_counted(worker, client):
    sid = "sess-sizes"
    assert client.open(sid, size=16).meta["state"] == "ready"
    unknown = worker.stats()["unknown_session"]
    for seq in range(3):
        client.send(flame("nobody-opened-this", seq))
        client.send(flame(sid, seq, n_expr=5))
    snap = wait_stats(worker, lambda s: s["unknown_session"] >= unknown + 3 and s["sessions"][sid]["rejected"] >= 3)
    assert snap["sessions"][sid]["frames_in"] == 0
    assert video_frames(client, sid, 1, lambda seq: client.send(flame(sid, 100 + seq)))


@pytest.mark.parametrize(
    "portrait, expected",
    [
        (b"definitely not an image", "not an image"),
        (no_face_portrait, "no face found"),
        (two_faces_portrait, "several faces found (2)"),
    ],
    ids=["not-an-image", "no-face", "two-faces"],
)
def test_bad_portrait_errors_that_session_only(worker, client, portrait, expected):
    good, bad = "sess-good-" + expected[:3], "sess-bad-" + expected[:3]
    assert client.open(good, size=16).meta["state"] == "ready"
    status = client.open(bad, portrait() if callable(portrait) else portrait, size=16)
    assert status.meta["state"] == "error"
    assert expected in status.meta["error"], status.meta["error"]
    assert video_frames(client, good, 2, lambda seq: (client.send(flame(good, seq)), client.send(flame(bad, seq))))
    assert not any(e.type == wire.VIDEO and e.topic == bad for e in client.received)


def test_bad_options_and_unknown_generator_say_what_to_fix(client):
    status = client.open("sess-opts", size="huge")
    assert status.meta["state"] == "error" and "'size'" in status.meta["error"]
    status = client.open("sess-gen", generator="nope")
    assert status.meta["state"] == "error" and "unknown generator 'nope'" in status.meta["error"]
    assert "fake" in status.meta["error"]


@pytest.mark.parametrize(
    "generator, options, code",
    [("fake", {"size": "huge"}, "options"), ("nope", {}, "options"), ("noweights", {}, "unavailable"),
     ("broken", {}, "internal")],
)
def test_refusals_say_whose_fault_it_is(client, generator, options, code):
    status = client.open(f"sess-code-{generator}-{code}", generator=generator, **options)
    assert status.meta["state"] == "error" and status.meta["code"] == code, status.meta


def test_a_bad_portrait_is_the_clients_fault(client):
    status = client.open("sess-code-portrait", b"not an image", size=16)
    assert status.meta["code"] == "portrait"


def test_open_twice_is_idempotent_and_new_settings_reopen(worker, client):
    sid = "sess-twice"
    first = client.open(sid, size=16)
    assert first.meta["state"] == "ready"
    opens = worker.stats()["opens"]
    again = client.open(sid, size=16)  # same settings: "ready" again, nothing rebuilt
    assert again.meta["state"] == "ready" and worker.stats()["opens"] == opens
    reopened = client.open(sid, size=24, views=["front"])  # new settings: reopened
    assert reopened.meta["state"] == "ready" and reopened.meta["size"] == [24, 24]
    assert worker.stats()["opens"] == opens + 1
    v = video_frames(client, sid, 1, lambda seq: client.send(flame(sid, seq)))[-1]
    assert v.views.shape == (1, 24, 24, 3) and v.view_ids == ("front",)


def test_close_sends_closed_and_later_frames_are_unknown(worker, client):
    sid = "sess-close"
    assert client.open(sid, size=16).meta["state"] == "ready"
    status = client.wait_for(lambda e: e.topic == sid and e.meta.get("state") == "closed",
                             resend=wire.session_close_message(sid, "deleted"))
    assert status.meta["stats"]["frames_in"] == 0
    unknown = worker.stats()["unknown_session"]
    client.send(flame(sid, 1))
    wait_stats(worker, lambda s: s["unknown_session"] > unknown and sid not in s["sessions"])


def test_slow_session_drops_oldest_and_buffer_stays_bounded(client, worker):
    sid = "sess-burst"
    assert client.open(sid, generator="slow", size=16).meta["state"] == "ready"
    for seq in range(200):  # far more than the buffer holds, faster than rendering
        client.send(flame(sid, seq))
    # every frame is either rendered or dropped as stale; with a slow generator most are dropped
    snap = wait_stats(worker, lambda s: s["sessions"][sid]["frames_out"] + s["sessions"][sid]["dropped"] == 200)
    s = snap["sessions"][sid]
    assert s["frames_in"] == 200 and s["dropped"] > 100
    # the newest frame always gets through
    client.wait_for(lambda e: e.type == wire.VIDEO and e.topic == sid and e.seq == 199)


def test_quiet_session_costs_nothing_and_a_slow_one_does_not_starve_others(worker, client):
    quiet, slow, fast = "sess-quiet", "sess-slow", "sess-fast"
    assert client.open(quiet, size=16).meta["state"] == "ready"
    assert client.open(slow, generator="slow", size=16).meta["state"] == "ready"
    assert client.open(fast, size=16).meta["state"] == "ready"
    video_frames(client, quiet, 1, lambda seq: client.send(flame(quiet, seq)))  # then it goes quiet
    out_before = worker.stats()["sessions"][quiet]["frames_out"]
    client.received.clear()

    def flood(seq):  # the slow session gets 4 frames per fast frame, all the time
        for k in range(4):
            client.send(flame(slow, 4 * seq + k))
        client.send(flame(fast, seq))

    got = video_frames(client, fast, 10, flood)
    # round-robin: the fast session waits at most one slow step (50 ms) per turn
    assert len(got) >= 10
    snap = worker.stats()["sessions"]
    assert snap[slow]["frames_out"] > 0 and snap[fast]["dropped"] <= snap[fast]["frames_in"] // 2
    assert snap[quiet]["frames_out"] == out_before  # nothing rendered while quiet
    assert not any(e.topic == quiet for e in client.received)


def test_full_worker_refuses_more_sessions_until_one_closes():
    with GeneratorWorker(local_settings(max_sessions=1), host=fake_host()) as w:
        c = Client(w.endpoints)
        try:
            assert c.open("first", size=16).meta["state"] == "ready"
            status = c.open("second", size=16)
            assert status.meta["state"] == "error" and "worker is full (1 sessions)" in status.meta["error"]
            c.wait_for(lambda e: e.topic == "first" and e.meta.get("state") == "closed",
                       resend=wire.session_close_message("first"))
            assert c.open("second", size=16).meta["state"] == "ready"
        finally:
            c.close()


def test_ready_file_and_cli_signal(tmp_path):
    ready = tmp_path / "worker.json"
    env = {**os.environ, "FLAMECAST_PLUGINS_ALLOW": "none"}
    proc = subprocess.Popen(
        [*FLAMECAST, "generator", "--input", "tcp://127.0.0.1:0",
         "--output", "tcp://127.0.0.1:0", "--ready-file", str(ready)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while not ready.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        info = json.loads(ready.read_text())
        assert info["pid"] == proc.pid
        assert info["input"].startswith("tcp://127.0.0.1:") and not info["input"].endswith(":0")
        c = Client(info)
        try:  # no backends registered: a clear error, and the process keeps serving
            status = c.open("s", generator="mesh")
            assert "unknown generator 'mesh'" in status.meta["error"]
        finally:
            c.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_rejects_unknown_backend():
    proc = subprocess.run(
        [*FLAMECAST, "generator", "--backend", "nope",
         "--input", "tcp://127.0.0.1:0", "--output", "tcp://127.0.0.1:0"],
        capture_output=True, text=True, timeout=TIMEOUT,
    )
    assert proc.returncode == 2 and "unknown --backend nope" in proc.stderr


def test_generator_flags_reach_every_generator():
    from flamecast.cli import build_parser
    from flamecast.cli.generator import settings_from_args

    args = build_parser().parse_args(["generator", "--weights-dir", "/w", "--allow-random-weights", "--compile", "reduce-overhead"])
    extra = settings_from_args(args).generator_settings
    assert extra == {"weights_dir": "/w", "allow_random_weights": True, "compile": "reduce-overhead"}
    assert settings_from_args(build_parser().parse_args(["generator"])).generator_settings == {}


# --- the real mesh generator behind the worker --------------------------------------------

MESH_OPTIONS = {"size": 48, "texture_size": 128, "fit_iterations": 30, "views": ["front", "left30"]}


@pytest.fixture(scope="module")
def mesh_worker():
    import torch

    threads = torch.get_num_threads()
    w = GeneratorWorker(WorkerSettings(input="tcp://127.0.0.1:0", output="tcp://127.0.0.1:0", backends=("mesh",),
                                       stats_interval_s=0, threads=1))
    w.start()
    yield w
    w.stop()
    torch.set_num_threads(threads)


def test_mesh_two_portraits_no_cross_talk(mesh_worker):
    c = Client(mesh_worker.endpoints)
    try:
        a, b = "mesh-astronaut", "mesh-cameraman"
        assert c.open(a, None, generator="mesh", **MESH_OPTIONS).meta["state"] == "ready"
        status = c.open(b, camera_portrait(), generator="mesh", **MESH_OPTIONS)
        assert status.meta["state"] == "ready" and status.meta["view_ids"] == ["front", "left30"]
        c.received.clear()
        send_both = lambda seq: (c.send(flame(a, seq)), c.send(flame(b, seq)))  # noqa: E731
        got_a = video_frames(c, a, 2, send_both)
        got_b = [wire.video_from_envelope(e) for e in c.received if e.type == wire.VIDEO and e.topic == b]
        got_b += video_frames(c, b, 2, lambda seq: send_both(100 + seq))
        assert all(v.views.shape == (2, 48, 48, 3) for v in got_a + got_b)
        # the same pose, two portraits: two different faces, each always on its own topic
        same_a = {v.views.tobytes() for v in got_a}
        same_b = {v.views.tobytes() for v in got_b}
        assert not same_a & same_b
        assert np.abs(got_a[0].views.astype(int) - got_b[0].views.astype(int)).mean() > 5
        stats = mesh_worker.stats()["sessions"]
        assert stats[a]["frames_out"] >= 2 and stats[b]["frames_out"] >= 2
    finally:
        c.close()


def test_mesh_bad_portrait_keeps_the_worker_serving(mesh_worker):
    c = Client(mesh_worker.endpoints)
    try:
        status = c.open("mesh-two-faces", two_faces_portrait(), generator="mesh", **MESH_OPTIONS)
        assert status.meta["state"] == "error"
        assert status.meta["error"].startswith("portrait: several faces found (2)")
        assert c.open("mesh-fine", None, generator="mesh", **MESH_OPTIONS).meta["state"] == "ready"
        assert video_frames(c, "mesh-fine", 1, lambda seq: c.send(flame("mesh-fine", seq)))
    finally:
        c.close()

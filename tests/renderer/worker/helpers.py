"""What the worker's tests share: fake generators, a client that speaks to a worker as the
server does, and flame frames.

The fake generator still decodes portraits with the real ``renderer.portrait`` (so bad-portrait
messages are the real ones) but renders a flat colour per portrait and frame.
"""

from __future__ import annotations

import time

import numpy as np
import zmq

from flamecast.plugins import FlameFrame, Generator, GeneratorSession, GeneratorUnavailable, RenderedFrame, hookimpl
from flamecast.plugins import protocol as wire
from flamecast.plugins.manager import make_plugin_host
from flamecast.renderer.portrait import default_portrait_image, encode_png, load_portrait
from flamecast.renderer.worker import WorkerSettings

TIMEOUT = 20.0
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
    return WorkerSettings(**{"input": "tcp://127.0.0.1:0", "output": "tcp://127.0.0.1:0", "default_backend": "fake",
                             "stats_interval_s": 0, **kw})


class Client:
    """What the server does: a PUB into the worker's input, a SUB on its output."""

    def __init__(self, endpoints: dict[str, str], keys=None) -> None:
        from flamecast.plugins.publish import secure_client

        self.ctx = zmq.Context()
        self.pub = self.ctx.socket(zmq.PUB)
        secure_client(self.pub, keys)
        self.pub.connect(endpoints["input"])
        self.sub = self.ctx.socket(zmq.SUB)
        secure_client(self.sub, keys)
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

    def open(self, sid: str, portrait: bytes | None = None, generator: str = "fake", until=None,
             **options) -> wire.Envelope:
        """Send session.open until ``sid``'s status comes (and ``until(meta)`` holds). The open is
        sent again every 0.2 s, and each copy the worker gets is answered: statuses answering an
        earlier open of ``sid`` can still arrive, so an open with new settings names the status
        it waits for with ``until``."""
        msg = wire.session_open_message(sid, generator=generator, options=options, portrait=portrait)
        return self.wait_for(lambda e: e.topic == sid and e.type == wire.SESSION_STATUS
                             and (until is None or until(e.meta)), resend=msg)

    def close(self) -> None:
        self.pub.close(linger=0)
        self.sub.close(linger=0)
        self.ctx.term()


def flame(sid: str, seq: int, n_expr: int = N_EXPR, yaw: float = 0.0) -> list[bytes]:
    pose = np.zeros(15, np.float32)
    pose[1] = yaw
    return wire.flame_message(FlameFrame(session_id=sid, seq=seq, capture_ns=1000 + seq, pose=pose,
                                         expression=np.zeros(n_expr, np.float32)))


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

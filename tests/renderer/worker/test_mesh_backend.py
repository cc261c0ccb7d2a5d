"""The real ``mesh`` generator behind the worker: two portraits, a bad one."""

from __future__ import annotations

import numpy as np
import pytest

from flamecast.plugins import protocol as wire
from flamecast.renderer.worker import GeneratorWorker, WorkerSettings

from .helpers import Client, camera_portrait, flame, two_faces_portrait, video_frames


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
        # the generator's mattes travel with the views: the head covers the middle, not the corners
        assert all(v.mattes is not None and v.mattes.shape == (2, 48, 48) for v in got_a + got_b)
        assert got_a[0].mattes[0, 24, 24] > 200 and got_a[0].mattes[0, 0, 0] < 50
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

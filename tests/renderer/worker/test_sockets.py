"""The generator worker over real ZeroMQ sockets on loopback (port 0), with fake generators."""

from __future__ import annotations

import time

import numpy as np
import pytest
import zmq

from flamecast.plugins import protocol as wire
from flamecast.renderer.worker import GeneratorWorker

from .helpers import (
    N_EXPR, TIMEOUT, Client, camera_portrait, fake_host, flame, local_settings, no_face_portrait, two_faces_portrait,
    video_frames, wait_stats,
)


@pytest.fixture(scope="module")
def worker():
    w = GeneratorWorker(local_settings(), host=fake_host())
    w.start()
    yield w
    w.stop()


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
    client.send(wire.session_status_message(sid, "ready"))  # a type the worker does not take (it sends it)
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
    # new settings: reopened (the status for them, not one still answering the opens above)
    reopened = client.open(sid, size=24, views=["front"], until=lambda meta: meta.get("size") == [24, 24])
    assert reopened.meta["state"] == "ready" and reopened.meta["view_ids"] == ["front"]
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
    # one frame, then it goes quiet (one only: frames sent again while the first renders on a
    # busy machine would come out after the check below began)
    client.send(flame(quiet, 0))
    client.wait_for(lambda e: e.type == wire.VIDEO and e.topic == quiet)
    out_before = worker.stats()["sessions"][quiet]["frames_out"]
    assert out_before == 1
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


def test_stats_count_the_garbage_collections_since_start(worker):
    import gc

    full = worker.stats()["gc_full_collections"]
    gc.collect()
    stats = worker.stats()
    assert stats["gc_full_collections"] >= full + 1  # the worker's threads may have collected too
    assert stats["gc_longest_ms"] >= 0 and stats["gc_total_ms"] >= stats["gc_longest_ms"] - 0.1

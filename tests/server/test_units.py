"""Small pieces of the server, without sockets."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from flamecast.server.api_client import LatencyMatcher
from flamecast.server.media import mosaic, pts_for
from flamecast.server.portraits import NotAnImage, PortraitStore, PortraitTooLarge
from flamecast.server.sessions import put_newest
from flamecast.server.static import safe_file, client_root
from flamecast.server.stats import LatencyWindow, RateMeter

from .conftest import png


def test_latency_matcher_finds_the_offset_and_tolerates_a_tick_and_late_stamps():
    m = LatencyMatcher()
    offset, t0 = 123_456, 1_000_000_000_000
    sent = [(offset + i * 3600 + (i % 3), t0 + i * 40_000_000) for i in range(40)]
    for pts, cap in sent[:5]:
        m.on_sent(pts, cap)
    for i in range(5):  # decoded pts count from the first received frame
        m.on_decoded(sent[i][0] - offset, sent[i][1] + 50_000_000)
    assert m.offset == offset
    assert m.on_decoded(sent[4][0] - offset + 1, sent[4][1] + 60_000_000) == pytest.approx(60.0)  # one tick off
    assert m.on_decoded(sent[5][0] - offset, sent[5][1] + 70_000_000) is None  # its stamp is late...
    m.on_sent(*sent[5])
    assert m.samples[-1] == pytest.approx(70.0)  # ...and counted when it comes


def test_pts_and_mosaic():
    assert pts_for(1_000_000_000 + 40_000_000, 1_000_000_000) == 3600
    assert pts_for(5, 10) == 0
    views = np.stack([np.full((4, 6, 3), i, np.uint8) for i in range(3)])
    grid = mosaic(views)
    assert grid.shape == (8, 12, 3)
    assert grid[0, 0, 0] == 0 and grid[0, 6, 0] == 1 and grid[4, 0, 0] == 2 and grid[4, 6, 0] == 0


def test_put_newest_drops_the_oldest():
    q: asyncio.Queue = asyncio.Queue(maxsize=2)
    assert [put_newest(q, i) for i in range(4)] == [False, False, True, True]
    assert [q.get_nowait(), q.get_nowait()] == [2, 3]


def test_stats_windows():
    meter = RateMeter(window=2.0)
    for i in range(11):
        meter.tick(now=i * 0.1)
    assert meter.rate(now=1.0) == pytest.approx(10.0)
    assert meter.rate(now=10.0) == 0.0
    window = LatencyWindow(size=4)
    for ms in (1, 2, 3, 4, 100, float("nan"), -1):
        window.add(ms)
    assert window.summary()["samples"] == 5 and window.percentile(50) == 3.5


def test_portrait_store_checks_size_and_format_and_forgets_the_oldest():
    store = PortraitStore(capacity=2, max_bytes=10_000)
    with pytest.raises(PortraitTooLarge):
        store.add(b"\0" * 10_001)
    with pytest.raises(NotAnImage, match="not an image"):
        store.add(b"GIF89a broken")
    ids = [store.add(png(color=(i, 0, 0))).id for i in range(3)]
    assert [p.id for p in store.list()] == ids[:0:-1]
    with pytest.raises(KeyError):
        store.get(ids[0])


@pytest.mark.parametrize("name,ok", [("index.html", True), ("client.js", True), ("../setup.py", False),
                                     ("..", False), (".x.js", False), ("__init__.py", False), ("a/b.js", False),
                                     ("x\\y.js", False), ("missing.js", False)])
def test_safe_file(name, ok):
    assert (safe_file(client_root(), name) is not None) == ok


def test_recorder_keeps_frames_closer_than_a_nominal_frame_period(tmp_path):
    import av

    from flamecast.server.media import Mp4Writer

    path = tmp_path / "close.mp4"
    writer = Mp4Writer(path, audio=False)
    for i, ticks in enumerate([0, 1000, 2000, 2001, 9000, 9001, 12000]):  # 90 kHz: 11 ms apart and less
        writer.video(np.full((64, 64, 3), i * 20, np.uint8), ticks / 90000)
    writer.close()
    with av.open(str(path)) as c:
        assert len(list(c.decode(video=0))) == 7

def test_recorder_starts_the_audio_at_its_capture_time(tmp_path):
    """Audio whose first chunk was captured 60 ms after the first picture starts 60 ms in, not
    at zero (later chunks play on from it)."""
    import av

    from flamecast.server.media import AUDIO_RATE, Mp4Writer

    path = tmp_path / "late.mp4"
    writer = Mp4Writer(path)
    tone = (np.sin(np.arange(960) / 5) * 20000).astype(np.int16)[:, None].repeat(2, axis=1)  # 20 ms
    for i in range(25):
        writer.video(np.zeros((64, 64, 3), np.uint8), i * 0.04)
        for t in (0.04 * i, 0.04 * i + 0.02):  # 20-ms chunks from 60 ms on: a tone, then silence
            if t >= 0.059:
                writer.audio(tone if t < 0.07 else np.zeros_like(tone), AUDIO_RATE, t)
    writer.close()
    with av.open(str(path)) as c:
        for frame in c.decode(audio=0):
            pcm = frame.to_ndarray()[0]
            loud = np.flatnonzero(np.abs(pcm) > 0.2)
            if loud.size:
                onset = float(frame.pts * frame.time_base) + loud[0] / frame.sample_rate
                break
    assert abs(onset - 0.06) < 0.01, onset


def test_worker_start_up_noise_is_dropped_and_everything_else_kept():
    import io

    from flamecast.server.worker_proc import forward_stderr

    lines = [b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
             b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
             b"W0000 00:00:1796403528.647407   24068 inference_feedback_manager.cc:114] Feedback manager ...\n",
             b"ERROR flamecast.renderer.worker: a real problem\n", b"W0000 other.cc:1] kept\n"]
    out = io.StringIO()
    forward_stderr(io.BytesIO(b"".join(lines)), out)
    assert out.getvalue() == "ERROR flamecast.renderer.worker: a real problem\nW0000 other.cc:1] kept\n"

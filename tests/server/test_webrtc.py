"""WebRTC end to end: a real aiortc client receives every view track from a real worker."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from flamecast.server.client import drain

from .conftest import SIZE, VIEWS, face_png


async def test_every_view_track_streams_changing_frames(api):
    info = await api.create_session(driver="idle")
    assert info["views"] == list(VIEWS)
    assert info["tracks"] == [*VIEWS, "mosaic"]
    async with await api.connect(info["id"], tracks=list(VIEWS)) as conn:
        received = await asyncio.gather(*(drain(conn, name, 100, timeout=60) for name in VIEWS))
    for name, frames in zip(VIEWS, received):
        assert len(frames) == 100
        images = [f.to_ndarray(format="rgb24") for f in frames]
        assert images[0].shape == (SIZE, SIZE, 3), name
        assert np.abs(images[-1].astype(int) - images[0].astype(int)).mean() > 1.0, f"{name} frames do not change"
        pts = [f.pts for f in frames]
        assert all(b > a for a, b in zip(pts, pts[1:])), "pts must increase"


@pytest.mark.parametrize("codec", ["vp8", "h264"])
async def test_codecs_and_mosaic(api, codec):
    info = await api.create_session()
    async with await api.connect(info["id"], tracks=["mosaic"], codec=codec) as conn:
        frames = await drain(conn, "mosaic", 10, timeout=30)
        assert codec.upper() in conn.pc.remoteDescription.sdp.upper()
    image = frames[-1].to_ndarray(format="rgb24")
    assert image.shape == (SIZE, 2 * SIZE, 3)  # two views side by side


async def test_latency_is_measured_at_the_client(api):
    info = await api.create_session()
    async with await api.connect(info["id"], tracks=["front"]) as conn:
        await drain(conn, "front", 100, timeout=30)
        samples = conn.latency_ms("front")
    assert len(samples) >= 40, "the client could not map decoded frames to capture times"
    assert 0 < float(np.median(samples)) < 2000
    stats = (await api.session(info["id"]))["stats"]
    assert stats["client_latency_ms"]["samples"] >= 25
    assert stats["latency_ms"]["p50"] is not None

"""A session's video as WebRTC tracks: one source track per view plus a mosaic, each holding
only the newest frame (a frame replaced before it was sent counts as dropped). Viewers get
``MediaRelay`` proxies of the sources, so a source is read (and converted) once however many
viewers watch it.

Timestamps: pts = driver capture time - the session's epoch, in 90 kHz ticks, so every view of
one driving frame carries the same pts and a client can map pts back to the capture clock.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import math
import time
from typing import Callable

import av
import numpy as np
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from flamecast.plugins.protocol import AudioChunk, VideoFrame

from .stats import SessionStats

VIDEO_CLOCK = 90_000
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
MOSAIC = "mosaic"

SentCallback = Callable[[VideoFrame, int], None]
AUDIO_BUFFER = 100  # chunks held for the audio track (about 2 s of 20 ms chunks); oldest dropped


def pts_for(capture_ns: int, epoch_ns: int) -> int:
    """90 kHz ticks of ``capture_ns`` after ``epoch_ns``."""
    return max(0, (capture_ns - epoch_ns) * VIDEO_CLOCK // 1_000_000_000)


def mosaic(views: np.ndarray) -> np.ndarray:
    """Tile (V, H, W, 3) views into a near-square grid (black where a cell is empty)."""
    v, h, w, c = views.shape
    cols = math.ceil(math.sqrt(v))
    rows = math.ceil(v / cols)
    grid = np.zeros((rows * h, cols * w, c), np.uint8)
    for i in range(v):
        r, col = divmod(i, cols)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = views[i]
    return grid


class FrameSource(MediaStreamTrack):
    """One view (index) or the mosaic (index None) of a session, newest frame wins."""

    kind = "video"

    def __init__(self, index: int | None, epoch_ns: int, stats: SessionStats, on_sent: SentCallback) -> None:
        super().__init__()
        self.index = index
        self._epoch_ns = epoch_ns
        self._stats = stats
        self._on_sent = on_sent
        self._frame: VideoFrame | None = None
        self._event = asyncio.Event()
        self._reading = False
        self._last_pts = -1
        self.sent = 0

    def put(self, frame: VideoFrame) -> None:
        if self._frame is not None and self._reading:
            self._stats.dropped += 1
        self._frame = frame
        self._event.set()

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self._reading = True
        await self._event.wait()
        self._event.clear()
        frame, self._frame = self._frame, None
        if frame is None or self.readyState != "live":
            raise MediaStreamError
        return self._to_av(frame)

    def _to_av(self, frame: VideoFrame) -> av.VideoFrame:
        rgb = mosaic(frame.views) if self.index is None else frame.views[self.index]
        # Converted once here, in the encoders' format: viewers share this frame (MediaRelay),
        # and an encoder that had to convert it would do so from several threads at once.
        out = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")
        pts = max(pts_for(frame.capture_ns, self._epoch_ns), self._last_pts + 1)
        self._last_pts = out.pts = pts
        out.time_base = TIME_BASE
        self.sent += 1
        self._on_sent(frame, pts)
        return out

    def stop(self) -> None:
        super().stop()
        self._event.set()


class SessionVideo:
    """The source tracks of one session and the relay that fans them out to viewers."""

    def __init__(self, view_ids: tuple[str, ...], stats: SessionStats, on_sent: SentCallback,
                 epoch_ns: int | None = None) -> None:
        self.view_ids = tuple(view_ids)
        self.epoch_ns = time.time_ns() if epoch_ns is None else epoch_ns
        self._stats = stats
        self._on_sent = on_sent
        self._last_sent_seq = -1
        self.sources: dict[str, FrameSource] = {
            name: FrameSource(i, self.epoch_ns, stats, self._sent) for i, name in enumerate(self.view_ids)
        }
        self.sources[MOSAIC] = FrameSource(None, self.epoch_ns, stats, self._sent)
        self.relay = MediaRelay()
        self.latest: VideoFrame | None = None

    @property
    def track_names(self) -> tuple[str, ...]:
        return (*self.view_ids, MOSAIC)

    def push(self, frame: VideoFrame) -> None:
        """A frame from the worker: becomes the newest frame of every source."""
        if frame.view_ids != self.view_ids:
            self._stats.bad_messages += 1
            return
        self.latest = frame
        for source in self.sources.values():
            source.put(frame)

    def subscribe(self, name: str) -> MediaStreamTrack:
        """A viewer's track of view ``name`` (or "mosaic"); KeyError for an unknown name."""
        if name not in self.sources:
            raise KeyError(name)
        return self.relay.subscribe(self.sources[name], buffered=False)

    def stop(self) -> None:
        for source in self.sources.values():
            source.stop()

    def _sent(self, frame: VideoFrame, pts: int) -> None:
        # Count a driving frame once, however many of its views went out.
        if frame.seq <= self._last_sent_seq:
            return
        self._last_sent_seq = frame.seq
        self._stats.frames_out += 1
        self._stats.fps_out.tick()
        self._stats.server_latency.add((time.time_ns() - frame.capture_ns) / 1e6)
        self._on_sent(frame, pts)


class AudioSource(MediaStreamTrack):
    """Audio a driver passes through (``DriverContext.emit_audio``), as one track per session.

    Each chunk is released ``delay_ms()`` after its capture time (the session's current video
    latency), so speech lines up with the lips it drives. The buffer is bounded: the oldest
    chunk goes first (counted in ``stats.audio_dropped``).
    """

    kind = "audio"

    def __init__(self, stats: SessionStats, delay_ms: Callable[[], float]) -> None:
        super().__init__()
        self._stats = stats
        self._delay_ms = delay_ms
        self._chunks: collections.deque[AudioChunk] = collections.deque()
        self._event = asyncio.Event()
        self._pts = 0
        self._rate: int | None = None

    def put(self, chunk: AudioChunk) -> None:
        if len(self._chunks) >= AUDIO_BUFFER:
            self._chunks.popleft()
            self._stats.audio_dropped += 1
        self._chunks.append(chunk)
        self._event.set()

    async def recv(self) -> av.AudioFrame:
        while not self._chunks:
            if self.readyState != "live":
                raise MediaStreamError
            self._event.clear()
            await self._event.wait()
        chunk = self._chunks.popleft()
        wait = chunk.capture_ns / 1e9 + self._delay_ms() / 1e3 - time.time()
        if wait > 0:
            await asyncio.sleep(min(wait, 1.0))
        if self.readyState != "live":
            raise MediaStreamError
        return self._to_av(chunk)

    def _to_av(self, chunk: AudioChunk) -> av.AudioFrame:
        samples = np.ascontiguousarray(chunk.samples, dtype=np.int16)
        channels = min(samples.shape[1], 2)
        frame = av.AudioFrame.from_ndarray(samples[:, :channels].reshape(1, -1), format="s16",
                                           layout="mono" if channels == 1 else "stereo")
        if chunk.sample_rate != self._rate:
            self._rate, self._pts = chunk.sample_rate, 0
        frame.sample_rate = chunk.sample_rate
        frame.pts, frame.time_base = self._pts, fractions.Fraction(1, chunk.sample_rate)
        self._pts += samples.shape[0]
        return frame

    def stop(self) -> None:
        super().stop()
        self._event.set()

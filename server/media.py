"""A session's video as WebRTC tracks: one source track per view plus a mosaic, each holding
only the newest frame (a frame replaced before it was sent counts as dropped). Viewers get
``MediaRelay`` proxies of the sources, so a source is read (and converted) once however many
viewers watch it.

Timestamps: pts = driver capture time - the session's epoch, in 90 kHz ticks, so every view of
one driving frame carries the same pts and a client can map pts back to the capture clock.

Backgrounds (``Background``): the generator's own picture ("portrait"), a solid colour for chroma
keying ("#00ff00": the avatar composed over it with the generator's matte) or "transparent".
WebRTC video has no alpha, so a transparent session's tracks carry each picture packed side by
side: the colour on the left half, the matte (grey, white = avatar) on the right half; the OBS
page composes the two into real transparency (client_demo/obs.html).

``Mp4Writer`` writes video frames and audio chunks timed on one clock into an MP4 (H.264 + AAC):
the recorder output and ``flamecast record`` use it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import fractions
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

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


_HEX = re.compile(r"^#([0-9a-fA-F]{6})$")


@dataclass(frozen=True)
class Background:
    """What shows behind the avatar: ``portrait`` (the generator's own picture), ``color`` (a
    solid colour, for chroma keying) or ``transparent`` (colour and matte packed side by side)."""

    kind: Literal["portrait", "color", "transparent"] = "portrait"
    rgb: tuple[int, int, int] = (0, 0, 0)

    @classmethod
    def parse(cls, value: object) -> Background:
        """"portrait", "transparent" or "#rrggbb"; ValueError saying what is accepted."""
        if value is None or value == "portrait":
            return cls()
        if value == "transparent":
            return cls("transparent")
        match = _HEX.match(value) if isinstance(value, str) else None
        if match is None:
            raise ValueError(f"field 'background' must be \"portrait\", \"transparent\" or a colour like \"#00ff00\"; "
                             f"got {value!r}")
        n = int(match.group(1), 16)
        return cls("color", ((n >> 16) & 255, (n >> 8) & 255, n & 255))

    @property
    def value(self) -> str:
        if self.kind == "color":
            return "#{:02x}{:02x}{:02x}".format(*self.rgb)
        return self.kind


def over_color(views: np.ndarray, mattes: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    """(..., H, W, 3) pictures composed over a solid colour with their (..., H, W) mattes."""
    a = mattes.astype(np.uint16)[..., None]
    bg = np.asarray(rgb, np.uint16)
    return ((views.astype(np.uint16) * a + bg * (255 - a) + 127) // 255).astype(np.uint8)


def pack_matte(rgb: np.ndarray, matte: np.ndarray) -> np.ndarray:
    """One (H, 2W, 3) picture: the colour left, the matte (grey) right."""
    return np.concatenate([rgb, np.repeat(matte[..., None], 3, axis=-1)], axis=1)


def mosaic(views: np.ndarray) -> np.ndarray:
    """Tile (V, H, W, C) views into a near-square grid (black where a cell is empty)."""
    if views.ndim == 3:
        return mosaic(views[..., None])[..., 0]
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
        self._mattes: np.ndarray | None = None  # set with the frame when it is to be packed
        self._event = asyncio.Event()
        self._reading = False
        self._last_pts = -1
        self.sent = 0

    def put(self, frame: VideoFrame, mattes: np.ndarray | None = None) -> None:
        if self._frame is not None and self._reading:
            self._stats.dropped += 1
        self._frame, self._mattes = frame, mattes
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
        return self._to_av(frame, self._mattes)

    def _to_av(self, frame: VideoFrame, mattes: np.ndarray | None = None) -> av.VideoFrame:
        rgb = mosaic(frame.views) if self.index is None else frame.views[self.index]
        if mattes is not None:
            rgb = pack_matte(rgb, mosaic(mattes) if self.index is None else mattes[self.index])
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
        self.background = Background()
        self.matte_missing = False  # the background asks for a matte the generator does not give

    @property
    def track_names(self) -> tuple[str, ...]:
        return (*self.view_ids, MOSAIC)

    def push(self, frame: VideoFrame, mattes: np.ndarray | None = None) -> VideoFrame | None:
        """A frame from the worker (with its (V, H, W) mattes when the generator gives them):
        becomes the newest frame of every source, over the session's background. Returns the
        frame as opaque sinks (outputs) should see it, None when it was refused."""
        if frame.view_ids != self.view_ids:
            self._stats.bad_messages += 1
            return None
        bg = self.background
        if mattes is not None and mattes.shape != frame.views.shape[:3]:
            mattes = None
        self.matte_missing = bg.kind != "portrait" and mattes is None
        packed = None
        if bg.kind == "color" and mattes is not None:
            frame = dataclasses.replace(frame, views=over_color(frame.views, mattes, bg.rgb))
        elif bg.kind == "transparent" and mattes is not None:
            packed = mattes
        self.latest = frame
        for source in self.sources.values():
            source.put(frame, packed)
        return frame

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

    Chunks are cut into 20 ms frames (the Opus encoder takes exactly 20 ms per packet and would
    drop the rest of a longer frame), and each frame is released ``delay_ms()`` after its
    capture time (the session's current video latency), so speech lines up with the lips it
    drives. The buffer is bounded: the oldest frame goes first (counted in
    ``stats.audio_dropped``).
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
        self._carry: AudioChunk | None = None  # the last chunk's samples short of 20 ms

    def put(self, chunk: AudioChunk) -> None:
        samples, start_ns, rate = chunk.samples, chunk.capture_ns, chunk.sample_rate
        carry, self._carry = self._carry, None
        if carry is not None and carry.sample_rate == rate and carry.samples.shape[1:] == samples.shape[1:]:
            samples, start_ns = np.concatenate([carry.samples, samples]), carry.capture_ns
        step = max(1, rate // 50)
        full = samples.shape[0] // step
        for k in range(full + 1):
            piece = samples[k * step:(k + 1) * step]
            if not piece.shape[0]:
                break
            stamped = AudioChunk(chunk.session_id, chunk.seq, start_ns + k * step * 1_000_000_000 // rate, rate, piece)
            if k == full:
                self._carry = stamped
            else:
                self._append(stamped)
        self._event.set()

    def _append(self, piece: AudioChunk) -> None:
        if len(self._chunks) >= AUDIO_BUFFER:
            self._chunks.popleft()
            self._stats.audio_dropped += 1
        self._chunks.append(piece)

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


# --- MP4 ------------------------------------------------------------------------------------

AUDIO_RATE = 48_000
AUDIO_GAP_S = 0.1  # audio that starts this much after the previous chunk ended leaves silence


class Mp4Writer:
    """An MP4 file of ``videos`` video streams (H.264, all the size of the first picture) and one
    audio stream (AAC, 48 kHz stereo), timed on one clock: ``video(picture, t, index)`` and
    ``audio(samples, rate, t)`` take seconds since the recording's start. Audio starts at its
    first chunk's time and plays continuously; a chunk that starts more than 0.1 s after the
    previous one ended leaves silence; audio before the first picture is dropped. Blocking: call
    it from a thread. A recording without audio gets silence as long as its video."""

    def __init__(self, path: Path, *, audio: bool = True, videos: int = 1, fps_hint: float = 25.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.frames = 0
        self.audio_seconds = 0.0
        self._container = av.open(str(path), mode="w")
        self._want_audio = audio
        self._fps_hint = fps_hint
        self._videos: list = []
        self._n_videos = videos
        self._audio = None
        self._resamplers: dict[tuple[str, int], av.AudioResampler] = {}
        self._last_pts = [-1] * videos
        self._next_sample = 0  # in AUDIO_RATE samples since the start
        self._duration = 0.0

    def video(self, picture: np.ndarray | av.VideoFrame, t: float, index: int = 0) -> None:
        frame = picture if isinstance(picture, av.VideoFrame) else av.VideoFrame.from_ndarray(
            np.ascontiguousarray(picture), format="rgb24")
        if not self._videos:
            self._open_streams(frame.width, frame.height)
        stream = self._videos[index]
        pts = max(int(round(t * VIDEO_CLOCK)), self._last_pts[index] + 1)
        self._last_pts[index] = pts
        frame = frame.reformat(width=stream.width, height=stream.height, format="yuv420p")
        frame.pts, frame.time_base = pts, TIME_BASE
        for packet in stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1
        self._duration = max(self._duration, pts / VIDEO_CLOCK)

    def audio(self, samples: np.ndarray, rate: int, t: float | None = None) -> None:
        """(n, channels) int16 PCM at ``rate`` starting at ``t`` (None: right after the last)."""
        if self._audio is None or samples.size == 0:
            return
        start = self._next_sample if t is None else int(round(t * AUDIO_RATE))
        if start + samples.shape[0] * AUDIO_RATE // rate <= 0:
            return  # before the first picture
        # the first chunk starts at its time; later ones play on from the last unless they
        # leave a gap (chunks arrive with some jitter, and sound must not stutter)
        gap = AUDIO_GAP_S * AUDIO_RATE if self._next_sample else 0
        if start < 0:
            samples = samples[int(-start * rate / AUDIO_RATE):]
        elif start > self._next_sample + gap:
            self._silence(start - self._next_sample)
        pcm = np.ascontiguousarray(samples, dtype=np.int16)
        channels = min(pcm.shape[1], 2)
        frame = av.AudioFrame.from_ndarray(pcm[:, :channels].reshape(1, -1), format="s16",
                                           layout="mono" if channels == 1 else "stereo")
        frame.sample_rate = rate
        self._encode_audio(frame)

    def close(self) -> dict[str, float]:
        """Pad missing audio with silence, flush and close; returns what was written."""
        try:
            if self._audio is not None:
                missing = int(self._duration * AUDIO_RATE) - self._next_sample
                if missing > 0:
                    self._silence(missing)
            for stream in [*self._videos, *([self._audio] if self._audio is not None else [])]:
                for packet in stream.encode(None):
                    self._container.mux(packet)
        finally:
            self._container.close()
        return {"frames": self.frames, "seconds": self._duration, "audio_seconds": self._next_sample / AUDIO_RATE}

    def _open_streams(self, width: int, height: int) -> None:
        for _ in range(self._n_videos):
            stream = self._container.add_stream("libx264", rate=round(self._fps_hint))
            stream.width, stream.height = width - width % 2, height - height % 2
            stream.pix_fmt = "yuv420p"
            stream.time_base = TIME_BASE
            # the encoder counts in 90 kHz too: two frames closer than a 1/fps period (a driver
            # catching up after a stall) must not share a pts
            stream.codec_context.time_base = TIME_BASE
            stream.options = {"preset": "veryfast", "tune": "zerolatency"}
            self._videos.append(stream)
        if self._want_audio:
            self._audio = self._container.add_stream("aac", rate=AUDIO_RATE)
            self._audio.layout = "stereo"

    def _silence(self, n: int) -> None:
        while n > 0:
            step = min(n, AUDIO_RATE // 10)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, step * 2), np.int16), format="s16", layout="stereo")
            frame.sample_rate = AUDIO_RATE
            self._encode_audio(frame)
            n -= step

    def _encode_audio(self, frame: av.AudioFrame) -> None:
        frame.pts = None
        # a resampler takes one input layout and rate: one for each (the silence is 48 kHz stereo)
        key = (frame.layout.name, frame.sample_rate)
        resampler = self._resamplers.get(key)
        if resampler is None:
            resampler = self._resamplers[key] = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
        for out in resampler.resample(frame):
            out.pts, out.time_base = self._next_sample, fractions.Fraction(1, AUDIO_RATE)
            self._next_sample += out.samples
            for packet in self._audio.encode(out):
                self._container.mux(packet)

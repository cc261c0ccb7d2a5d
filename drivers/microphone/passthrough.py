"""Passing the audio on to the session's clients, stamped so it plays with the frame that shows it.

Timestamp rule: an ``AudioChunk`` the driver emits carries the ``capture_ns`` of the frame that
shows the chunk's first sample (the frame yielded right after it, stamped on the same clock
within microseconds). A chunk covers the audio that plays while that frame is on screen, so a
server that delays every chunk by the same amount as the video (capture_ns + video latency)
plays sound and picture together. The mouth lags the audio it sees by the model's lookahead;
the passthrough is held back by exactly that much, so the driver itself adds no offset.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from flamecast.plugins.protocol import AudioChunk

from .audio import scale_to_float
from .sources import Chunk

MAX_BUFFER_S = 2.0  # audio older than this that no frame claimed is dropped (counted)


def to_int16_channels(samples: np.ndarray) -> np.ndarray:
    """(n, ch) PCM of any supported dtype -> (n, 1 or 2) int16 (more than 2 channels: mono)."""
    x = scale_to_float(samples)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[1] > 2:
        x = x.mean(axis=1, keepdims=True)
    return (np.clip(np.nan_to_num(x), -1.0, 1.0) * 32767.0).astype(np.int16)


class Passthrough:
    """Buffers the source's audio on the audio timeline; ``emit_until`` sends what a frame shows."""

    def __init__(self, emit: Callable[[AudioChunk], None], session_id: str) -> None:
        self.emit, self.session_id = emit, session_id
        self.seq = 0
        self.dropped_s = 0.0
        self._buf = np.zeros((0, 1), np.int16)
        self._rate = 0
        self._t0 = 0.0  # audio time of self._buf[0]

    def add(self, chunk: Chunk, t_start: float) -> None:
        pcm = to_int16_channels(chunk.samples)
        if chunk.rate != self._rate or pcm.shape[1] != self._buf.shape[1] or not self._buf.size:
            self._start(pcm, chunk.rate, t_start)
            return
        self._buf = np.concatenate([self._buf, pcm])
        excess = self._buf.shape[0] - int(MAX_BUFFER_S * self._rate)
        if excess > 0:
            self._buf, self._t0 = self._buf[excess:], self._t0 + excess / self._rate
            self.dropped_s += excess / self._rate

    def _start(self, pcm: np.ndarray, rate: int, t_start: float) -> None:
        if self._buf.size:
            self.dropped_s += self._buf.shape[0] / max(self._rate, 1)
        self._buf, self._rate, self._t0 = pcm, rate, t_start

    def emit_until(self, t: float, capture_ns: int) -> None:
        """Send the buffered audio before audio time ``t`` as one chunk stamped ``capture_ns``."""
        if not self._buf.size or t <= self._t0:
            return
        n = min(self._buf.shape[0], int(round((t - self._t0) * self._rate)))
        if n <= 0:
            return
        out, self._buf = self._buf[:n], self._buf[n:]
        self._t0 += n / self._rate
        self.emit(AudioChunk(self.session_id, self.seq, capture_ns, self._rate, np.ascontiguousarray(out)))
        self.seq += 1

    def skip_until(self, t: float) -> None:
        """Drop audio before ``t`` without sending it (a jump on the timeline)."""
        if self._buf.size and t > self._t0:
            n = min(self._buf.shape[0], int(round((t - self._t0) * self._rate)))
            self._buf, self._t0 = self._buf[n:], self._t0 + n / self._rate

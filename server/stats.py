"""Per-session statistics: output frame rate, latency percentiles, drops."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

WINDOW_SECONDS = 2.0
LATENCY_SAMPLES = 256


class RateMeter:
    """Events per second over the last ``window`` seconds."""

    def __init__(self, window: float = WINDOW_SECONDS) -> None:
        self.window = window
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._times.append(now)
        self._trim(now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        self._trim(now)
        if len(self._times) < 2:
            return 0.0
        span = self._times[-1] - self._times[0]
        return (len(self._times) - 1) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()


class LatencyWindow:
    """The last ``size`` latency samples in milliseconds, with percentiles."""

    def __init__(self, size: int = LATENCY_SAMPLES) -> None:
        self._samples: collections.deque[float] = collections.deque(maxlen=size)
        self.count = 0

    def add(self, ms: float) -> None:
        if np.isfinite(ms) and ms >= 0:
            self._samples.append(float(ms))
            self.count += 1

    def percentile(self, q: float) -> float | None:
        if not self._samples:
            return None
        return round(float(np.percentile(np.fromiter(self._samples, float), q)), 1)

    def summary(self) -> dict[str, float | None]:
        return {"p50": self.percentile(50), "p95": self.percentile(95), "samples": self.count}


@dataclass
class SessionStats:
    """What a session reports in ``GET /api/sessions/{id}``, the events socket and /metrics.

    ``server_latency``: driver capture -> frame handed to the WebRTC encoder (ns clocks of
    this host). ``client_latency``: driver capture -> frame decoded at a client, as reported by
    clients over the data channel.
    """

    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    audio_dropped: int = 0
    bad_messages: int = 0
    fps_in: RateMeter = field(default_factory=RateMeter)
    fps_out: RateMeter = field(default_factory=RateMeter)
    server_latency: LatencyWindow = field(default_factory=LatencyWindow)
    client_latency: LatencyWindow = field(default_factory=LatencyWindow)
    render_ms: LatencyWindow = field(default_factory=LatencyWindow)

    def as_dict(self) -> dict[str, Any]:
        return {
            "fps_in": round(self.fps_in.rate(), 2),
            "fps_out": round(self.fps_out.rate(), 2),
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "dropped": self.dropped,
            "audio_dropped": self.audio_dropped,
            "bad_messages": self.bad_messages,
            "latency_ms": self.server_latency.summary(),
            "client_latency_ms": self.client_latency.summary(),
            "render_ms": self.render_ms.summary(),
        }

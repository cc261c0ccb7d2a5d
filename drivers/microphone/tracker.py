"""Audio in, per-frame mouth values out, on one audio timeline.

The audio timeline counts the samples a source has delivered: time 0 is its first sample,
time ``t`` is ``t`` seconds of audio later (gaps in delivery are not on it). ``MouthTracker``
turns the audio into one row per 10 ms feature frame (the model's mouth channels, the level in
dBFS and F0) and answers "what does the mouth look like at audio time t" once the model has
seen enough audio past t (``lookahead_s``).
"""

from __future__ import annotations

import abc

import collections
from dataclasses import dataclass

import numpy as np

from .audio import MODEL_RATE, Resampler, to_float_mono
from .features import StreamingLogMel, frame_centre_s
from .model import VisemeNet, VisemeStream

HISTORY_FRAMES = 300  # 3 s of rows kept


@dataclass(frozen=True)
class MouthState:
    """The mouth at one audio time: channels (name -> 0..1), level (dBFS) and F0 (Hz, 0 = unvoiced)."""

    time_s: float
    channels: dict[str, float]
    level_db: float
    f0: float


class Timeline(abc.ABC):
    """Rows (audio time, channel values, level dBFS, F0) and the questions the driver asks."""

    runs_in_thread = False  # True: push is heavy, the driver calls it in a worker thread
    lookahead_s: float = 0.0

    def __init__(self, names: tuple[str, ...], gate_db: float) -> None:
        self.names, self.gate_db = names, gate_db
        self._resample = Resampler(MODEL_RATE)
        self._rows: collections.deque[tuple[float, np.ndarray, float, float]] = collections.deque(maxlen=HISTORY_FRAMES)
        self.samples_in = 0  # at MODEL_RATE: the audio timeline's length

    @property
    def audio_time_s(self) -> float:
        return self.samples_in / MODEL_RATE

    def push(self, samples: np.ndarray, rate: int) -> None:
        """PCM of any supported dtype/layout (see ``audio``) at ``rate``."""
        x = self._resample(to_float_mono(samples), rate)
        self.samples_in += x.size
        self._consume(x)

    @abc.abstractmethod
    def _consume(self, x: np.ndarray) -> None:
        """Turn 16 kHz mono samples into rows (``_add_row``); each tracker does it its own way."""

    def _add_row(self, t: float, values: np.ndarray, level_db: float, f0: float) -> None:
        if level_db < self.gate_db:
            values = np.zeros_like(values)
        self._rows.append((t, np.clip(values, 0.0, 1.0), level_db, f0))

    @property
    def latest_time_s(self) -> float | None:
        """Audio time of the newest row, or None before the first."""
        return self._rows[-1][0] if self._rows else None

    def state_at(self, t: float, span_s: float = 0.02) -> MouthState | None:
        """Mean of the rows in (t - span_s, t]; None if the tracker has not reached ``t`` yet."""
        if not self._rows or self._rows[-1][0] < t - 1e-9:
            return None
        picked = [r for r in self._rows if t - span_s < r[0] <= t + 1e-9] or [min(self._rows, key=lambda r: abs(r[0] - t))]
        values = np.mean([r[1] for r in picked], axis=0)
        return MouthState(t, dict(zip(self.names, values.tolist())), max(r[2] for r in picked), picked[-1][3])

    def latest(self) -> MouthState | None:
        t = self.latest_time_s
        return None if t is None else self.state_at(t)



class MouthTracker(Timeline):
    """The streaming VisemeNet on the timeline: one row per 10 ms feature frame."""

    def __init__(self, model: VisemeNet, *, gate_db: float = -70.0) -> None:
        super().__init__(tuple(model.config.outputs), gate_db)
        self.model = model
        self.lookahead_s = model.config.lookahead_s
        self._mel = StreamingLogMel(model.config.n_mels)
        self._net = VisemeStream(model)
        self._pending: collections.deque[tuple[float, float]] = collections.deque()
        self._next_frame = 0

    def _consume(self, x: np.ndarray) -> None:
        mel, level, f0 = self._mel.push(x)
        self._pending.extend(zip(level.tolist(), f0.tolist()))
        for row in self._net.push(mel):
            lvl, hz = self._pending.popleft()
            self._add_row(float(frame_centre_s(self._next_frame)), row, lvl, hz)
            self._next_frame += 1

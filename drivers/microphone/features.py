"""Log-mel features at 100 frames/s from 16 kHz audio, batch and streaming alike.

Frame ``j`` covers samples ``[HOP*j, HOP*j + WIN)`` (25 ms Hann window, 10 ms hop), so its
centre is at ``(HOP*j + WIN/2) / MODEL_RATE`` seconds. The streaming extractor gives exactly the
frames the batch function gives for the same samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .audio import MODEL_RATE

WIN = 400
HOP = 160
N_FFT = 512
FLOOR = 1e-10


@lru_cache(maxsize=4)
def mel_filterbank(n_mels: int, fmin: float = 50.0, fmax: float = 7600.0) -> np.ndarray:
    """(n_fft//2+1, n_mels) triangular HTK-mel filters."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)

    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    freqs = np.linspace(0, MODEL_RATE / 2, N_FFT // 2 + 1)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (freqs[None] - lo) / (mid - lo)
    down = (hi - freqs[None]) / (hi - mid)
    return np.maximum(0.0, np.minimum(up, down)).T.astype(np.float32)


@lru_cache(maxsize=1)
def _window() -> np.ndarray:
    return np.hanning(WIN + 1)[:-1].astype(np.float32)


def log_mel(samples: np.ndarray, n_mels: int) -> np.ndarray:
    """(n,) float32 at 16 kHz -> (frames, n_mels) log10 power; frames = 1 + (n - WIN) // HOP."""
    n = (samples.shape[0] - WIN) // HOP + 1
    if n <= 0:
        return np.zeros((0, n_mels), np.float32)
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
    frames = samples[idx] * _window()
    power = np.abs(np.fft.rfft(frames, N_FFT, axis=1)) ** 2
    return np.log10(power.astype(np.float32) @ mel_filterbank(n_mels) + FLOOR).astype(np.float32)


def frame_rms_db(samples: np.ndarray) -> np.ndarray:
    """Level of each feature frame in dBFS (same framing as ``log_mel``)."""
    n = (samples.shape[0] - WIN) // HOP + 1
    if n <= 0:
        return np.zeros(0, np.float32)
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
    return (10 * np.log10(np.mean(samples[idx] ** 2, axis=1) + FLOOR)).astype(np.float32)


F0_MIN, F0_MAX = 70.0, 400.0


def pitch(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per feature frame: F0 in Hz (0 when unvoiced) and voicing strength 0..1 (the
    normalised autocorrelation peak between 70 and 400 Hz)."""
    n = (samples.shape[0] - WIN) // HOP + 1
    if n <= 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
    frames = samples[idx] * _window()
    frames = frames - frames.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(frames, 2 * N_FFT, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :WIN]
    lo, hi = int(MODEL_RATE / F0_MAX), int(MODEL_RATE / F0_MIN)
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    strength = ac[np.arange(n), lag] / (ac[:, 0] + FLOOR) / (1 - lag / WIN)  # unbias the window taper
    strength = np.clip(strength, 0.0, 1.0).astype(np.float32)
    f0 = np.where(strength > 0.45, MODEL_RATE / lag, 0.0).astype(np.float32)
    return f0, strength


@dataclass
class StreamingLogMel:
    """Feeds samples in, returns the log-mel frames (and their levels) that became complete."""

    n_mels: int

    def __post_init__(self) -> None:
        self._buf = np.zeros(0, np.float32)
        self.frames_out = 0

    def push(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """New samples -> (mel (k, n_mels), level dBFS (k,), f0 Hz (k,)) of the frames completed."""
        self._buf = np.concatenate([self._buf, samples.astype(np.float32, copy=False)])
        mel, level = log_mel(self._buf, self.n_mels), frame_rms_db(self._buf)
        f0, _ = pitch(self._buf)
        used = mel.shape[0] * HOP
        self._buf = self._buf[used:]
        self.frames_out += mel.shape[0]
        return mel, level, f0


def frame_centre_s(j: np.ndarray | int) -> np.ndarray | float:
    """Centre time (s) of feature frame ``j``."""
    return (HOP * np.asarray(j) + WIN / 2) / MODEL_RATE

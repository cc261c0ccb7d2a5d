"""PCM in any layout to the model's input: float32 mono at ``MODEL_RATE``.

Accepted chunks (``AudioChunk.samples`` or a bare array):

* dtype int16 (full scale 32768), float32/float64 (full scale 1.0), uint8 (8-bit unsigned,
  128 = zero) or int32 (full scale 2**31);
* shape (samples,) mono, or (samples, channels) interleaved; channels are averaged;
* any sample rate from 8 kHz to 192 kHz.

Resampling is av's (libswresample) ``AudioResampler``, which keeps its filter state between
calls, so a stream resampled chunk by chunk equals the stream resampled at once.
"""

from __future__ import annotations

import numpy as np

MODEL_RATE = 16000
MIN_RATE, MAX_RATE = 8000, 192000
MAX_CHANNELS = 32


class AudioFormatError(ValueError):
    """PCM whose dtype, shape or rate the driver cannot take; the message says what it accepts."""


def to_float_mono(samples: np.ndarray) -> np.ndarray:
    """(n,) or (n, channels) PCM of a supported dtype -> (n,) float32 in [-1, 1] (clipped)."""
    a = np.asarray(samples)
    if a.ndim == 2:
        if not 1 <= a.shape[1] <= MAX_CHANNELS:
            raise AudioFormatError(f"audio has {a.shape[1]} channels; send (samples, channels) with 1..{MAX_CHANNELS}")
    elif a.ndim != 1:
        raise AudioFormatError(f"audio must be (samples,) or (samples, channels); got shape {a.shape}")
    x = scale_to_float(a)
    if x.ndim == 2:
        x = x.mean(axis=1)
    x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(x, -1.0, 1.0).astype(np.float32, copy=False)


def scale_to_float(a: np.ndarray) -> np.ndarray:
    """PCM of a supported dtype as float32 at full scale 1.0 (shape kept)."""
    if a.dtype == np.int16:
        return a.astype(np.float32) / 32768.0
    if a.dtype == np.uint8:
        return (a.astype(np.float32) - 128.0) / 128.0
    if a.dtype == np.int32:
        return a.astype(np.float32) / 2147483648.0
    if a.dtype in (np.float32, np.float64):
        return a.astype(np.float32, copy=False)
    raise AudioFormatError(f"audio dtype {a.dtype} is not supported; send int16, float32, uint8 or int32 PCM")


SUPPORTED_DTYPES = (np.int16, np.uint8, np.int32, np.float32, np.float64)


def check_pcm(samples: np.ndarray) -> np.ndarray:
    """(n,) or (n, channels) PCM of a supported dtype, as (n, channels); AudioFormatError if not."""
    a = np.asarray(samples)
    if a.dtype not in SUPPORTED_DTYPES:
        raise AudioFormatError(f"audio dtype {a.dtype} is not supported; send int16, float32, uint8 or int32 PCM")
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2 or not 1 <= a.shape[1] <= MAX_CHANNELS:
        raise AudioFormatError(f"audio must be (samples,) or (samples, channels<={MAX_CHANNELS}); got shape {a.shape}")
    return a


def check_rate(rate: int) -> int:
    if not isinstance(rate, (int, np.integer)) or not MIN_RATE <= int(rate) <= MAX_RATE:
        raise AudioFormatError(f"sample rate {rate!r} is not supported; use an integer from {MIN_RATE} to {MAX_RATE} Hz")
    return int(rate)


class Resampler:
    """Streaming float32 mono resampler to ``MODEL_RATE``; a new input rate restarts it."""

    def __init__(self, out_rate: int = MODEL_RATE) -> None:
        self.out_rate = out_rate
        self._rate: int | None = None
        self._av = None

    def __call__(self, mono: np.ndarray, rate: int) -> np.ndarray:
        rate = check_rate(rate)
        if rate == self.out_rate:
            return mono
        if rate != self._rate:
            import av

            self._rate = rate
            self._av = av.AudioResampler(format="flt", layout="mono", rate=self.out_rate)
        return self._run(mono, rate)

    def _run(self, mono: np.ndarray, rate: int) -> np.ndarray:
        import av

        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(mono, np.float32).reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        out = [f.to_ndarray().reshape(-1) for f in self._av.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def resample_once(mono: np.ndarray, rate: int, out_rate: int = MODEL_RATE) -> np.ndarray:
    """A whole signal resampled at once (flushes the resampler's tail)."""
    if rate == out_rate:
        return np.asarray(mono, np.float32)
    r = Resampler(out_rate)
    head = r(mono, rate)
    tail = [f.to_ndarray().reshape(-1) for f in r._av.resample(None)]
    return np.concatenate([head, *tail]).astype(np.float32)


def to_int16(mono: np.ndarray) -> np.ndarray:
    """float32 [-1, 1] -> (n, 1) int16, the layout passthrough chunks carry."""
    return (np.clip(mono, -1.0, 1.0) * 32767.0).astype(np.int16).reshape(-1, 1)

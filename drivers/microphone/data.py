"""Speech the project makes itself, as one long 16 kHz stream with per-frame targets.

Utterances (espeak-ng, varied voices, speeds and pitches) are joined with silences between them
into one stream whose feature frames line up with the target frames, so training crops are
plain slices. ``augment`` then changes level, adds noise, clips, band-limits and quantises.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .audio import MODEL_RATE, resample_once
from .features import HOP, frame_centre_s
from .speech import Speaker, Utterance, Voice
from .targets import frame_targets, label_timeline


@dataclass
class Stream:
    """audio (n,) float32 at 16 kHz; targets (frames, outputs) and labels (frames,) on the
    feature-frame grid (frame j centred at ``frame_centre_s(j)``)."""

    audio: np.ndarray
    targets: np.ndarray
    labels: np.ndarray

    @property
    def frames(self) -> int:
        return self.targets.shape[0]


def utterance_stream(u: Utterance, pad_before: float, pad_after: float) -> Stream:
    """One utterance at 16 kHz with silence around it, its length a whole number of hops."""
    audio = resample_once(u.audio, u.rate)
    before, after = int(pad_before * MODEL_RATE) // HOP * HOP, int(pad_after * MODEL_RATE)
    total = (before + audio.size + after) // HOP * HOP
    padded = np.zeros(total, np.float32)
    padded[before:before + audio.size] = audio[: total - before]
    n_frames = total // HOP
    times = frame_centre_s(np.arange(n_frames)) - before / MODEL_RATE  # seconds into the utterance
    scale = u.rate
    phonemes = [(s, p) for s, p in u.phonemes]
    native = max(int(u.audio.size), 1)
    t = np.clip(times, -1.0, None)
    targets = frame_targets(phonemes, native, scale, t)
    labels = label_timeline(phonemes, native, scale, t)
    targets[times < 0] = 0.0
    labels[times < 0] = 0.0
    return Stream(padded, targets, labels)


def join(streams: Sequence[Stream]) -> Stream:
    return Stream(np.concatenate([s.audio for s in streams]), np.concatenate([s.targets for s in streams]),
                  np.concatenate([s.labels for s in streams]))


def synthesize(items: Iterable[tuple[str, Voice]], rng: np.random.Generator, speaker: Speaker | None = None,
               progress=None) -> Stream:
    """Say every (text, voice) and join the results with 0.1-0.8 s silences."""
    speaker = speaker or Speaker()
    parts = []
    for text, voice in items:
        u = speaker.say(text, voice)
        parts.append(utterance_stream(u, rng.uniform(0.1, 0.8), rng.uniform(0.05, 0.3)))
        if progress is not None:
            progress.update(1)
    return join(parts)


def crop(stream: Stream, start_frame: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Audio whose log-mel has exactly ``frames`` frames, and the targets of those frames."""
    from .features import WIN

    a = stream.audio[HOP * start_frame: HOP * (start_frame + frames - 1) + WIN]
    return a, stream.targets[start_frame:start_frame + frames]


# --- augmentation --------------------------------------------------------------------------


class NoiseBank:
    """A few seconds each of white, pink-ish and brown-ish noise (unit RMS), sliced at random."""

    def __init__(self, rng: np.random.Generator, seconds: float = 20.0) -> None:
        n = int(seconds * MODEL_RATE)
        f = np.maximum(np.arange(n // 2 + 1), 1)
        self.banks = []
        for tilt in (0.0, 0.5, 1.0):
            spec = np.fft.rfft(rng.standard_normal(n)) / f ** (tilt / 2)
            noise = np.fft.irfft(spec, n).astype(np.float32)
            self.banks.append(noise / (np.std(noise) + 1e-9))

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        bank = self.banks[int(rng.integers(len(self.banks)))]
        start = int(rng.integers(0, bank.size - n))
        return bank[start:start + n]


def augment(x: np.ndarray, rng: np.random.Generator, noise: NoiseBank) -> np.ndarray:
    """Level -30..+24 dB (clipped), noise at 5-45 dB SNR or a quiet floor, sometimes 8-bit."""
    x = x * np.float32(10 ** (rng.uniform(-30, 24) / 20))
    speech_rms = float(np.sqrt(np.mean(x ** 2)) + 1e-6)
    level = speech_rms * 10 ** (-rng.uniform(5, 45) / 20) if rng.random() < 0.7 else 10 ** (rng.uniform(-90, -60) / 20)
    x = np.clip(x + noise.draw(x.size, rng) * np.float32(level), -1.0, 1.0)
    if rng.random() < 0.1:
        x = np.round(x * 127) / 127
    return x.astype(np.float32)


def band_tilt(n_mels: int, rng: np.random.Generator) -> np.ndarray:
    """log10 gain per mel band of a random microphone/telephone response (added to log-mel)."""
    from .features import mel_filterbank

    freqs = np.linspace(0, MODEL_RATE / 2, mel_filterbank(n_mels).shape[0])
    gain = np.ones_like(freqs)
    if rng.random() < 0.3:
        gain[(freqs < rng.uniform(0, 300)) | (freqs > rng.uniform(3400, 8000))] = 1e-3
    gain = gain * 10 ** (rng.uniform(-0.3, 0.3) * (freqs / 8000 - 0.5))  # spectral tilt, +-6 dB
    fb = mel_filterbank(n_mels)
    return np.log10((gain ** 2) @ fb / fb.sum(0)).astype(np.float32)

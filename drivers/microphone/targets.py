"""Mouth targets from phoneme timings: what the mouth does during each espeak-ng phoneme.

Each phoneme maps to a viseme: jaw opening (0 closed .. 1 wide open) and the mouth-shape
channels of ``model.OUTPUTS``. Bilabials (p, b, m, and so hums) close the lips whatever the
loudness; vowels open the jaw by their height; rounded vowels pucker, front vowels spread.
Diphthongs glide from their first to their second vowel. The per-frame targets are smoothed a
little (coarticulation).

``label_timeline`` gives the evaluation's ground truth: 1 where the mouth is open (vowels), 0
where it is closed (pauses, p/b/m, hums) and NaN elsewhere (other consonants).
"""

from __future__ import annotations

import numpy as np

from .model import OUTPUTS

#                       jaw  press pucker funnel stretch smile
_V = {
    "open":     (1.00, 0.0, 0.00, 0.00, 0.10, 0.00),
    "strut":    (0.75, 0.0, 0.00, 0.00, 0.05, 0.00),
    "back":     (0.75, 0.0, 0.20, 0.50, 0.00, 0.00),
    "mid":      (0.60, 0.0, 0.00, 0.00, 0.30, 0.10),
    "schwa":    (0.45, 0.0, 0.00, 0.00, 0.05, 0.00),
    "close":    (0.30, 0.0, 0.00, 0.00, 0.60, 0.30),
    "round":    (0.30, 0.0, 0.85, 0.30, 0.00, 0.00),
    "o":        (0.55, 0.0, 0.40, 0.60, 0.00, 0.00),
}
VOWELS = {
    "a": "open", "A": "open", "aa": "open", "A:": "open", "A@": "open", "a#": "schwa",
    "V": "strut", "0": "back", "O": "back", "O:": "back", "O@": "back", "o@": "back",
    "E": "mid", "e": "mid", "3": "schwa", "3:": "schwa", "@": "schwa", "@@": "schwa", "@L": "schwa",
    "@2": "schwa", "@5": "schwa", "I": "close", "i": "close", "i:": "close", "I#": "close", "I2": "close",
    "y": "close", "U": "round", "u": "round", "u:": "round", "o": "o",
}
DIPHTHONGS = {
    "aI": ("open", "close"), "aU": ("open", "round"), "eI": ("mid", "close"), "oU": ("o", "round"),
    "@U": ("schwa", "round"), "OI": ("back", "close"), "i@": ("close", "schwa"), "e@": ("mid", "schwa"),
    "U@": ("round", "schwa"), "a@": ("open", "schwa"), "i@3": ("close", "schwa"),
}
CLOSED = {"p", "b", "m"}
_C = {
    "closed":   (0.00, 1.0, 0.00, 0.00, 0.00, 0.00),
    "labiodental": (0.08, 0.4, 0.00, 0.00, 0.00, 0.00),
    "dental":   (0.15, 0.0, 0.00, 0.00, 0.10, 0.00),
    "alveolar": (0.18, 0.0, 0.00, 0.00, 0.10, 0.00),
    "sibilant": (0.12, 0.0, 0.00, 0.00, 0.35, 0.10),
    "postalveolar": (0.15, 0.0, 0.30, 0.70, 0.00, 0.00),
    "velar":    (0.30, 0.0, 0.00, 0.00, 0.00, 0.00),
    "r":        (0.20, 0.0, 0.45, 0.20, 0.00, 0.00),
    "w":        (0.12, 0.0, 0.90, 0.30, 0.00, 0.00),
    "rest":     (0.00, 0.0, 0.00, 0.00, 0.00, 0.00),
}
CONSONANTS = {
    "p": "closed", "b": "closed", "m": "closed", "f": "labiodental", "v": "labiodental",
    "T": "dental", "D": "dental", "t": "alveolar", "d": "alveolar", "n": "alveolar", "l": "alveolar",
    "?": "alveolar", "s": "sibilant", "z": "sibilant", "S": "postalveolar", "Z": "postalveolar",
    "tS": "postalveolar", "dZ": "postalveolar", "k": "velar", "g": "velar", "N": "velar", "x": "velar",
    "j": "velar", "r": "r", "w": "w", "W": "w",
}
SMOOTH_FRAMES = 1.5  # Gaussian sigma of the coarticulation smoothing, in 10 ms frames


def _base(ph: str) -> str:
    return ph.rstrip("-/;,").rstrip("#") if ph not in VOWELS and ph not in DIPHTHONGS else ph


def classify(ph: str) -> str:
    """'pause', 'vowel', 'closed' (p/b/m), 'h' or 'consonant'."""
    b = _base(ph)
    if not b or b.startswith("_") or b.startswith("|"):
        return "pause"
    if b in VOWELS or b in DIPHTHONGS or b[:2] in DIPHTHONGS or b[0] in "aAeEiIoOuUV03@y":
        return "vowel"
    if b in CLOSED:
        return "closed"
    if b == "h":
        return "h"
    return "consonant"


def viseme(ph: str) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) target vectors of one phoneme (equal except for diphthongs)."""
    b = _base(ph)
    kind = classify(ph)
    if kind == "pause":
        v = np.array(_C["rest"])
        return v, v
    if kind == "vowel":
        if b in DIPHTHONGS or b[:2] in DIPHTHONGS:
            first, second = DIPHTHONGS.get(b, DIPHTHONGS.get(b[:2]))
            return np.array(_V[first]), np.array(_V[second])
        name = VOWELS.get(b) or VOWELS.get(b[:1]) or VOWELS.get(b.rstrip(":")) or "schwa"
        v = np.array(_V[name])
        return v, v
    v = np.array(_C[CONSONANTS.get(b, CONSONANTS.get(b[:1], "alveolar"))])
    return v, v


def _segments(phonemes, n_samples: int):
    """(start, end, mnemonic) per phoneme; the last one ends with the audio."""
    starts = [s for s, _ in phonemes]
    for i, (s, ph) in enumerate(phonemes):
        end = starts[i + 1] if i + 1 < len(starts) else n_samples
        if end > s:
            yield s, end, ph


def frame_targets(phonemes, n_samples: int, rate: int, times_s: np.ndarray) -> np.ndarray:
    """(len(times_s), len(OUTPUTS)) targets at the given times (seconds)."""
    out = np.zeros((times_s.size, len(OUTPUTS)), np.float32)
    samples = times_s * rate
    segs = list(_segments(phonemes, n_samples))
    for i, (s, e, ph) in enumerate(segs):
        inside = (samples >= s) & (samples < e)
        if not inside.any():
            continue
        a, b = viseme(ph)
        if classify(ph) == "h" and i + 1 < len(segs):  # h takes the shape of what follows
            a = b = 0.7 * viseme(segs[i + 1][2])[0]
        frac = ((samples[inside] - s) / (e - s))[:, None]
        out[inside] = (1 - frac) * a + frac * b
    return _smooth(out, SMOOTH_FRAMES * 0.01 / max(np.median(np.diff(times_s)) if times_s.size > 1 else 0.01, 1e-3))


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    if sigma <= 0.3 or x.shape[0] < 3:
        return x
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(x, ((r, r), (0, 0)), mode="edge")
    return np.stack([np.convolve(padded[:, c], k, mode="valid") for c in range(x.shape[1])], axis=1).astype(np.float32)


def label_timeline(phonemes, n_samples: int, rate: int, times_s: np.ndarray, pauses: bool = True) -> np.ndarray:
    """1 open (vowel), 0 closed (pause, p/b/m, hum), NaN other consonants; at ``times_s``.
    With ``pauses=False`` pauses (and the silence around the speech) are NaN too."""
    pause = 0.0 if pauses else np.nan
    out = np.full(times_s.size, np.nan, np.float32)
    samples = times_s * rate
    out[samples < (phonemes[0][0] if phonemes else n_samples)] = pause
    for s, e, ph in _segments(phonemes, n_samples):
        kind = classify(ph)
        value = {"vowel": 1.0, "pause": pause, "closed": 0.0}.get(kind, np.nan)
        out[(samples >= s) & (samples < e)] = value
    out[samples >= n_samples] = pause
    return out

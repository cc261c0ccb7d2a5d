"""Speech with phoneme timings from espeak-ng (libespeak-ng through ctypes, no network).

``Speaker.say(text)`` returns the waveform and the start of every phoneme (espeak-ng's
phoneme events, exact to the sample). Text may hold phoneme input in ``[[...]]`` (espeak-ng's
mnemonics), e.g. ``[[mmmmm]]`` for a hum.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

import numpy as np

AUDIO_OUTPUT_SYNCHRONOUS = 2
INITIALIZE_PHONEME_EVENTS = 0x0001
EVENT_LIST_TERMINATED = 0
EVENT_PHONEME = 7
CHARS_AUTO = 0
PHONEMES_INPUT = 0x100
PARAM_RATE, PARAM_PITCH, PARAM_RANGE = 1, 3, 4


class SpeechError(RuntimeError):
    """espeak-ng is missing or refused a voice."""


class _Id(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
        ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p), ("id", _Id),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Utterance:
    """audio: (n,) float32 at ``rate``; phonemes: (start sample, espeak-ng mnemonic) in order."""

    audio: np.ndarray
    rate: int
    phonemes: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice (``en-us+m3``), speed in words per minute, pitch and range 0..100."""

    name: str
    speed: int = 175
    pitch: int = 50
    range: int = 50


def _load_library() -> ctypes.CDLL:
    name = ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1"
    try:
        return ctypes.CDLL(name)
    except OSError:
        raise SpeechError("libespeak-ng is not installed; install it with `apt install espeak-ng`") from None


class Speaker:
    """One espeak-ng engine. libespeak-ng is process-global: make one Speaker per process."""

    def __init__(self) -> None:
        self._lib = _load_library()
        self.rate = int(self._lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, None, INITIALIZE_PHONEME_EVENTS))
        if self.rate <= 0:
            raise SpeechError("espeak-ng failed to start (is espeak-ng-data installed? `apt install espeak-ng`)")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []
        self._callback = _CALLBACK(self._on_synth)  # keep a reference for the C side
        self._lib.espeak_SetSynthCallback(self._callback)

    def _on_synth(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == EVENT_PHONEME:
                self._events.append((int(e.sample), e.id.string.decode("ascii", "replace")))
            i += 1
        return 0

    def set_voice(self, voice: Voice) -> None:
        if self._lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
            raise SpeechError(f"espeak-ng has no voice {voice.name!r} (see `espeak-ng --voices`)")
        for param, value in ((PARAM_RATE, voice.speed), (PARAM_PITCH, voice.pitch), (PARAM_RANGE, voice.range)):
            self._lib.espeak_SetParameter(param, int(value), 0)

    def say(self, text: str, voice: Voice | None = None) -> Utterance:
        if voice is not None:
            self.set_voice(voice)
        self._chunks, self._events = [], []
        data = text.encode("utf-8")
        self._lib.espeak_Synth(data, len(data) + 1, 0, 0, 0, CHARS_AUTO | PHONEMES_INPUT, None, None)
        self._lib.espeak_Synchronize()
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return Utterance(audio.astype(np.float32) / 32768.0, self.rate, tuple(self._events))


def write_wav(path, audio: np.ndarray, rate: int) -> None:
    """Mono float32 [-1, 1] -> a 16-bit PCM WAV file."""
    import wave

    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())

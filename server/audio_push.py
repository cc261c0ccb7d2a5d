"""Audio an integrator pushes over a WebSocket (a TTS engine, a telephony bridge), turned into the
``AudioChunk``s the session's audio-driven layers read.

The socket is ``/api/sessions/{id}/audio``. The format comes from the query string
(``?rate=16000&channels=1&encoding=s16le``) or a text message ``{"type": "format", "rate":
24000, "channels": 1, "encoding": "f32le"}``; binary messages then carry raw PCM in it.
Telephony bridges that send JSON media events (``{"event": "media", "media": {"payload":
BASE64}}``, 8 kHz mu-law unless a format says otherwise) work as they are.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from flamecast.plugins.protocol import AudioChunk

from .security import JSONRejected, loads

ENCODINGS = ("s16le", "f32le", "u8", "mulaw")
MAX_MESSAGE_BYTES = 256 * 1024
RATE_RANGE = (8000, 192000)
MAX_CHANNELS = 8


class AudioPushError(ValueError):
    """A format or a message the socket cannot use; the message says what to send instead."""


@dataclass(frozen=True)
class PushFormat:
    rate: int = 16000
    channels: int = 1
    encoding: str = "s16le"

    @classmethod
    def parse(cls, values: Mapping[str, Any], base: PushFormat | None = None) -> PushFormat:
        base = base or cls()
        try:
            rate = int(values.get("rate", values.get("sample_rate", base.rate)))
            channels = int(values.get("channels", base.channels))
        except (TypeError, ValueError):
            raise AudioPushError("'rate' and 'channels' must be integers") from None
        encoding = str(values.get("encoding", base.encoding)).lower()
        if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
            raise AudioPushError(f"rate must be {RATE_RANGE[0]}..{RATE_RANGE[1]} Hz, got {rate}")
        if not 1 <= channels <= MAX_CHANNELS:
            raise AudioPushError(f"channels must be 1..{MAX_CHANNELS}, got {channels}")
        if encoding not in ENCODINGS:
            raise AudioPushError(f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}")
        return cls(rate, channels, encoding)

    @property
    def sample_bytes(self) -> int:
        return {"s16le": 2, "f32le": 4, "u8": 1, "mulaw": 1}[self.encoding]


def decode_pcm(data: bytes, fmt: PushFormat) -> np.ndarray:
    """Raw bytes in ``fmt`` -> (samples, channels) int16."""
    frame = fmt.sample_bytes * fmt.channels
    if len(data) % frame:
        raise AudioPushError(f"{len(data)} bytes is not a whole number of {fmt.channels}-channel {fmt.encoding} samples")
    if fmt.encoding == "s16le":
        pcm = np.frombuffer(data, "<i2")
    elif fmt.encoding == "f32le":
        values = np.frombuffer(data, "<f4")
        values = np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=-1.0)
        pcm = (np.clip(values, -1.0, 1.0) * 32767).astype(np.int16)
    elif fmt.encoding == "u8":
        pcm = ((np.frombuffer(data, np.uint8).astype(np.int16) - 128) * 256).astype(np.int16)
    else:
        pcm = mulaw_to_int16(np.frombuffer(data, np.uint8))
    return np.ascontiguousarray(pcm.reshape(-1, fmt.channels))


def mulaw_to_int16(codes: np.ndarray) -> np.ndarray:
    """ITU-T G.711 mu-law bytes to 16-bit linear PCM."""
    u = ~codes.astype(np.int32) & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = ((mantissa << 3) + 0x84) << exponent
    return np.where(sign != 0, 0x84 - magnitude, magnitude - 0x84).astype(np.int16)


class AudioPush:
    """One socket's state: the current format and a sequence number."""

    def __init__(self, session_id: str, fmt: PushFormat) -> None:
        self.session_id = session_id
        self.fmt = fmt
        self.seq = 0
        self.samples = 0

    def binary(self, data: bytes) -> AudioChunk | None:
        if len(data) > MAX_MESSAGE_BYTES:
            raise AudioPushError(f"a message is {len(data)} bytes; send at most {MAX_MESSAGE_BYTES} bytes at a time")
        return self._chunk(decode_pcm(data, self.fmt)) if data else None

    def text(self, text: str) -> tuple[AudioChunk | None, dict[str, Any] | None]:
        """A text message: a format change (returns a reply) or a JSON media event (a chunk)."""
        try:
            message = loads(text, max_bytes=MAX_MESSAGE_BYTES)
        except JSONRejected as exc:
            raise AudioPushError(f"text messages must be JSON (a format or a media event): {exc}") from None
        if not isinstance(message, dict):
            raise AudioPushError("text messages must be JSON objects")
        if message.get("type") == "format":
            self.fmt = PushFormat.parse(message, self.fmt)
            return None, {"type": "format", "rate": self.fmt.rate, "channels": self.fmt.channels,
                          "encoding": self.fmt.encoding}
        if message.get("event") == "media":
            media = message.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str):
                raise AudioPushError("a media event needs media.payload (base64 audio)")
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise AudioPushError("media.payload is not base64") from None
            return self.binary(data), None
        if message.get("event") in ("start", "connected", "stop", "mark"):
            return None, None  # telephony bridges' bookkeeping events
        raise AudioPushError('unknown message; send {"type": "format", ...}, a media event or binary PCM')

    def _chunk(self, samples: np.ndarray) -> AudioChunk:
        chunk = AudioChunk(self.session_id, self.seq, time.time_ns(), self.fmt.rate, samples)
        self.seq += 1
        self.samples += samples.shape[0]
        return chunk

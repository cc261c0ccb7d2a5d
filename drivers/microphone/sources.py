"""Where the audio comes from: a file, a local input device, or chunks the session receives.

Every source hands out ``Chunk``s: (samples, channels) PCM at its own rate. ``FileSource`` is
pulled (the driver reads as far as the frame it is making needs, so a file plays in real time
under the runtime and as fast as possible on a fake clock); ``DeviceSource`` and
``ClientSource`` are polled for what has arrived and report when audio stops, and why.
"""

from __future__ import annotations

import asyncio
import queue
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .audio import AudioFormatError, check_pcm, check_rate

DEVICE_QUEUE = 64      # blocks buffered between the PortAudio thread and the driver (newest win)
PORTAUDIO_FIX = ("sounddevice needs the PortAudio library: install it with `apt install libportaudio2` "
                 "(Debian/Ubuntu) or `brew install portaudio` (macOS), and `pip install sounddevice`")


class SourceError(RuntimeError):
    """A source that cannot start; the message says what to do."""


@dataclass(frozen=True)
class Chunk:
    """samples: (n, channels) PCM of a supported dtype; rate: Hz."""

    samples: np.ndarray
    rate: int


# --- file ----------------------------------------------------------------------------------


def probe_file(path: str | Path) -> str:
    """Check that ``path`` is audio av can decode; return a description. SourceError if not."""
    import av

    p = Path(path).expanduser()
    if not p.is_file():
        raise SourceError(f"audio file {str(p)!r} does not exist")
    try:
        with av.open(str(p)) as container:
            if not container.streams.audio:
                raise SourceError(f"{str(p)!r} has no audio stream; give a WAV, MP3, FLAC, OGG, M4A, ... file")
            s = container.streams.audio[0]
            return f"{s.codec_context.name} {s.rate} Hz {s.channels} ch"
    except av.FFmpegError as exc:
        raise SourceError(f"{str(p)!r} is not an audio file av can decode ({exc.__class__.__name__}); "
                          "give a WAV, MP3, FLAC, OGG, M4A, ... file") from None


class FileSource:
    """Decodes a file lazily into packed int16 chunks (mono, or stereo for 2+ channels)."""

    name = "file"

    def __init__(self, path: str | Path, loop: bool = False) -> None:
        probe_file(path)
        self.path, self.loop = Path(path).expanduser(), loop
        self.exhausted = False
        self._container = None
        self._iter: Iterator[Chunk] | None = None

    def _open(self) -> Iterator[Chunk]:
        import av

        self._container = av.open(str(self.path))
        stream = self._container.streams.audio[0]
        rate = int(min(max(stream.rate or 16000, 8000), 192000))
        layout = "mono" if (stream.channels or 1) == 1 else "stereo"
        resampler = av.AudioResampler(format="s16", layout=layout, rate=rate)
        channels = 1 if layout == "mono" else 2
        try:
            for frame in self._container.decode(stream):
                for out in resampler.resample(frame):
                    yield Chunk(out.to_ndarray().reshape(-1, channels), rate)
            for out in resampler.resample(None):
                yield Chunk(out.to_ndarray().reshape(-1, channels), rate)
        except av.FFmpegError as exc:
            raise SourceError(f"decoding {str(self.path)!r} failed: {exc}") from None

    def read(self) -> Chunk | None:
        """The next chunk, or None at the end (after which ``exhausted`` is True)."""
        while True:
            if self._iter is None:
                self._iter = self._open()
            chunk = next(self._iter, None)
            if chunk is not None:
                return chunk
            self.close()
            if not self.loop:
                self.exhausted = True
                return None
            self._iter = None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


# --- local input device -------------------------------------------------------------------


def import_sounddevice():
    try:
        import sounddevice
    except ImportError:
        raise SourceError("the microphone's device source needs sounddevice: `pip install sounddevice` "
                          "(or `pip install flamecast[audio]`); " + PORTAUDIO_FIX) from None
    except OSError:
        raise SourceError(PORTAUDIO_FIX) from None
    return sounddevice


def find_device(spec: str | None) -> tuple[int, dict[str, Any]]:
    """The input device by index (``"3"``), by name (case-insensitive substring) or the default."""
    sd = import_sounddevice()
    devices = [(i, d) for i, d in enumerate(sd.query_devices()) if d.get("max_input_channels", 0) > 0]
    hint = ("pick one with `-o device=NAME` or `-o device=INDEX` (list them: `python -m sounddevice`), "
            "or use `-o file=speech.wav` or the browser's microphone")
    if not devices:
        raise SourceError("no audio input device found (PortAudio lists none): plug a microphone in, or " + hint.split(", or ", 1)[1])
    if spec is None or spec == "":
        default = sd.default.device[0] if isinstance(sd.default.device, (list, tuple)) else sd.default.device
        for i, d in devices:
            if i == default:
                return i, d
        return devices[0]
    if spec.strip().isdigit():
        for i, d in devices:
            if i == int(spec):
                return i, d
        raise SourceError(f"no input device with index {spec}; " + hint)
    matches = [(i, d) for i, d in devices if spec.lower() in str(d.get("name", "")).lower()]
    if not matches:
        names = ", ".join(f"{i}: {d.get('name')}" for i, d in devices)
        raise SourceError(f"no input device named like {spec!r} (inputs: {names}); " + hint)
    return matches[0]


class DeviceSource:
    """A sounddevice InputStream. The PortAudio thread queues blocks; ``poll`` takes them.
    A device that stops (unplugged, error) sets ``problem``; ``reopen`` tries again."""

    name = "device"

    def __init__(self, spec: str | None, rate: int | None, channels: int | None, block_ms: float = 10.0) -> None:
        self.spec, self.want_rate, self.want_channels, self.block_ms = spec, rate, channels, block_ms
        self._q: queue.Queue[np.ndarray] = queue.Queue(maxsize=DEVICE_QUEUE)
        self._stream = None
        self.rate = 0
        self.dropped = 0
        self.problem: str | None = None
        self.label = ""

    def open(self) -> None:
        sd = import_sounddevice()
        index, info = find_device(self.spec)
        rate = int(self.want_rate or info.get("default_samplerate") or 48000)
        channels = int(self.want_channels or min(2, max(1, info.get("max_input_channels", 1))))
        check_rate(rate)
        self.label = f"{index}: {info.get('name')}"
        try:
            stream = sd.InputStream(device=index, samplerate=rate, channels=channels, dtype="float32",
                                    blocksize=max(1, int(rate * self.block_ms / 1000)),
                                    callback=self._on_block, finished_callback=self._on_finished)
            stream.start()
        except Exception as exc:  # PortAudioError, ValueError for unsupported settings
            raise SourceError(f"cannot open input device {self.label} at {rate} Hz x{channels}: {exc}; "
                              "try -o device_rate=48000 or -o channels=1") from None
        self._stream, self.rate, self.problem = stream, rate, None

    def _on_block(self, indata, frames, time_info, status) -> None:  # PortAudio's thread
        block = np.array(indata, dtype=np.float32, copy=True)
        try:
            self._q.put_nowait(block)
        except queue.Full:
            try:
                self._q.get_nowait()
                self.dropped += 1
            except queue.Empty:
                pass
            self._q.put_nowait(block)

    def _on_finished(self) -> None:  # PortAudio's thread
        if self.problem is None:
            self.problem = f"input device {self.label} stopped delivering audio (unplugged or failed)"

    def poll(self) -> list[Chunk]:
        out = []
        while True:
            try:
                out.append(Chunk(self._q.get_nowait(), self.rate))
            except queue.Empty:
                return out

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort()
                stream.close()
            except Exception:
                pass


# --- the session's incoming audio ---------------------------------------------------------


def chunk_from(item: Any) -> Chunk:
    """An incoming audio item as a Chunk. Accepted: an ``AudioChunk`` (``samples``,
    ``sample_rate``), a mapping with ``samples`` and ``sample_rate``, or ``(samples, rate)``."""
    if hasattr(item, "samples") and hasattr(item, "sample_rate"):
        samples, rate = item.samples, item.sample_rate
    elif isinstance(item, dict) and "samples" in item and "sample_rate" in item:
        samples, rate = item["samples"], item["sample_rate"]
    elif isinstance(item, (tuple, list)) and len(item) == 2:
        samples, rate = item
    else:
        raise AudioFormatError("an audio chunk is an AudioChunk, {'samples', 'sample_rate'} or (samples, rate)")
    return Chunk(check_pcm(samples), check_rate(rate))


class ClientSource:
    """Reads ``context.audio_in`` (the browser's microphone track, or PCM an integrator sends)."""

    name = "client"

    def __init__(self, q: asyncio.Queue) -> None:
        self.q = q
        self.bad = 0
        self.last_error: str | None = None

    def poll(self) -> list[Chunk]:
        out = []
        while True:
            try:
                item = self.q.get_nowait()
            except asyncio.QueueEmpty:
                return out
            try:
                out.append(chunk_from(item))
            except AudioFormatError as exc:
                self.bad += 1
                self.last_error = str(exc)

    def close(self) -> None:
        pass


def monotonic() -> float:
    return time.monotonic()

"""The microphone driver: speech to jaw, mouth shapes, a little head motion and brows.

Sources: a file (``file=``), a local input device (``device=``, sounddevice) or the audio the
session receives (``context.audio_in``: the browser's microphone, or PCM an integrator sends).
With ``source=auto`` the first that applies wins: file, device, the session's audio, the
default input device.

A frame shows the mouth at one point of the audio timeline (see ``tracker``). With a file,
frame ``i`` shows audio time ``(i + 0.5) / fps``: the driver reads the file as far as that frame
needs, so the runtime's pacing plays it in real time and a fake clock as fast as possible. With a
live source a frame shows the newest audio the model can speak for (``lookahead`` behind the
newest sample). The audio passes through stamped with the frame that shows it (``passthrough``).
When live audio stops (device unplugged, browser track ended), the avatar goes on idle and the
clients get an ``{"type": "audio", "state": "lost", "reason": ...}`` event; ``"resumed"`` when it
comes back.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, AsyncIterator, Literal

import numpy as np
from pydantic import Field, model_validator

from flamecast.plugins import Channel, Driver, DriverOptions, FlameFrame, pose_slice

from .prosody import HeadState, Prosody
from .sources import Chunk, ClientSource, DeviceSource, FileSource, SourceError, find_device, probe_file
from .passthrough import Passthrough

if TYPE_CHECKING:
    from .tracker import MouthState

log = logging.getLogger(__name__)

JAW_OPEN_RAD = 0.25      # jaw pitch at full opening (the built-in head's wide-open mouth is ~0.3)
JAW_REST_RAD = 0.01
MOUTH_CHANNELS = ("lip_press", "mouth_pucker", "mouth_funnel", "mouth_stretch", "smile")
RETRY_SECONDS = 3.0      # a live source that failed is tried again this often
STALE_SECONDS = 0.15     # live rows older than this: the mouth relaxes to closed
VOICE_HOLD_S = 0.6       # the layer stays active this long after the last sound above the gate


def learned_dir_default() -> Path:
    root = os.environ.get("FLAMECAST_WEIGHTS") or Path.home() / ".cache" / "flamecast" / "weights"
    return Path(root) / "microphone"


class MicrophoneOptions(DriverOptions):
    """Options of the microphone driver."""

    source: Literal["auto", "file", "device", "client"] = Field(
        "auto", description="Where audio comes from: a file, a local input device, the session's incoming audio "
        "(browser microphone or pushed PCM), or auto (file, else device, else the session's audio, else the default device).")
    file: str | None = Field(None, description="Audio file (anything av decodes) for source=file.")
    loop: bool = Field(False, description="Play the file again from the start when it ends.")
    device: str | None = Field(None, description="Input device by index or by (part of its) name; default: the system default.")
    device_rate: int | None = Field(None, ge=8000, le=192000, description="Capture sample rate; default: the device's.")
    channels: int | None = Field(None, ge=1, le=32, description="Capture channels (mixed down to mono); default: up to 2.")
    fps: float = Field(25.0, gt=0, le=120, description="Frames per second.")
    model: Literal["auto", "builtin", "learned"] = Field(
        "auto", description="builtin: the shipped VisemeNet; learned: the model in learned_dir; auto: learned if present.")
    learned_dir: str | None = Field(None, description="Folder of a learned speech-to-FLAME model "
                                    "(default $FLAMECAST_WEIGHTS/microphone or ~/.cache/flamecast/weights/microphone).")
    passthrough: bool = Field(True, description="Pass the audio on to the session's clients, in sync with the video.")
    jaw: float = Field(1.0, ge=0, le=2, description="Scale of the mouth movements (1 = natural).")
    head_motion: float = Field(1.0, ge=0, le=3, description="Scale of the head motion and brows (1 = natural).")
    smile: float = Field(0.1, ge=0, le=1, description="Resting smile level of the built-in head.")
    gate_db: float = Field(-70.0, ge=-120, le=0, description="Audio below this level (dBFS) is silence: mouth closed.")
    stall_seconds: float = Field(1.0, ge=0.1, le=30, description="Live audio missing this long is reported as lost.")

    @model_validator(mode="after")
    def _check_sources(self) -> "MicrophoneOptions":
        if self.source == "file" and not self.file:
            raise ValueError("source=file needs the file: -o file=PATH")
        if self.file and self.source in ("auto", "file"):
            try:
                probe_file(self.file)
            except SourceError as exc:
                raise ValueError(str(exc)) from None
        elif self.source == "device" or (self.source == "auto" and self.device):
            try:
                find_device(self.device)
            except SourceError as exc:
                raise ValueError(str(exc)) from None
        return self


class MicrophoneDriver(Driver):
    name = "microphone"
    description = "Lip-sync from speech: a microphone, the browser's microphone, pushed audio or a file."
    rate = 25.0
    needs_audio = True
    provides_audio = True
    # jaw and mouth from the speech, head nods and brows (emotion) from its prosody; the eyes
    # (gaze, blinks) are left to the layers below (the idle base)
    channels = frozenset({Channel.HEAD, Channel.JAW, Channel.MOUTH, Channel.EMOTION})
    # when speech starts after a pause the layer takes the mouth over within a frame: a fade
    # would open the mouth late and small on the first syllable
    fade_in = 0.04
    Options = MicrophoneOptions

    def __init__(self, options: MicrophoneOptions, context) -> None:
        super().__init__(options, context)
        self.rate = options.fps
        self.prosody = Prosody(options.fps, options.seed, options.head_motion)
        self.passthrough = Passthrough(context.emit_audio, context.session_id)
        self.tracker = None
        self.source = None
        self.source_name = self._pick_source()
        self.audio_state = "waiting"
        self.last_audio = context.clock.monotonic()
        self.next_retry = 0.0
        self.frame_index = 0
        self._last_row = None
        self._last_row_at = 0.0
        self._last_voice = -VOICE_HOLD_S - 1.0

    @property
    def active(self) -> bool:
        """Sound above the gate within the last VOICE_HOLD_S seconds. In a stack of layers, the
        layers below (a webcam, the idle base) drive the mouth and head while the speaker is
        silent or the audio is lost, and hand them back with a cross-fade when speech resumes."""
        return self.context.clock.monotonic() - self._last_voice <= VOICE_HOLD_S

    def _pick_source(self) -> str:
        o = self.options
        if o.source != "auto":
            return o.source
        if o.file:
            return "file"
        if o.device or self.context.audio_in is None:
            return "device"
        return "client"

    # --- setup --------------------------------------------------------------------------

    async def _load_model(self):
        from .learned import find_learned, load_tracker

        o = self.options
        learned = find_learned(Path(o.learned_dir) if o.learned_dir else learned_dir_default())
        if o.model == "learned" and learned is None:
            raise SourceError(f"model=learned: no learned model in {o.learned_dir or learned_dir_default()} "
                              "(see docs/microphone.md, 'A learned model')")
        if learned is not None and o.model != "builtin":
            return await asyncio.to_thread(load_tracker, learned, gate_db=o.gate_db)
        return load_tracker(None, gate_db=o.gate_db)

    def _open_source(self) -> None:
        o = self.options
        if self.source_name == "file":
            self.source = FileSource(o.file, loop=o.loop)
        elif self.source_name == "client":
            if self.context.audio_in is None:
                raise SourceError("source=client: this session receives no audio (no audio_in)")
            self.source = ClientSource(self.context.audio_in)
        else:
            source = DeviceSource(o.device, o.device_rate, o.channels)
            source.open()
            self.source = source

    # --- frames -------------------------------------------------------------------------

    async def frames(self) -> AsyncIterator[FlameFrame]:
        self.tracker = await self._load_model()
        if self.source_name == "file":
            self._open_source()
            async for frame in self._file_frames():
                yield frame
            return
        while True:
            yield await self._live_frame()

    async def _file_frames(self) -> AsyncIterator[FlameFrame]:
        end = None  # audio time where the file ended
        while True:
            t_mouth = (self.frame_index + 0.5) / self.rate
            need = t_mouth + self.tracker.lookahead_s + 0.5 / self.rate
            while self.tracker.audio_time_s < need and end is None:
                chunk = self.source.read()
                if chunk is not None:
                    await self._feed(chunk)
                elif self.source.exhausted:
                    end = self.tracker.audio_time_s
                    await self._flush(self.tracker.lookahead_s + 2.0 / self.rate)
            if end is not None and t_mouth - 0.5 / self.rate >= end:
                return
            mouth = self.tracker.state_at(t_mouth)
            yield self._frame(mouth, t_mouth)

    async def _live_frame(self) -> FlameFrame:
        now = self.context.clock.monotonic()
        if self.source is None and now >= self.next_retry:
            self._try_open(now)
        got = False
        if self.source is not None:
            for chunk in merge_chunks(self.source.poll()):
                await self._feed(chunk)
                got = True
            self._check_health(now, got)
        mouth = self._fresh_latest(now)
        t_mouth = mouth.time_s if mouth is not None else None
        return self._frame(mouth, t_mouth)

    def _fresh_latest(self, now: float) -> MouthState | None:
        row_t = self.tracker.latest_time_s
        if row_t is None:
            return None
        if row_t != self._last_row:
            self._last_row, self._last_row_at = row_t, now
        if now - self._last_row_at > STALE_SECONDS:
            return None
        return self.tracker.state_at(row_t)

    def _try_open(self, now: float) -> None:
        try:
            self._open_source()
            self.last_audio = now
        except SourceError as exc:
            self.next_retry = now + RETRY_SECONDS
            if self.audio_state != "unavailable":
                self.audio_state = "unavailable"
                self._event("unavailable", str(exc))

    def _check_health(self, now: float, got: bool) -> None:
        src = self.source
        problem = getattr(src, "problem", None)
        if isinstance(src, ClientSource) and src.bad and src.last_error:
            self._event("bad-chunk", f"{src.bad} audio chunk(s) dropped: {src.last_error}")
            src.bad, src.last_error = 0, None
        if got:
            self.last_audio = now
            if self.audio_state != "live":
                if self.audio_state in ("lost", "unavailable"):
                    self._event("resumed", f"audio from the {self.source_name} source again")
                self.audio_state = "live"
            return
        if problem is not None:
            src.close()
            self.source, self.next_retry = None, now + RETRY_SECONDS
            self.audio_state = "lost"
            self._event("lost", problem)
        elif self.audio_state == "live" and now - self.last_audio > self.options.stall_seconds:
            self.audio_state = "lost"
            what = "the session's incoming audio" if self.source_name == "client" else f"the {self.source_name}"
            self._event("lost", f"no audio from {what} for {now - self.last_audio:.1f} s")

    def _event(self, state: str, reason: str) -> None:
        log.info("microphone %s: %s", state, reason)
        self.context.emit({"type": "audio", "driver": self.name, "state": state, "source": self.source_name, "reason": reason})

    async def _feed(self, chunk) -> None:
        t0 = self.tracker.audio_time_s
        if self.options.passthrough:
            self.passthrough.add(chunk, t0)
        if self.tracker.runs_in_thread:
            await asyncio.to_thread(self.tracker.push, chunk.samples, chunk.rate)
        else:
            self.tracker.push(chunk.samples, chunk.rate)

    async def _flush(self, seconds: float) -> None:
        """Silence after the end of a file, so the model speaks for its last samples too."""
        silence = np.zeros((int(seconds * 16000), 1), np.float32)
        if self.tracker.runs_in_thread:
            await asyncio.to_thread(self.tracker.push, silence, 16000)
        else:
            self.tracker.push(silence, 16000)

    # --- one frame ----------------------------------------------------------------------

    def _frame(self, mouth: MouthState | None, t_mouth: float | None) -> FlameFrame:
        if self.options.passthrough and t_mouth is not None:
            self.passthrough.emit_until(t_mouth + 0.5 / self.rate, self.context.clock.now_ns())
        if mouth is not None and mouth.level_db > self.options.gate_db:
            self._last_voice = self.context.clock.monotonic()
        head = self.prosody.step(mouth.level_db if mouth else -100.0, mouth.f0 if mouth else 0.0)
        self.frame_index += 1
        return build_frame(self.context.head, mouth, head, self.options)

    async def aclose(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None


def merge_chunks(chunks: list[Chunk]) -> list[Chunk]:
    """Consecutive chunks of one rate, channel count and dtype joined (one model call per frame)."""
    out: list[Chunk] = []
    for c in chunks:
        last = out[-1] if out else None
        if last is not None and (last.rate, last.samples.shape[1], last.samples.dtype) == (c.rate, c.samples.shape[1], c.samples.dtype):
            out[-1] = Chunk(np.concatenate([last.samples, c.samples]), c.rate)
        else:
            out.append(c)
    return out


def build_frame(head_space, mouth: MouthState | None, head: HeadState, o: MicrophoneOptions) -> FlameFrame:
    """The FlameFrame for one mouth state and head state (silence: mouth closed)."""
    ch = mouth.channels if mouth is not None else {}
    pose = np.zeros(15, np.float32)
    pose[pose_slice("global")] = head.head * 0.4
    pose[pose_slice("neck")] = head.head * 0.6
    pose[pose_slice("jaw")] = [JAW_REST_RAD + JAW_OPEN_RAD * o.jaw * float(np.clip(ch.get("jaw", 0.0), 0, 1)), 0, 0]
    expr = np.zeros(head_space.n_expression, np.float32)
    names = head_space.expression_names or ()
    levels = {name: o.jaw * float(np.clip(ch.get(name, 0.0), 0, 1)) for name in MOUTH_CHANNELS}
    levels["smile"] = min(1.0, o.smile + levels["smile"])
    levels.update(brow_raise=head.brow, eye_blink_left=head.blink, eye_blink_right=head.blink)
    for name, value in levels.items():
        if name in names:
            expr[names.index(name)] = value
    return FlameFrame(pose=pose, expression=expr, eyelids=np.array([head.blink, head.blink], np.float32))

"""The Driver base class: what a driver plugin implements.

A driver turns some input (nothing, text, audio, video, ...) into a stream of FlameFrames. The
driver runtime paces it to ``rate``, stamps each frame and publishes it; a driver only yields.
"""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .clock import Clock, MonotonicClock
from .frame import FlameFrame
from .head import HeadSpace, builtin_head_space
from .layers import ALL_CHANNELS, Channel

ControlKind = Literal["prompt", "emotion", "interrupt", "option"]
MAX_PROMPT_CHARS = 500


class DriverOptions(BaseModel):
    """Base of every driver's ``Options``: unknown fields are rejected, values validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="Seed for the driver's random choices.")


class Control(BaseModel):
    """A control message from a client to the session's driver.

    kind: "prompt" (``text``: a description of what to do), "emotion" (``text``: an emotion
    name), "interrupt" (stop what you are doing and return to idle) or "option" (``data``: a
    partial update of the driver's options). ``layer`` names the driver layer the message is
    for; without it, the highest layer whose driver takes the kind gets it.
    """

    model_config = ConfigDict(extra="forbid")

    kind: ControlKind
    text: str | None = Field(None, max_length=MAX_PROMPT_CHARS)
    data: dict[str, Any] = Field(default_factory=dict)
    layer: str | None = Field(None, max_length=64)


class ControlNotSupported(Exception):
    """Raised by ``Driver.control`` for a control kind the driver does not handle."""


class OptionsError(ValueError):
    """Options that do not validate; the message names each field and what it expects."""


def format_validation_error(exc: ValidationError, what: str = "option") -> str:
    """One line per problem: the field, what was expected and what was given."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(options)"
        given = err.get("input")
        suffix = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {given!r})"
        msg = "unknown option" if err["type"] == "extra_forbidden" else err["msg"]
        lines.append(f"{what} {loc!r}: {msg}{suffix}")
    return "; ".join(lines)


@dataclass
class DriverContext:
    """What the runtime hands a driver.

    Attributes:
        session_id: the session the driver drives.
        rate: frames per second the runtime pulls at.
        head: the head space (expression channel count and names).
        clock: the runtime's clock; tests pass a FakeClock.
        audio_in: incoming audio chunks (``AudioChunk``) for drivers that need audio.
        video_in: incoming video frames ((H, W, 3) uint8 RGB, capture_ns) for drivers that
            need video.
        emit: send an event (a small JSON-able dict) to the session's clients.
        emit_audio: pass audio through to the clients (drivers that provide audio).
    """

    session_id: str = "local"
    rate: float = 25.0
    head: HeadSpace = field(default_factory=builtin_head_space)
    clock: Clock = field(default_factory=MonotonicClock)
    audio_in: asyncio.Queue | None = None
    video_in: asyncio.Queue | None = None
    emit: Callable[[dict[str, Any]], None] = lambda event: None
    emit_audio: Callable[[Any], None] = lambda chunk: None


class Driver(abc.ABC):
    """Base class of every driver.

    Subclasses set ``name`` and ``description``, define ``Options`` (a ``DriverOptions``
    subclass with documented fields) and implement ``frames``. The runtime builds one instance
    per session (and a fresh one after a crash), pulls frames at ``rate`` and stamps them.

    Class attributes:
        name: the name clients pick the driver by.
        description: one line shown in plugin lists and the client.
        rate: default frames per second.
        needs_audio / needs_video: the driver reads ``context.audio_in`` / ``context.video_in``.
        provides_audio: the driver passes audio through with ``context.emit_audio``.
        channels: the channel groups the driver drives (``flamecast.plugins.Channel``: head,
            jaw, mouth, eyes, emotion). In a stack of layers the driver owns only these; the
            layers below drive the rest. Default: all of them.
        fade_in: seconds the driver's layer takes to take its groups over when it becomes
            active (None: the session's cross-fade, 0.25 s). A lip-sync driver uses one frame,
            so the first syllable after a pause is not swallowed by the fade.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    rate: ClassVar[float] = 25.0
    needs_audio: ClassVar[bool] = False
    needs_video: ClassVar[bool] = False
    provides_audio: ClassVar[bool] = False
    channels: ClassVar[frozenset[Channel]] = ALL_CHANNELS
    fade_in: ClassVar[float | None] = None
    Options: ClassVar[type[DriverOptions]] = DriverOptions

    def __init__(self, options: DriverOptions, context: DriverContext) -> None:
        self.options = options
        self.context = context

    @classmethod
    def parse_options(cls, values: dict[str, Any] | None = None, *, from_strings: bool = False) -> DriverOptions:
        """Validate raw option values; OptionsError names each bad field and its type."""
        try:
            if from_strings:
                return cls.Options.model_validate_strings(values or {})
            return cls.Options.model_validate(values or {})
        except ValidationError as exc:
            raise OptionsError(format_validation_error(exc)) from None

    @classmethod
    def rate_for(cls, options: DriverOptions) -> float:
        """Frames per second for these options: an ``fps`` option when the driver has one."""
        return float(getattr(options, "fps", cls.rate))

    @abc.abstractmethod
    def frames(self) -> AsyncIterator[FlameFrame]:
        """Yield FlameFrames forever (or until the input ends). The runtime paces the pulls."""

    @property
    def active(self) -> bool:
        """Whether the driver's input drives the face right now. A driver whose input is
        missing (no face in view, silence) returns False and, in a stack of layers, the layers
        below take over its channel groups until it returns True again. Default: True."""
        return True

    async def control(self, message: Control) -> dict[str, Any]:
        """Handle a control message; return a reply for the client (may be empty).

        Raise ControlNotSupported for kinds the driver does not handle (the default) and
        ValueError with a message for bad content.
        """
        raise ControlNotSupported(f"driver {self.name!r} does not accept {message.kind!r} messages")

    async def aclose(self) -> None:
        """Release devices, files and models. Called once when the session ends."""

    @classmethod
    def describe(cls) -> dict[str, Any]:
        """JSON-able description: name, flags and the options' JSON schema."""
        return {
            "name": cls.name,
            "description": cls.description,
            "rate": cls.rate,
            "needs_audio": cls.needs_audio,
            "needs_video": cls.needs_video,
            "provides_audio": cls.provides_audio,
            "channels": sorted(c.value for c in cls.channels),
            "options": cls.Options.model_json_schema(),
        }

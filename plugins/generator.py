"""Generator and output contracts.

A generator turns a session's FlameFrames into multi-view RGB frames. It lives in the generator
worker process (``flamecast generator``); the worker feeds each session's frames in order and
publishes whatever the session returns. A generator may lag (sliding windows): ``step`` returns
the frames it has finished, possibly none, possibly several.

An output is a sink for a session's rendered frames inside the server (a recorder, a virtual
camera, ...).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from .frame import FlameFrame
from .head import HeadSpace, builtin_head_space


class PortraitError(ValueError):
    """The portrait cannot be used (not an image, no face, several faces); the message says
    which and what to do. The worker sends it back to the session and keeps serving."""


class GeneratorUnavailable(RuntimeError):
    """The generator cannot run here (weights missing, no GPU); the message says what to
    install and where. Not the client's fault: the server answers 503."""


class GeneratorOptions(BaseModel):
    """Base of every generator's ``Options``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    views: tuple[str, ...] | None = None  # view ids; None = the generator's default set
    size: int = 256  # output side in pixels


@dataclass(frozen=True)
class RenderedFrame:
    """The V views rendered for one driving frame."""

    source: FlameFrame
    views: np.ndarray  # (V, H, W, 3) uint8
    view_ids: tuple[str, ...]
    render_ns: int = 0


@dataclass
class GeneratorSessionSpec:
    """What a generator needs to open a session."""

    session_id: str
    portrait: bytes | None  # encoded image; None = the generator's default portrait
    options: GeneratorOptions
    extra: dict[str, Any] = field(default_factory=dict)


class GeneratorSession(abc.ABC):
    """Per-session state of a generator (avatar features, buffers).

    Attributes:
        view_ids: the ids of the views every RenderedFrame carries, in order; the worker
            reports them in the session's "ready" status.
    """

    view_ids: tuple[str, ...] = ()

    @abc.abstractmethod
    def step(self, frames: Sequence[FlameFrame]) -> list[RenderedFrame]:
        """Consume new frames in order; return the frames finished so far."""

    def close(self) -> None:
        """Free per-session state."""


class Generator(abc.ABC):
    """Base class of every generator backend.

    Class attributes: ``name``, ``description``, ``Options`` (a GeneratorOptions subclass),
    ``head`` (the head space it expects frames in).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[GeneratorOptions]] = GeneratorOptions

    def __init__(self, settings: dict[str, Any] | None = None) -> None:
        self.settings = dict(settings or {})

    @property
    def head(self) -> HeadSpace:
        return builtin_head_space()

    @abc.abstractmethod
    def open_session(self, spec: GeneratorSessionSpec) -> GeneratorSession:
        """Build a session's state from its portrait; raise PortraitError for a bad portrait."""

    def close(self) -> None:
        """Free models."""


class Output(abc.ABC):
    """A sink for one session's rendered frames, attached by the server."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abc.abstractmethod
    async def write(self, frame: Any) -> None:
        """Receive one VideoFrame (see ``flamecast.plugins.protocol.VideoFrame``)."""

    async def aclose(self) -> None:
        """Flush and release."""

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
import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from .frame import FlameFrame
from .head import HeadSpace, builtin_head_space


class PortraitError(ValueError):
    """The portrait cannot be used (not an image, no face, several faces); the message says
    which and what to do. The worker sends it back to the session and keeps serving."""


def split_spec(spec: str) -> tuple[str, dict[str, str]]:
    """A named set of options with overrides after colons (a bench profile, a warm profile):
    ``"live:steps=2:size=384"`` -> ("live", {"steps": "2", "size": "384"}). ValueError names the
    pair that is not KEY=VALUE."""
    name, *pairs = spec.strip().split(":")
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {pair!r} is not KEY=VALUE (in {spec!r})")
        overrides[key.strip()] = value.strip()
    return name.strip(), overrides


class OptionsRefused(ValueError):
    """Options that validate but that this generator, as it runs, does not serve (a profile its
    worker did not compile at start, say); the message says what it serves. The client's to
    fix: the server answers 422."""


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
    # Optional (V, H, W) uint8 coverage of the avatar in each view: 255 avatar, 0 background,
    # in between at soft edges. Sessions with a colour or transparent background need it
    # (docs/plugins.md, "Mattes"); a generator that cannot tell leaves it None.
    matte: np.ndarray | None = None


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
        head_space: the head space this session's frames are in, when it is not the
            generator's ``head`` (a per-session head model); the worker reports it in the
            "ready" status and the server hands it to the session's drivers.
    """

    view_ids: tuple[str, ...] = ()
    head_space: HeadSpace | None = None

    @abc.abstractmethod
    def step(self, frames: Sequence[FlameFrame]) -> list[RenderedFrame]:
        """Consume new frames in order; return the frames finished so far."""

    def close(self) -> None:
        """Free per-session state."""


@dataclass(frozen=True)
class GeneratorSettings:
    """What a generator worker tells every generator it loads: host-wide choices, made once when
    the worker starts (per-session choices are the generator's ``Options``).

    Attributes:
        device: where the generator runs: "cpu", "cuda" or "auto" (cuda when there is one).
        weights_dir: the model weights folder (None: $FLAMECAST_WEIGHTS or
            ~/.cache/flamecast/weights).
        allow_random_weights: run a neural generator without its weights (benchmarks only).
        compile: a torch.compile mode for neural generators, or None.
        compile_cache_dir: where compiled kernels are kept across runs (None: the default).
        warm_profiles: profiles a generator builds and compiles before the worker reports ready
            (None: the generator's choice).
        max_batch: sessions a generator may batch through one model call.
        detect_face: find the face in a portrait (False: use the centre crop).
    """

    device: str = "cpu"
    weights_dir: str | None = None
    allow_random_weights: bool = False
    compile: str | None = None
    compile_cache_dir: str | None = None
    warm_profiles: tuple[str, ...] | None = None
    max_batch: int = 4
    detect_face: bool = True

    @classmethod
    def of(cls, value: GeneratorSettings | Mapping[str, Any] | None) -> GeneratorSettings:
        """``value`` as settings: None gives the defaults; a mapping is checked field by field
        (an unknown key is a TypeError naming it; ``warm_profiles`` may be "live,hq")."""
        if value is None:
            return cls()
        if isinstance(value, GeneratorSettings):
            return value
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise TypeError(f"unknown generator setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(value)
        if isinstance(values.get("warm_profiles"), str):
            values["warm_profiles"] = tuple(n.strip() for n in values["warm_profiles"].split(",") if n.strip())
        return cls(**values)

    def replace(self, **changes: Any) -> GeneratorSettings:
        return dataclasses.replace(self, **changes)


class Generator(abc.ABC):
    """Base class of every generator backend.

    Class attributes: ``name``, ``description``, ``Options`` (a GeneratorOptions subclass),
    ``head`` (the head space it expects frames in).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[GeneratorOptions]] = GeneratorOptions

    def __init__(self, settings: GeneratorSettings | Mapping[str, Any] | None = None) -> None:
        self.settings = GeneratorSettings.of(settings)

    @property
    def head(self) -> HeadSpace:
        return builtin_head_space()

    @abc.abstractmethod
    def open_session(self, spec: GeneratorSessionSpec) -> GeneratorSession:
        """Build a session's state from its portrait; raise PortraitError for a bad portrait."""

    def step_sessions(self, work: Sequence[tuple[GeneratorSession, Sequence[FlameFrame]]]) -> list[list[RenderedFrame]]:
        """``session.step(frames)`` for several of this generator's sessions at once, in order.

        The worker hands a generator that overrides this every ready session that has frames in
        one call, so that a GPU model can push their windows through one batched call; the
        default steps them one by one."""
        return [list(session.step(frames)) for session, frames in work]

    @classmethod
    def batches_sessions(cls) -> bool:
        """Whether ``step_sessions`` is the generator's own (the worker then groups sessions)."""
        return cls.step_sessions is not Generator.step_sessions

    def close(self) -> None:
        """Free models."""


class OutputUnavailable(RuntimeError):
    """The output cannot run here (a missing package, device or driver); the message says what
    to install. The server answers 503 and the session goes on without the output."""


class OutputOptions(BaseModel):
    """Base of every output's ``Options``: unknown fields are rejected, values validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Output(abc.ABC):
    """A sink for one session's rendered frames (and its audio), attached by the server.

    The server builds one instance per attachment (``POST /api/sessions/ID/outputs``), calls
    ``open`` once, then ``write`` with each new frame and ``write_audio`` with each audio chunk
    (when ``wants_audio``), through bounded queues where the newest frame wins: a slow output
    drops frames, it never delays the session. ``aclose`` is called once when it is detached or
    the session ends. Blocking work (encoding, device writes) belongs in a thread
    (``asyncio.to_thread``), never on the event loop.

    Class attributes: ``name``, ``description``, ``Options`` (an ``OutputOptions`` subclass),
    ``wants_audio``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    Options: ClassVar[type[OutputOptions]] = OutputOptions
    wants_audio: ClassVar[bool] = False

    def __init__(self, options: OutputOptions, session: Any = None) -> None:
        self.options = options
        self.session = session  # the session's SessionInfo

    async def open(self) -> None:
        """Acquire the file or device; raise ``OutputUnavailable("what to install")``."""

    @abc.abstractmethod
    async def write(self, frame: Any) -> None:
        """Receive one VideoFrame (see ``flamecast.plugins.protocol.VideoFrame``): every view of
        one driving frame, over the session's background (a transparent session's outputs get
        the generator's own picture: a file or a camera has no alpha)."""

    async def write_audio(self, chunk: Any) -> None:
        """Receive one ``AudioChunk`` of the session's audio (outputs with ``wants_audio``)."""

    def describe(self) -> dict[str, Any]:
        """What the output reports about itself (a file path, a device name); JSON-able."""
        return {}

    async def aclose(self) -> None:
        """Flush and release."""

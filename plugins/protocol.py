"""The ZeroMQ wire protocol, version 1 (specified in docs/protocol.md).

A message is a multipart ZeroMQ message ``[topic, header, buffer...]``:

* ``topic``: the session id, UTF-8 (empty for messages that concern no session).
* ``header``: a msgpack map ``{"v": 1, "type": str, "seq": int, "ts": {name: int ns},
  "meta": map, "buffers": [{"name": str, "dtype": str, "shape": [int...]}...]}``.
* each buffer: the raw little-endian bytes of one array, in the order of ``header["buffers"]``.

``pack`` and ``unpack`` are the one serializer pair every process uses. ``unpack`` raises
``ProtocolError`` and nothing else on any input it cannot accept; callers count and drop.
The typed helpers (``flame_message``, ``frame_from_envelope``, ...) build and read the
message types of this module.
"""

from __future__ import annotations

import enum
import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import msgpack
import numpy as np

from .frame import FlameFrame

VERSION = 1

# Message types.
FLAME = "flame"
VIDEO = "video"
AUDIO = "audio"
SESSION_OPEN = "session.open"
SESSION_CLOSE = "session.close"
SESSION_STATUS = "session.status"
WORKER_STATUS = "worker.status"
MESSAGE_TYPES = frozenset({FLAME, VIDEO, AUDIO, SESSION_OPEN, SESSION_CLOSE, SESSION_STATUS, WORKER_STATUS})

# Documented limits.
MAX_TOPIC_BYTES = 128
MAX_HEADER_BYTES = 64 * 1024
MAX_BUFFERS = 16
MAX_NDIM = 4
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_VIEWS = 16
MAX_VIDEO_SIDE = 2048
MAX_VIEW_ID_CHARS = 32
# What the views of one video message may weigh: whatever a session asks for, its frames fit
# in one message with room for the header (checked when the session opens).
MAX_VIDEO_BYTES = MAX_MESSAGE_BYTES - MAX_HEADER_BYTES - 2 * MAX_TOPIC_BYTES
MAX_INT = 2**63 - 1  # seq and timestamps are int64 on the wire

# Allowed buffer dtypes: little-endian numeric types and bytes.
DTYPES = frozenset({"|u1", "|i1", "<u2", "<i2", "<i4", "<i8", "<f2", "<f4", "<f8"})


class SessionState(enum.StrEnum):
    """Where a session stands on a generator worker (``session.status`` meta ``state``).

    ``OPENING`` never travels: it is the state between a ``session.open`` and its answer (the
    worker's statistics show it). The worker answers ``READY`` or ``ERROR`` and, after a
    ``session.close``, ``CLOSED``.
    """

    OPENING = "opening"
    READY = "ready"
    ERROR = "error"
    CLOSED = "closed"


class RefusalCode(enum.StrEnum):
    """Why a session is in ``error`` (``session.status`` meta ``code``), and whose move it is.

    ``PORTRAIT`` and ``OPTIONS`` are the client's to fix (another photo, other options);
    ``BUSY`` and ``UNAVAILABLE`` the operator's (another worker, the missing weights);
    ``INTERNAL`` is a generator bug.
    """

    PORTRAIT = "portrait"  # the portrait cannot be used: not an image, no face, several faces
    OPTIONS = "options"  # unknown generator, options the generator rejects, malformed meta
    BUSY = "busy"  # the worker already serves its maximum number of sessions
    UNAVAILABLE = "unavailable"  # the generator cannot run on this worker (weights, device)
    INTERNAL = "internal"  # the generator failed while opening or rendering

    @property
    def client_fault(self) -> bool:
        return self in (RefusalCode.PORTRAIT, RefusalCode.OPTIONS)


class ProtocolError(ValueError):
    """A message that cannot be accepted: malformed, truncated, oversized, wrong version,
    non-finite or of the wrong layout. Receivers count these and drop the message."""


@dataclass(frozen=True)
class Envelope:
    """A decoded message: its topic, type, sequence number, timestamps, metadata and arrays."""

    topic: str
    type: str
    seq: int = 0
    ts: Mapping[str, int] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    buffers: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def session_id(self) -> str:
        return self.topic


def _le_dtype(arr: np.ndarray) -> np.dtype:
    dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    if dt.str not in DTYPES:
        raise ProtocolError(f"dtype {arr.dtype} cannot travel; allowed: {sorted(DTYPES)}")
    return dt


def pack(
    type: str,
    topic: str = "",
    *,
    seq: int = 0,
    ts: Mapping[str, int] | None = None,
    meta: Mapping[str, Any] | None = None,
    buffers: Mapping[str, np.ndarray] | None = None,
) -> list[bytes]:
    """Serialize one message into ZeroMQ frames ``[topic, header, buffer...]``."""
    if type not in MESSAGE_TYPES:
        raise ProtocolError(f"unknown message type {type!r}")
    specs, raw = [], []
    for name, value in (buffers or {}).items():
        arr = np.asarray(value)
        arr = np.ascontiguousarray(arr, dtype=_le_dtype(arr))
        specs.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)})
        raw.append(arr.tobytes())
    header = {
        "v": VERSION,
        "type": type,
        "seq": int(seq),
        "ts": {k: int(v) for k, v in (ts or {}).items()},
        "meta": dict(meta or {}),
        "buffers": specs,
    }
    topic_b = topic.encode("utf-8")
    header_b = msgpack.packb(header, use_bin_type=True)
    frames = [topic_b, header_b, *raw]
    _check_sizes(frames)
    return frames


def _check_sizes(frames: Sequence[bytes]) -> None:
    if len(frames) < 2:
        raise ProtocolError(f"a message has at least 2 frames (topic, header); got {len(frames)}")
    if len(frames[0]) > MAX_TOPIC_BYTES:
        raise ProtocolError(f"topic longer than {MAX_TOPIC_BYTES} bytes")
    if len(frames[1]) > MAX_HEADER_BYTES:
        raise ProtocolError(f"header larger than {MAX_HEADER_BYTES} bytes")
    if len(frames) - 2 > MAX_BUFFERS:
        raise ProtocolError(f"more than {MAX_BUFFERS} buffers")
    if sum(len(f) for f in frames) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message larger than {MAX_MESSAGE_BYTES} bytes")


def _read_header(raw: bytes) -> dict:
    try:
        header = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises many types on garbage
        raise ProtocolError(f"header is not valid msgpack: {exc.__class__.__name__}") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a map")
    if header.get("v") != VERSION:
        raise ProtocolError(f"protocol version {header.get('v')!r} is not supported (expected {VERSION})")
    return header


def _field(header: dict, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = header.get(key, default)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ProtocolError(f"header field {key!r} has the wrong type")
    return value


def _read_buffer(spec: Any, raw: bytes) -> tuple[str, np.ndarray]:
    if not isinstance(spec, dict):
        raise ProtocolError("buffer spec is not a map")
    name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
    if not isinstance(name, str) or not isinstance(dtype, str) or dtype not in DTYPES or not isinstance(shape, list):
        raise ProtocolError("buffer spec needs name (str), dtype (allowed) and shape (list)")
    if len(shape) > MAX_NDIM or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_MESSAGE_BYTES for d in shape):
        raise ProtocolError(f"buffer {name!r} has a bad shape (at most {MAX_NDIM} sizes, each 0..{MAX_MESSAGE_BYTES})")
    dt = np.dtype(dtype)
    count = math.prod(shape)
    if count * dt.itemsize != len(raw):
        raise ProtocolError(f"buffer {name!r} is {len(raw)} bytes; its spec says {count * dt.itemsize}")
    try:
        arr = np.frombuffer(raw, dtype=dt).reshape(shape)
    except ValueError as exc:  # numpy refuses shapes it cannot index, e.g. [0, 2**62]
        raise ProtocolError(f"buffer {name!r} cannot have shape {shape}: {exc}") from None
    if dt.kind == "f" and not np.all(np.isfinite(arr)):
        raise ProtocolError(f"buffer {name!r} has non-finite values")
    return name, arr


def unpack(frames: Sequence[bytes]) -> Envelope:
    """Deserialize ZeroMQ frames into an Envelope; raises ProtocolError on any bad input.

    Unknown message types and extra header fields are not errors: the envelope carries them
    and receivers ignore types they do not handle.
    """
    try:
        return _unpack(frames)
    except ProtocolError:
        raise
    except Exception as exc:  # whatever a decoder raises on hostile input becomes a ProtocolError
        raise ProtocolError(f"undecodable message: {exc.__class__.__name__}") from None


def _unpack(frames: Sequence[bytes]) -> Envelope:
    try:
        frames = [bytes(f) for f in frames]
    except Exception:
        raise ProtocolError("frames must be bytes") from None
    _check_sizes(frames)
    try:
        topic = frames[0].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("topic is not UTF-8") from None
    header = _read_header(frames[1])
    type_ = _field(header, "type", str, None)
    seq = _field(header, "seq", int, 0)
    ts = _field(header, "ts", dict, {})
    meta = _field(header, "meta", dict, {})
    specs = _field(header, "buffers", list, [])
    if not 0 <= seq <= MAX_INT:
        raise ProtocolError(f"seq must be in 0..{MAX_INT}")
    if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and abs(v) <= MAX_INT
               for k, v in ts.items()):
        raise ProtocolError("timestamps must map names to integer nanoseconds (int64)")
    if len(specs) != len(frames) - 2:
        raise ProtocolError(f"header lists {len(specs)} buffers; the message carries {len(frames) - 2}")
    buffers = dict(_read_buffer(s, r) for s, r in zip(specs, frames[2:]))
    return Envelope(topic=topic, type=type_, seq=seq, ts=ts, meta=meta, buffers=buffers)


def _need(env: Envelope, name: str, dtype: str, ndim: int) -> np.ndarray:
    arr = env.buffers.get(name)
    if arr is None:
        raise ProtocolError(f"{env.type} message lacks buffer {name!r}")
    if arr.dtype.str != dtype or arr.ndim != ndim:
        raise ProtocolError(f"buffer {name!r} must be {dtype} with {ndim} dims")
    return arr


# --- flame frames -------------------------------------------------------------------------


def flame_message(frame: FlameFrame, *, sent_ns: int | None = None) -> list[bytes]:
    """Frames for one FlameFrame (type ``flame``, topic = its session id)."""
    buffers = {"pose": frame.pose, "expression": frame.expression}
    for name in ("shape", "eyelids", "translation"):
        value = getattr(frame, name)
        if value is not None:
            buffers[name] = value
    ts = {"capture_ns": frame.capture_ns}
    if sent_ns is not None:
        ts["sent_ns"] = sent_ns
    return pack(FLAME, frame.session_id, seq=frame.seq, ts=ts, buffers=buffers)


def _guarded(read):
    """A typed reader that raises ProtocolError, and nothing else, on any bad envelope."""

    @functools.wraps(read)
    def guarded(env: Envelope):
        try:
            return read(env)
        except ProtocolError:
            raise
        except Exception as exc:
            raise ProtocolError(f"bad {getattr(env, 'type', '?')} message: {exc.__class__.__name__}: {exc}") from None

    return guarded


@_guarded
def frame_from_envelope(env: Envelope) -> FlameFrame:
    """The FlameFrame in a ``flame`` envelope; ProtocolError when its layout is wrong."""
    if env.type != FLAME:
        raise ProtocolError(f"expected a flame message, got {env.type!r}")
    optional = {n: _need(env, n, "<f4", 1) for n in ("shape", "eyelids", "translation") if n in env.buffers}
    try:
        return FlameFrame(
            session_id=env.topic,
            seq=env.seq,
            capture_ns=env.ts.get("capture_ns", 0),
            pose=_need(env, "pose", "<f4", 1),
            expression=_need(env, "expression", "<f4", 1),
            **optional,
        )
    except ValueError as exc:
        raise ProtocolError(f"bad flame frame: {exc}") from None


# --- video frames -------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoFrame:
    """V rendered views of one driving frame.

    Attributes:
        session_id, seq: the driving frame's session and sequence number.
        capture_ns: the driving frame's capture time (wall clock, ns).
        render_ns: how long rendering this frame took, in ns.
        views: (V, H, W, 3) uint8 RGB.
        view_ids: the name of each view (e.g. "front", "left30").
        mattes: optional (V, H, W) uint8 coverage of the avatar in each view (255 avatar, 0
            background), for sessions with a colour or transparent background.
    """

    session_id: str
    seq: int
    capture_ns: int
    render_ns: int
    views: np.ndarray
    view_ids: tuple[str, ...]
    mattes: np.ndarray | None = None


def video_message(frame: VideoFrame, *, sent_ns: int | None = None) -> list[bytes]:
    ts = {"capture_ns": frame.capture_ns, "render_ns": frame.render_ns}
    if sent_ns is not None:
        ts["sent_ns"] = sent_ns
    meta = {"view_ids": list(frame.view_ids), "size": list(frame.views.shape[1:3])}
    buffers = {"views": frame.views}
    if frame.mattes is not None:
        buffers["mattes"] = frame.mattes
    return pack(VIDEO, frame.session_id, seq=frame.seq, ts=ts, meta=meta, buffers=buffers)


@_guarded
def video_from_envelope(env: Envelope) -> VideoFrame:
    if env.type != VIDEO:
        raise ProtocolError(f"expected a video message, got {env.type!r}")
    views = _need(env, "views", "|u1", 4)
    v, h, w, c = views.shape
    if c != 3 or not (1 <= v <= MAX_VIEWS) or not (1 <= h <= MAX_VIDEO_SIDE and 1 <= w <= MAX_VIDEO_SIDE):
        raise ProtocolError(f"views must be (V<={MAX_VIEWS}, H, W<={MAX_VIDEO_SIDE}, 3); got {views.shape}")
    view_ids = env.meta.get("view_ids")
    if not isinstance(view_ids, list) or len(view_ids) != v or not all(isinstance(x, str) for x in view_ids):
        raise ProtocolError("video meta.view_ids must list one name per view")
    mattes = env.buffers.get("mattes")
    if mattes is not None and (mattes.dtype.str != "|u1" or mattes.shape != (v, h, w)):
        raise ProtocolError(f"buffer 'mattes' must be |u1 with shape {(v, h, w)}; got {mattes.dtype.str} {mattes.shape}")
    return VideoFrame(
        session_id=env.topic,
        seq=env.seq,
        capture_ns=env.ts.get("capture_ns", 0),
        render_ns=env.ts.get("render_ns", 0),
        views=views,
        view_ids=tuple(view_ids),
        mattes=mattes,
    )


# --- audio --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioChunk:
    """PCM audio a driver passes through: (samples, channels) int16 at ``sample_rate``."""

    session_id: str
    seq: int
    capture_ns: int
    sample_rate: int
    samples: np.ndarray


def audio_message(chunk: AudioChunk) -> list[bytes]:
    return pack(
        AUDIO, chunk.session_id, seq=chunk.seq, ts={"capture_ns": chunk.capture_ns},
        meta={"sample_rate": chunk.sample_rate}, buffers={"samples": chunk.samples},
    )


@_guarded
def audio_from_envelope(env: Envelope) -> AudioChunk:
    samples = _need(env, "samples", "<i2", 2)
    rate = env.meta.get("sample_rate")
    if not isinstance(rate, int) or not 8000 <= rate <= 192000:
        raise ProtocolError("audio meta.sample_rate must be an integer in 8000..192000")
    return AudioChunk(env.topic, env.seq, env.ts.get("capture_ns", 0), rate, samples)


# --- session lifecycle --------------------------------------------------------------------


def session_open_message(
    session_id: str, *, generator: str, options: Mapping[str, Any], portrait: bytes | None
) -> list[bytes]:
    """Ask a generator worker to open (or idempotently reopen) a session.

    ``portrait`` is an encoded image file (PNG/JPEG bytes) or None for the default portrait.
    """
    buffers = {} if portrait is None else {"portrait": np.frombuffer(portrait, dtype=np.uint8)}
    return pack(SESSION_OPEN, session_id, meta={"generator": generator, "options": dict(options)}, buffers=buffers)


def session_close_message(session_id: str, reason: str = "closed") -> list[bytes]:
    return pack(SESSION_CLOSE, session_id, meta={"reason": reason})


def session_status_message(
    session_id: str, state: SessionState | str, *, error: str | None = None, code: RefusalCode | str | None = None,
    **info: Any,
) -> list[bytes]:
    """Worker -> server: ``state`` is ready, error or closed (a ``SessionState``); with error,
    ``error`` says what to fix and ``code`` (a ``RefusalCode``) whose fault it is."""
    meta = {"state": str(state), **info}
    if error is not None:
        meta["error"] = error
    if code is not None:
        meta["code"] = str(code)
    return pack(SESSION_STATUS, session_id, meta=meta)


def worker_status_message(instance: str, **info: Any) -> list[bytes]:
    """Worker -> server, about once a second (topic empty): ``instance`` is new each time a
    worker process starts, so a server sees a restart; ``info`` carries its health and counters."""
    return pack(WORKER_STATUS, "", meta={"instance": instance, **info})


# --- what a session may ask for -----------------------------------------------------------

_VIEW_ID = re.compile(r"[A-Za-z0-9_.+-]+")


def video_bytes(n_views: int, size: int) -> int:
    """The bytes of one video message's buffers: V square RGB views of side ``size`` and their
    mattes (one byte a pixel)."""
    return int(n_views) * int(size) * int(size) * 4


def view_request_error(view_ids: Sequence[Any] | None, size: Any) -> str | None:
    """What is wrong with a session's ``views`` and ``size`` as the wire sees them, or None.

    At most MAX_VIEWS unique ids of at most MAX_VIEW_ID_CHARS letters, digits or ``_.+-``, and
    a size whose frames fit one message (MAX_VIDEO_BYTES): a session that passes this check can
    never make a video message the wire refuses. The generator then checks the ids it knows.
    """
    if view_ids is not None:
        if not isinstance(view_ids, (list, tuple)) or not view_ids:
            return "views must be a non-empty list of view ids"
        if len(view_ids) > MAX_VIEWS:
            return f"at most {MAX_VIEWS} views per session; {len(view_ids)} were asked for"
        for v in view_ids:
            if not isinstance(v, str) or len(v) > MAX_VIEW_ID_CHARS or not _VIEW_ID.fullmatch(v):
                return (f"view id {str(v)[:40]!r} is not an id: at most {MAX_VIEW_ID_CHARS} letters, digits or "
                        "'_.+-' (like 'front' or 'left30')")
        if len(set(view_ids)) != len(view_ids):
            return "view ids must be unique"
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= MAX_VIDEO_SIDE:
            return f"size must be an integer 1..{MAX_VIDEO_SIDE}"
        n = len(view_ids) if view_ids else 1
        if video_bytes(n, size) > MAX_VIDEO_BYTES:
            return (f"{n} views of {size}x{size} make {video_bytes(n, size)} bytes a frame; the limit is "
                    f"{MAX_VIDEO_BYTES}: ask for fewer views or a smaller size")
    return None

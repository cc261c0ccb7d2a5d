"""The generator worker: FLAME frames in, multi-view video out, over ZeroMQ.

Three threads, each with its own job (docs/generator.md):

* the socket loop (``run``) owns both ZeroMQ sockets. It binds a SUB socket on ``input``
  (flame frames, session.open/close) and a PUB socket on ``output`` (video, session.status),
  validates every message, files frames into their session's newest-wins buffer and forwards
  what the other threads produce (they hand messages over an ``inproc://`` PUSH/PULL pair, so
  each socket keeps one owner). It never renders and never decodes a portrait.
* the lifecycle thread opens and closes generator sessions (decoding the portrait and fitting
  the avatar take a second or two; that must stall neither the sockets nor other sessions).
* the render thread takes sessions round-robin, hands each its buffered frames in one batch
  (``GeneratorSession.step``) and publishes the results.

A session whose driver goes quiet costs nothing: no frames, no renders; its last video frame
stands (the server's tracks repeat it). Malformed input is counted, never fatal.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import zmq

from flamecast.plugins import (
    FlameFrame,
    Generator,
    GeneratorSession,
    GeneratorSessionSpec,
    GeneratorUnavailable,
    PortraitError,
)
from flamecast.plugins import protocol as wire
from flamecast.plugins.driver import format_validation_error

log = logging.getLogger(__name__)

DEFAULT_INPUT = "tcp://127.0.0.1:5555"
DEFAULT_OUTPUT = "tcp://127.0.0.1:5556"

# Video is worthless once stale: a subscriber that falls more than a few frames behind loses
# the oldest instead of building seconds of latency (4 views x 256^2 is 786 KB a message).
VIDEO_SNDHWM = 8
# Flame frames are tiny and the socket loop drains them at once; session.open can carry a
# portrait of several MB. This mark only matters while the loop is busy.
INPUT_RCVHWM = 1000
# The inproc hand-off from the render and lifecycle threads to the socket loop.
HANDOFF_HWM = 64
POLL_MS = 100


@dataclass(frozen=True)
class WorkerSettings:
    """How a worker runs; parsed once by the CLI (or built by tests).

    Attributes:
        input: endpoint the SUB socket binds for flame frames and session messages
            (``tcp://HOST:0`` binds a random port).
        output: endpoint the PUB socket binds for video and session.status.
        backends: the generator backends this worker serves (empty = every registered one);
            the listed ones are loaded at start.
        default_backend: used when a session.open names no generator.
        device: "cpu" or "cuda", passed to each generator as ``settings["device"]``.
        ready_file: where to write {"input", "output", "pid"} once both sockets are bound.
        queue_depth: frames buffered per session, newest wins (older ones are dropped and counted).
        max_sessions: open sessions at most; further opens get an error status.
        video_hwm: send high-water mark of the video PUB socket, in messages.
        stats_interval_s: how often the statistics are logged (0 = never).
        threads: torch intra-op threads for the process (0 = leave torch's default).
        generator_settings: extra settings given to every generator besides ``device``
            (flame2video reads ``weights_dir``, ``allow_random_weights`` and ``compile``).
    """

    input: str = DEFAULT_INPUT
    output: str = DEFAULT_OUTPUT
    backends: tuple[str, ...] = ()
    default_backend: str = "mesh"
    device: str = "cpu"
    ready_file: Path | None = None
    queue_depth: int = 4
    max_sessions: int = 32
    video_hwm: int = VIDEO_SNDHWM
    stats_interval_s: float = 30.0
    threads: int = 0
    generator_settings: dict = field(default_factory=dict)


@dataclass
class SessionStats:
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0  # pushed out of the newest-wins buffer before rendering
    rejected: int = 0  # wrong layout for this generator (e.g. expression size)
    render_ns: int = 0  # total time spent in step()
    last_render_ns: int = 0

    def as_dict(self) -> dict[str, int]:
        d = dict(vars(self))
        d["mean_render_ms"] = round(self.render_ns / max(1, self.frames_out) / 1e6, 3)
        return d


@dataclass
class WorkerStats:
    malformed: int = 0  # could not be decoded (garbage, wrong version, NaN, bad layout)
    unknown_session: int = 0  # flame frames for a session that is not open
    ignored: int = 0  # message types the worker does not handle
    video_dropped: int = 0  # hand-off full: the socket loop fell behind
    opens: int = 0
    errors: int = 0


@dataclass(eq=False)
class Session:
    """One session's state. Fields other than ``gen``/``state`` change only under the worker lock."""

    id: str
    key: tuple
    generator: str
    options: Any
    portrait: bytes | None
    depth: int
    state: str = "opening"  # opening | ready | error | closed
    error: str | None = None
    error_code: str = "internal"  # portrait | options | busy | unavailable | internal
    gen: GeneratorSession | None = None
    n_expression: int | None = None
    view_ids: tuple[str, ...] = ()
    pending: collections.deque = field(default_factory=collections.deque)
    stats: SessionStats = field(default_factory=SessionStats)
    step_lock: threading.Lock = field(default_factory=threading.Lock)

    def push(self, frame: FlameFrame) -> None:
        self.stats.frames_in += 1
        if len(self.pending) >= self.depth:
            self.pending.popleft()
            self.stats.dropped += 1
        self.pending.append(frame)

    def status_meta(self) -> dict[str, Any]:
        size = getattr(self.options, "size", None)
        return {"generator": self.generator, "view_ids": list(self.view_ids), "size": [size, size] if size else None}


class GeneratorWorker:
    """A generator worker; ``run()`` blocks, ``start()`` runs it in a thread (tests).

    Example::

        worker = GeneratorWorker(WorkerSettings(input="tcp://127.0.0.1:0", output="tcp://127.0.0.1:0"))
        worker.start()                      # returns once both sockets are bound
        print(worker.endpoints)             # {"input": "tcp://127.0.0.1:41234", "output": ...}
        ...
        worker.stop()
    """

    def __init__(self, settings: WorkerSettings | None = None, *, host=None) -> None:
        self.settings = settings or WorkerSettings()
        self._host = host
        self._ctx = zmq.Context()
        self._handoff = f"inproc://flamecast-worker-{uuid.uuid4().hex}"
        self._lock = threading.Condition()
        self._sessions: dict[str, Session] = {}
        self._order: collections.deque[str] = collections.deque()  # round-robin order
        self._generators: dict[str, Generator] = {}
        self._jobs: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread: threading.Thread | None = None
        self._threads: list[threading.Thread] = []
        self._start_error: BaseException | None = None
        self.stats_global = WorkerStats()
        self.endpoints: dict[str, str] = {}

    # --- public API -------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> dict[str, str]:
        """Run in a background thread; return the bound endpoints once ready."""
        self._thread = threading.Thread(target=self._run_guarded, name="flamecast-worker", daemon=True)
        self._thread.start()
        if not self._bound.wait(timeout):
            raise TimeoutError("generator worker did not bind its sockets")
        if self._start_error is not None:
            raise self._start_error
        return self.endpoints

    def stop(self, timeout: float = 10.0) -> None:
        """Ask every thread to finish; joins the background thread when ``start`` made one."""
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        self._jobs.put(None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> GeneratorWorker:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """A snapshot: global counters and per-session counters."""
        with self._lock:
            return {
                **vars(self.stats_global),
                "sessions": {sid: {"state": s.state, **s.stats.as_dict()} for sid, s in self._sessions.items()},
            }

    def run(self) -> None:
        """Bind, serve until ``stop()``, then close everything."""
        try:
            self._plugin_host()  # before any thread needs it
            sub, pub, pull = self._bind()
        except BaseException:
            self._ctx.term()
            raise
        self._threads = [
            threading.Thread(target=self._lifecycle_loop, name="flamecast-worker-lifecycle", daemon=True),
            threading.Thread(target=self._render_loop, name="flamecast-worker-render", daemon=True),
        ]
        for t in self._threads:
            t.start()
        self._preload()
        try:
            self._socket_loop(sub, pub, pull)
        finally:
            self.stop()
            for t in self._threads:
                t.join(10.0)
            log.info("generator worker stopping; %s", self._stats_line())
            self._close_all()
            for s in (sub, pub, pull):
                s.close(linger=0)
            self._ctx.term()

    # --- sockets ----------------------------------------------------------------------

    def _run_guarded(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # surfaced to start()
            self._start_error = exc
            self._bound.set()
            if not isinstance(exc, zmq.ZMQError):
                log.exception("generator worker failed")

    def _bind(self) -> tuple[zmq.Socket, zmq.Socket, zmq.Socket]:
        s = self.settings
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.RCVHWM, INPUT_RCVHWM)
        sub.setsockopt(zmq.MAXMSGSIZE, wire.MAX_MESSAGE_BYTES)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        pub = self._ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.SNDHWM, s.video_hwm)
        pub.setsockopt(zmq.LINGER, 200)
        pull = self._ctx.socket(zmq.PULL)
        pull.setsockopt(zmq.RCVHWM, HANDOFF_HWM)
        try:
            sub.bind(s.input)
            pub.bind(s.output)
        except zmq.ZMQError as exc:
            for sock in (sub, pub, pull):
                sock.close(linger=0)
            raise zmq.ZMQError(exc.errno, f"cannot bind {s.input} / {s.output}: {exc.strerror}") from None
        pull.bind(self._handoff)
        self.endpoints = {
            "input": sub.getsockopt_string(zmq.LAST_ENDPOINT),
            "output": pub.getsockopt_string(zmq.LAST_ENDPOINT),
        }
        if s.ready_file is not None:
            _write_ready_file(s.ready_file, {**self.endpoints, "pid": os.getpid()})
        log.info("generator worker: flame in on %s, video out on %s", self.endpoints["input"], self.endpoints["output"])
        self._bound.set()
        return sub, pub, pull

    def _socket_loop(self, sub: zmq.Socket, pub: zmq.Socket, pull: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        poller.register(pull, zmq.POLLIN)
        next_log = time.monotonic() + self.settings.stats_interval_s
        while not self._stop.is_set():
            ready = dict(poller.poll(POLL_MS))
            if pull in ready:
                self._forward(pull, pub)
            if sub in ready:
                self._drain(sub, pub)
            if self.settings.stats_interval_s and time.monotonic() >= next_log:
                log.info("generator worker: %s", self._stats_line())
                next_log = time.monotonic() + self.settings.stats_interval_s

    def _forward(self, pull: zmq.Socket, pub: zmq.Socket) -> None:
        """Publish what the other threads produced (PUB never blocks; past its HWM it drops)."""
        for _ in range(HANDOFF_HWM):
            try:
                frames = pull.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            pub.send_multipart(frames, copy=False)

    def _drain(self, sub: zmq.Socket, pub: zmq.Socket) -> None:
        for _ in range(256):  # bounded, so outgoing video keeps flowing under a flood
            try:
                frames = sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            for reply in self._handle(frames):
                pub.send_multipart(reply)

    # --- message handling (socket loop) -----------------------------------------------

    def _handle(self, frames: Sequence[bytes]) -> list[list[bytes]]:
        try:
            env = wire.unpack(frames)
        except wire.ProtocolError as exc:
            self._count_malformed(f"dropped a malformed message: {exc}")
            return []
        if env.type == wire.FLAME:
            self._on_flame(env)
            return []
        if env.type == wire.SESSION_OPEN:
            return self._on_open(env)
        if env.type == wire.SESSION_CLOSE:
            return self._on_close(env)
        with self._lock:
            self.stats_global.ignored += 1
        return []

    def _count_malformed(self, why: str) -> None:
        with self._lock:
            self.stats_global.malformed += 1
            n = self.stats_global.malformed
        if n & (n - 1) == 0:  # log the 1st, 2nd, 4th, 8th, ... so a flood cannot flood the log
            log.warning("%s (%d malformed so far)", why, n)

    def _on_flame(self, env: wire.Envelope) -> None:
        try:
            frame = wire.frame_from_envelope(env)
        except wire.ProtocolError as exc:
            self._count_malformed(f"dropped a flame frame for {env.topic!r}: {exc}")
            return
        with self._lock:
            session = self._sessions.get(env.topic)
            if session is None or session.state in ("error", "closed"):
                self.stats_global.unknown_session += 1
                return
            if session.n_expression is not None and frame.expression.shape[0] != session.n_expression:
                session.stats.rejected += 1
                return
            session.push(frame)
            if session.state == "ready":
                self._lock.notify_all()

    def _on_open(self, env: wire.Envelope) -> list[list[bytes]]:
        sid = env.topic
        if not sid:
            self._count_malformed("dropped a session.open without a session id (topic)")
            return []
        try:
            name, options, portrait = self._parse_open(env)
        except _OpenRefused as exc:
            return [self._error_reply(sid, str(exc), replace=True, code="options")]
        key = (name, json.dumps(options.model_dump(mode="json"), sort_keys=True),
               None if portrait is None else hashlib.sha256(portrait).hexdigest())
        with self._lock:
            current = self._sessions.get(sid)
            if current is not None and current.key == key:
                return self._repeat_status(current)
            if current is None and self._live_sessions() >= self.settings.max_sessions:
                limit = self.settings.max_sessions
                return [self._error_reply(sid, f"worker is full ({limit} sessions): close a session or start another worker", replace=False, code="busy")]
            session = Session(sid, key, name, options, portrait, depth=self.settings.queue_depth)
            self._replace(sid, session)
            self.stats_global.opens += 1
        self._jobs.put(("open", session))
        return []

    def _parse_open(self, env: wire.Envelope) -> tuple[str, Any, bytes | None]:
        name = env.meta.get("generator") or self.settings.default_backend
        raw_options = env.meta.get("options", {})
        if not isinstance(name, str) or not isinstance(raw_options, dict):
            raise _OpenRefused("session.open meta needs generator (a name) and options (a map)")
        cls = self._generator_class(name)
        from pydantic import ValidationError

        try:
            options = cls.Options.model_validate(raw_options)
        except ValidationError as exc:
            raise _OpenRefused(f"generator {name!r}: {format_validation_error(exc)}") from None
        portrait = env.buffers.get("portrait")
        if portrait is not None and (portrait.dtype != np.uint8 or portrait.ndim != 1):
            raise _OpenRefused("the portrait buffer must be the encoded image file as 1-D uint8 bytes")
        return name, options, None if portrait is None else portrait.tobytes()

    def _generator_class(self, name: str) -> type[Generator]:
        allowed = self.settings.backends
        registry = self._plugin_host().generators
        if (allowed and name not in allowed) or name not in registry:
            served = ", ".join(allowed or registry.names()) or "none"
            raise _OpenRefused(f"unknown generator {name!r}; this worker serves: {served}")
        return registry.get(name)

    def _repeat_status(self, session: Session) -> list[list[bytes]]:
        """A repeated open with the same settings: answer again, change nothing."""
        if session.state == "ready":
            return [wire.session_status_message(session.id, "ready", **session.status_meta(), malformed=self.stats_global.malformed)]
        if session.state == "error":
            return [wire.session_status_message(session.id, "error", error=session.error, code=session.error_code)]
        return []  # still opening: "ready" or "error" follows

    def _error_reply(self, sid: str, message: str, *, replace: bool, code: str) -> list[bytes]:
        with self._lock:
            self.stats_global.errors += 1
            if replace and sid in self._sessions:
                self._retire(self._sessions.pop(sid))
        log.info("session %s: %s", sid, message)
        return wire.session_status_message(sid, "error", error=message, code=code)

    def _on_close(self, env: wire.Envelope) -> list[list[bytes]]:
        with self._lock:
            session = self._sessions.pop(env.topic, None)
            if session is None:
                return []
            self._retire(session)
        log.info("session %s closed (%s); %s", env.topic, env.meta.get("reason", "closed"), session.stats.as_dict())
        return [wire.session_status_message(env.topic, "closed", stats=session.stats.as_dict())]

    # --- session table (call with the lock held) --------------------------------------

    def _live_sessions(self) -> int:
        return sum(1 for s in self._sessions.values() if s.state in ("opening", "ready"))

    def _replace(self, sid: str, session: Session) -> None:
        old = self._sessions.get(sid)
        if old is not None:
            self._retire(old)
        self._sessions[sid] = session
        if sid not in self._order:
            self._order.append(sid)

    def _retire(self, session: Session) -> None:
        session.state = "closed"
        session.pending.clear()
        if session.id in self._order and self._sessions.get(session.id) in (None, session):
            self._order.remove(session.id)
        self._jobs.put(("close", session))

    # --- lifecycle thread -------------------------------------------------------------

    def _preload(self) -> None:
        if self.settings.threads:
            import torch

            torch.set_num_threads(self.settings.threads)
        for name in self.settings.backends:
            self._jobs.put(("load", name))

    def _lifecycle_loop(self) -> None:
        push = self._ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, HANDOFF_HWM)
        push.connect(self._handoff)
        try:
            while True:
                job = self._jobs.get()
                if job is None or self._stop.is_set():
                    return
                try:
                    self._lifecycle_job(*job, push)
                except Exception:  # a failing job must not end the thread
                    log.exception("generator worker: %s job failed", job[0])
        finally:
            push.close(linger=0)

    def _lifecycle_job(self, kind: str, arg: Any, push: zmq.Socket) -> None:
        if kind == "open":
            self._open(arg, push)
        elif kind == "close":
            _close_quietly(arg)
        elif kind == "load":
            self._load_generator(arg)

    def _load_generator(self, name: str) -> Generator:
        gen = self._generators.get(name)
        if gen is None:
            cls = self._plugin_host().generators.get(name)
            log.info("loading generator %r on %s", name, self.settings.device)
            gen = cls({**self.settings.generator_settings, "device": self.settings.device})
            warm_up = getattr(gen, "warm_up", None)
            if callable(warm_up):  # optional: load models now rather than on the first open
                warm_up()
            self._generators[name] = gen
        return gen

    def _open(self, session: Session, push: zmq.Socket) -> None:
        if session.state != "opening":
            return
        t0 = time.perf_counter()
        try:
            gen = self._load_generator(session.generator)
            spec = GeneratorSessionSpec(session.id, session.portrait, session.options)
            gsession = gen.open_session(spec)
        except PortraitError as exc:
            self._fail(session, f"portrait: {exc}", push, code="portrait")
            return
        except GeneratorUnavailable as exc:
            self._fail(session, f"generator {session.generator!r} cannot run here: {exc}", push, code="unavailable")
            return
        except Exception as exc:  # a generator bug must not take the worker down
            log.exception("session %s: generator %r failed to open", session.id, session.generator)
            self._fail(session, f"generator {session.generator!r} failed to open the session: {exc}", push, code="internal")
            return
        self._activate(session, gen, gsession, push)
        log.info("session %s ready (%s, %.2f s)", session.id, session.generator, time.perf_counter() - t0)

    def _activate(self, session: Session, gen: Generator, gsession: GeneratorSession, push: zmq.Socket) -> None:
        with self._lock:
            if session.state != "opening":  # closed or replaced meanwhile
                self._jobs.put(("close", _Closed(gsession)))
                return
            session.gen = gsession
            session.n_expression = gen.head.n_expression
            session.view_ids = tuple(getattr(gsession, "view_ids", None) or session.options.views or ())
            session.pending = collections.deque(
                (f for f in session.pending if f.expression.shape[0] == session.n_expression), maxlen=None
            )
            session.state = "ready"
            meta = session.status_meta()
            self._lock.notify_all()
        _send(push, wire.session_status_message(session.id, "ready", **meta, malformed=self.stats_global.malformed))

    def _fail(self, session: Session, message: str, push: zmq.Socket, *, code: str) -> None:
        with self._lock:
            if session.state != "opening":
                return
            session.state, session.error, session.error_code = "error", message, code
            session.pending.clear()
            self.stats_global.errors += 1
        log.info("session %s: %s", session.id, message)
        _send(push, wire.session_status_message(session.id, "error", error=message, code=code))

    # --- render thread ----------------------------------------------------------------

    def _render_loop(self) -> None:
        push = self._ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.SNDHWM, HANDOFF_HWM)
        push.connect(self._handoff)
        try:
            while True:
                work = self._next_work()
                if work is None:
                    return
                self._render(*work, push)
        finally:
            push.close(linger=0)

    def _next_work(self) -> tuple[Session, list[FlameFrame]] | None:
        """The next session with frames, round-robin, and all its buffered frames."""
        with self._lock:
            while not self._stop.is_set():
                for _ in range(len(self._order)):
                    sid = self._order[0]
                    self._order.rotate(-1)
                    session = self._sessions.get(sid)
                    if session is not None and session.state == "ready" and session.pending:
                        frames = list(session.pending)
                        session.pending.clear()
                        return session, frames
                self._lock.wait()
        return None

    def _render(self, session: Session, frames: list[FlameFrame], push: zmq.Socket) -> None:
        with session.step_lock:
            if session.state != "ready":
                return
            t0 = time.perf_counter_ns()
            try:
                rendered = session.gen.step(frames)
            except Exception as exc:
                log.exception("session %s: generator step failed", session.id)
                self._step_failed(session, exc, push)
                return
            elapsed = time.perf_counter_ns() - t0
        with self._lock:
            session.stats.render_ns += elapsed
            session.stats.last_render_ns = elapsed
            session.stats.frames_out += len(rendered)
        per_frame = elapsed // max(1, len(rendered))
        for r in rendered:
            video = wire.VideoFrame(session.id, r.source.seq, r.source.capture_ns, r.render_ns or per_frame,
                                    r.views, tuple(r.view_ids))
            if not _send(push, wire.video_message(video, sent_ns=time.time_ns())):
                with self._lock:
                    self.stats_global.video_dropped += 1

    def _step_failed(self, session: Session, exc: Exception, push: zmq.Socket) -> None:
        message = f"generator {session.generator!r} failed while rendering: {exc}; reopen the session"
        with self._lock:
            session.state, session.error = "error", message
            session.pending.clear()
            self.stats_global.errors += 1
        _send(push, wire.session_status_message(session.id, "error", error=message, code="internal"))

    # --- misc -------------------------------------------------------------------------

    def _plugin_host(self):
        if self._host is None:
            from flamecast.plugins.manager import make_plugin_host

            self._host = make_plugin_host()
            for failure in self._host.failures:
                log.warning("plugin %s failed to load: %s", failure.name, failure.error)
        return self._host

    def _close_all(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for s in sessions:
            _close_quietly(s)
        for gen in self._generators.values():
            try:
                gen.close()
            except Exception:
                log.exception("closing a generator failed")

    def _stats_line(self) -> str:
        snap = self.stats()
        sessions = snap.pop("sessions")
        return f"{len(sessions)} sessions, " + ", ".join(f"{k}={v}" for k, v in snap.items())


class _OpenRefused(Exception):
    """A session.open that cannot be served; the message goes back to the session."""


@dataclass
class _Closed:
    """A generator session that finished opening after its session was closed."""

    gen: GeneratorSession
    state: str = "closed"
    step_lock: threading.Lock = field(default_factory=threading.Lock)
    id: str = ""


def _close_quietly(session) -> None:
    with session.step_lock:
        gen, session.gen = session.gen, None
    if gen is not None:
        try:
            gen.close()
        except Exception:
            log.exception("closing session %s failed", session.id)


def _send(push: zmq.Socket, frames: list[bytes]) -> bool:
    try:
        push.send_multipart(frames, zmq.NOBLOCK, copy=False)
        return True
    except zmq.Again:
        return False


def _write_ready_file(path: Path, info: dict[str, Any]) -> None:
    """Write atomically, so a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)
